"""The recorder: which events get evidence, and making it.

The sensor hands it every processed frame (`take_frame`, before that frame's events) and, as
a sink, every message (`write`). A chosen event (by kind, and app where given) becomes a job
due `post_s` after it on the source clock; when a later frame reaches that time (or the run
ends), the job takes the buffered frames from `pre_s` before the event to `post_s` after it,
redacts them and encodes the snapshot (the event's own frame) and the clip on a worker thread,
and commits both to the spool. `request(since, until)` does the same for a wall-clock range the
hub asks for. The encoding never runs on the frame loop; buffering (one JPEG a frame) does.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from ivs.detections import Detections
from ivs.events import Event, kind_of
from ivs.evidence.buffer import Buffered, FrameBuffer
from ivs.evidence.encode import jpeg, mp4
from ivs.evidence.redact import Redaction
from ivs.evidence.spool import EvidenceSpool
from ivs.evidence.upload import Uploader

log = logging.getLogger(__name__)

EPS = 1e-6
"""Seconds of slack on the source clock (frame times are sums of floats)."""

FaceFinder = Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]]
"""Face boxes (N, 4) in an RGB image: for `Redaction.target == "faces"`."""


@dataclass
class _Job:
    due: float
    """Source-clock time after which every frame it needs is buffered."""
    meta: dict[str, Any]
    start: float
    end: float
    clock: str = "source"
    snapshot_frame: int | None = None
    frames: list[Buffered] = field(default_factory=list)


class Recorder:
    def __init__(
        self,
        sensor_id: str,
        spool: EvidenceSpool,
        redaction: Redaction,
        *,
        kinds: Collection[str] = ("stop", "count", "zone_enter", "loiter", "mask"),
        apps: Collection[str] | None = None,
        pre_s: float = 5.0,
        post_s: float = 5.0,
        memory_mib: float = 64.0,
        snapshot: bool = True,
        clip: bool = True,
        faces: FaceFinder | None = None,
        max_clip_s: float = 60.0,
    ) -> None:
        if pre_s < 0 or post_s < 0:
            raise ValueError(f"pre_s {pre_s}, post_s {post_s}: expected >= 0")
        self.sensor_id, self.spool, self.redaction = sensor_id, spool, redaction
        self.kinds, self.apps = frozenset(kinds), frozenset(apps) if apps is not None else None
        self.pre_s, self.post_s = pre_s, post_s
        self.snapshot, self.clip, self.faces = snapshot, clip, faces
        self.buffer = FrameBuffer(max(pre_s + post_s, max_clip_s) + 1.0, memory_mib)
        self.evidence_bytes = 0
        """Bytes of evidence committed to the spool (the bandwidth ledger counts them apart)."""
        self.made = 0
        self.uploader: Uploader | None = None
        """Empties the spool into the hub (`build` sets it); closed after the last evidence is made."""
        self._jobs: list[_Job] = []
        self._t_source = 0.0
        self._lock = threading.Lock()
        self._work: queue.Queue[_Job | threading.Event | None] = queue.Queue()
        """Jobs to make; an Event is set once everything before it is made; None ends the worker."""
        self._worker = threading.Thread(target=self._run, name=f"ivs-evidence-{sensor_id}", daemon=True)
        self._worker.start()

    # from the sensor's frame loop
    def take_frame(self, index: int, t_source: float, wall_time: float, pixels: npt.NDArray[np.uint8],
                   det: Detections) -> None:  # fmt: skip
        if not pixels.size:
            return
        self.buffer.add(index, t_source, wall_time, pixels, det.xyxy, det.class_id)
        with self._lock:
            self._t_source = t_source
            due = [j for j in self._jobs if j.clock == "source" and t_source >= j.due]
            self._jobs = [j for j in self._jobs if j not in due]
        for job in due:
            self._dispatch(job)

    def write(self, message: msgspec.Struct) -> None:
        """A message the sensor sends: a chosen event becomes a job."""
        if not isinstance(message, Event) or kind_of(message) not in self.kinds:
            return
        if self.apps is not None and message.app not in self.apps:
            return
        meta = {
            "sensor_id": self.sensor_id, "event_seq": message.seq, "event_kind": kind_of(message),
            "app": message.app, "frame": message.frame, "time": message.time,
        }  # fmt: skip
        # EPS: a frame exactly pre_s before or post_s after is in (1.6 - 1.5 is not 0.1 in floats)
        job = _Job(message.t_source + self.post_s - EPS, meta, message.t_source - self.pre_s - EPS,
                   message.t_source + self.post_s + EPS, snapshot_frame=message.frame)  # fmt: skip
        with self._lock:
            self._jobs.append(job)

    def request(self, since: float, until: float, reason: str = "hub request") -> None:
        """Evidence of a wall-clock range (the hub's request): from the frames buffered now."""
        meta = {"sensor_id": self.sensor_id, "event_seq": None, "event_kind": None, "app": None,
                "frame": None, "time": since, "reason": reason}  # fmt: skip
        self._dispatch(_Job(0.0, meta, since, until, clock="wall"))

    def flush(self, timeout: float = 30.0) -> bool:
        """Make every pending job now, from what is buffered, and wait for the worker."""
        with self._lock:
            jobs, self._jobs = self._jobs, []
        for job in jobs:
            self._dispatch(job)
        done = threading.Event()
        self._work.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Make what is pending, give the uploader `timeout` to deliver it (the rest stays in the
        spool for the next run), stop."""
        self.flush()
        self._work.put(None)
        self._worker.join(30)
        if self.uploader is not None:
            self.uploader.flush(timeout)
            self.uploader.close()
        self.spool.close()

    # the worker
    def _dispatch(self, job: _Job) -> None:
        job.frames = self.buffer.between(job.start, job.end, clock=job.clock)
        self._work.put(job)

    def _run(self) -> None:
        while True:
            job = self._work.get()
            if job is None:
                return
            if isinstance(job, threading.Event):  # a flush: everything before it is made
                job.set()
                continue
            try:
                self._make(job)
            except Exception:  # one bad clip must not end evidence for the run
                log.exception("evidence for %s failed", job.meta)

    def _redacted(self, frame: Buffered) -> npt.NDArray[np.uint8]:
        image = frame.image()
        faces = self.faces(image) if self.faces is not None and self.redaction.target == "faces" else None
        return self.redaction.apply(image, frame.boxes, frame.classes, faces)

    def _make(self, job: _Job) -> None:
        if not job.frames:
            log.warning("no buffered frames for evidence of %s", job.meta)
            return
        common = {**job.meta, "policy": self.redaction.policy, "redaction": self.redaction.target,
                  "start": job.frames[0].wall_time, "end": job.frames[-1].wall_time,
                  "first_frame": job.frames[0].index, "last_frame": job.frames[-1].index}  # fmt: skip
        images = [self._redacted(f) for f in job.frames]
        if self.snapshot:
            k = next((i for i, f in enumerate(job.frames) if f.index == job.snapshot_frame), len(job.frames) - 1)
            data = jpeg(images[k])
            if self.spool.put({**common, "kind": "snapshot", "snapshot_frame": job.frames[k].index},
                              "image/jpeg", data) is not None:  # fmt: skip
                self.evidence_bytes += len(data)
        if self.clip and len(images) > 1:
            data = mp4(images, [f.t_source if job.clock == "source" else f.wall_time for f in job.frames])
            if self.spool.put({**common, "kind": "clip", "frames": len(images)}, "video/mp4", data) is not None:
                self.evidence_bytes += len(data)
        self.made += 1
