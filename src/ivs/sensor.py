"""The Sensor: wires source -> ISP -> runner -> decoder -> sinks and paces the frames.

Two threads, like a camera and its processor. The capture thread reads frames at the source
rate into a one-frame slot; the processing loop takes the newest frame. When the model is
slower than the source, the frame waiting in the slot is replaced and counted as dropped,
so memory holds at most one waiting frame and latency never grows. With `fps=0` (offline
analysis), or a source without a clock (an image folder), the capture thread waits instead,
and every frame is processed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from ivs.apps import App, FrameContext, uses_tracks
from ivs.artifacts import ArtifactWriter, Mode
from ivs.cascade import classify_detections
from ivs.detections import Detections
from ivs.errors import IvsError, SourceError
from ivs.events import Event, Heartbeat, Ledger, SourceGap
from ivs.evidence.recorder import Recorder
from ivs.frame import Frame
from ivs.model import Model
from ivs.outbox import OutboxWriteError
from ivs.records import FrameRecord, ModelRef, Timings, encode
from ivs.sensor_record import detection_rows
from ivs.sensor_slot import FrameSlot, _Captured
from ivs.sensor_stats import SENSOR_STAGES, STAGES, Samples, SensorStats, summarize
from ivs.sinks import Sink
from ivs.sources.base import Source
from ivs.track import ByteTracker
from ivs.track.stationary import Stationary

__all__ = ["STAGES", "FrameSlot", "Samples", "Sensor", "SensorStats", "summarize"]

log = logging.getLogger(__name__)


class Tracker(Protocol):
    """Gives detections stable ids across frames (`ivs.track.ByteTracker`)."""

    def update(self, det: Detections, pixels: npt.NDArray[np.uint8] | None = None) -> Detections: ...

    def hidden(self) -> dict[int, int]:
        """Ids of lost tracks hidden in a tracked one's box -> that track's id."""
        ...


class Sensor:
    """Runs a model on every frame of a source and sends one metadata record per frame.

    fps: None paces at the source's own rate; a number paces at that rate; 0 processes
        every frame as fast as possible without dropping (offline analysis, tests).
    max_frames: stop after this many frames from the source (processed + dropped).
    mode: "metadata" (default; no pixels leave), or "image"/"roi"/"tensor" with `artifacts`.
    on_record: called after every record reached the sinks (live display, apps).
    ledger_period_s: send a `ledger` event this often (source seconds) and at the end; None: never
        (the counters `raw_bytes` and `metadata_bytes` are kept anyway).
    heartbeat_s: send a `heartbeat` with the first frame and then this often (wall-clock seconds):
        the model running, fps, frames and drops, so a hub knows the sensor is alive on any
        transport; None: never.
    """

    def __init__(
        self,
        source: Source,
        model: Model,
        sinks: Sequence[Sink],
        *,
        sensor_id: str = "ivs",
        fps: float | None = None,
        max_frames: int | None = None,
        mode: Mode = "metadata",
        artifacts: ArtifactWriter | None = None,
        on_record: Callable[[FrameRecord, Detections], None] | None = None,
        second_stage: Sequence[Model] = (),
        detection_filter: Callable[[Detections], Detections] | None = None,
        tracker: Tracker | None = None,
        stationary: Stationary | None = None,
        evidence: Recorder | None = None,
        apps: Sequence[App] = (),
        emit_frames: bool = True,
        seq_start: int = 0,
        ledger_period_s: float | None = None,
        heartbeat_s: float | None = None,
    ) -> None:
        if mode != "metadata" and artifacts is None:
            raise ValueError(f"mode {mode!r} needs an ArtifactWriter")
        if mode == "metadata" and artifacts is not None:
            raise ValueError("metadata mode must not have an ArtifactWriter: no pixels leave")
        if fps is not None and fps < 0:
            raise ValueError(f"fps must be >= 0 (0 = unpaced), got {fps}")
        self.source, self.model, self.sinks = source, model, list(sinks)
        self.sensor_id, self.mode, self.artifacts = sensor_id, mode, artifacts
        self.max_frames, self.on_record = max_frames, on_record
        self.second_stage = list(second_stage)
        self.detection_filter = detection_filter
        self.apps = list(apps)
        self.disabled_apps: set[str] = set()
        """Apps turned off by a command: they see no frames and send nothing until turned on."""
        # Apps reason about objects over time: they need track ids (all but the safety stop).
        self.tracker = tracker if tracker is not None or not uses_tracks(self.apps) else ByteTracker()
        self.stationary = stationary if self.tracker is not None else None
        self.evidence = evidence
        """Keeps frames for evidence (only with an evidence policy that lets pixels out); also a sink."""
        if evidence is not None and evidence not in self.sinks:
            self.sinks.append(evidence)
        self.emit_frames = emit_frames
        self.events = 0
        self.messages_lost: dict[int, int] = {}
        """Messages a sink (by index) could not commit to its outbox (a full disk)."""
        self._failing: dict[int, int] = {}  # sinks failing now -> their lost count when it began
        self._last_ctx: FrameContext | None = None
        # The bandwidth ledger: what was sent against the video it replaced.
        self.ledger_period_s = ledger_period_s
        self.heartbeat_s = heartbeat_s
        self._heartbeat_at: float | None = None
        self.raw_bytes = 0
        self.metadata_bytes = 0
        self._ledger_at: float | None = None
        self.rate = source.fps if fps is None else (fps or None)
        # A live source paces itself; a file is paced to behave like a camera unless fps=0.
        self._paced = fps != 0 and not source.live and self.rate is not None
        # Only a source with a clock (live, or paced at a rate) has frames that go stale: a folder
        # of images has no rate, so its items wait for the model and none is dropped.
        self._slot = FrameSlot(replace=fps != 0 and (source.live or self.rate is not None))
        self._stop = threading.Event()
        self._error: IvsError | None = None
        self.stats = SensorStats()
        # Continue the sequence of an earlier run (from the outbox): (sensor_id, seq) stays unique.
        self._seq = seq_start
        self._last_dropped = 0
        self._next_model: Model | None = None
        self._swap_lock = threading.Lock()
        self.swaps = 0
        self._runtime = model.runner.name

    def state(self) -> dict[str, Any]:
        """What this sensor says about itself on the retained MQTT `state` topic: the model it
        runs, what it has processed and sent, how fast (docs/transport.md)."""
        m = self.model.manifest
        st = self.stats
        return {
            "model": {"name": m.name, "version": m.version, "runtime": self._runtime},
            "source": self.source.id,
            "frames": st.frames_processed,
            "dropped": self._slot.dropped,
            "events": self.events,
            "fps": round(st.recent_fps(), 2),
        }

    def swap_model(self, model: Model) -> None:
        """Run `model` from the next frame on (thread-safe); the source never stops.

        The frame in hand finishes on the old model, so every record names the model that
        really produced it. The old model is closed after the swap.
        """
        with self._swap_lock:
            pending, self._next_model = self._next_model, model
        if pending is not None:  # two swaps before one frame: the first never ran
            pending.close()

    def stop(self) -> None:
        """Ask the sensor to finish after the frame in hand (thread-safe)."""
        self._stop.set()
        self.source.interrupt()  # a source waiting to reconnect stops waiting

    def run(self) -> SensorStats:
        """Run until the source ends, `max_frames`, or `stop()`. Raises the source's error
        after every processed frame's record has been written."""
        capture = threading.Thread(target=self._capture, name="ivs-capture", daemon=True)
        self.stats = SensorStats()
        capture.start()
        try:
            while (item := self._slot.get()) is not None:
                self._process(item)
        finally:
            self._stop.set()
            capture.join(timeout=5)
            self._finish_apps()
            if self.ledger_period_s is not None and self.stats.frames_processed:
                self._emit(self.ledger(None))
            self.stats.ended = time.monotonic()
            self.stats.dropped = self._slot.dropped
            self.stats.skipped = self.source.frames_skipped
            for sink in self.sinks:
                sink.close()
        if self._error is not None:
            raise self._error
        return self.stats

    def _capture(self) -> None:
        frames = self.source.frames()
        period = 1.0 / self.rate if self._paced and self.rate else 0.0
        t0 = time.monotonic()
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and self.stats.frames_read >= self.max_frames:
                    break
                if period:
                    # The i-th frame of a file is "captured" at t0 + i/fps, like a camera's.
                    delay = t0 + self.stats.frames_read * period - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    if delay <= -period:  # behind the clock: not keeping the rate, dropped or not
                        self.stats.late += 1
                t = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    break
                read_ms = (time.perf_counter() - t) * 1e3
                if not self._slot.put(_Captured(frame, read_ms), self._stop):
                    break  # stopped: the frame waiting in the slot is the last one
                self.stats.frames_read += 1
                self.raw_bytes += frame.pixels.nbytes
        except IvsError as err:
            self._error = err
        except Exception as err:  # a source bug must end the run with a reason, not hang it
            log.exception("capture failed")
            self._error = SourceError(f"{self.source.id}: capture failed: {err!r}")
        finally:
            self._slot.close()
            try:
                self.source.close()
            except Exception:
                log.debug("source close failed", exc_info=True)

    def _take_swap(self) -> None:
        with self._swap_lock:
            new, self._next_model = self._next_model, None
        if new is None:
            return
        old, self.model = self.model, new
        self._runtime = new.runner.name
        self.swaps += 1
        m = new.manifest
        log.warning("model swapped: now %s %s (%s)", m.name, m.version, self._runtime)
        old.close()

    def _process(self, item: _Captured) -> None:
        self._take_swap()
        frame = item.frame
        t_start = time.monotonic_ns()
        inputs = self.model.prepare_frame(frame)  # the IMX500's model reads the frame's metadata
        t_isp = time.monotonic_ns()
        outputs = self.model.infer(inputs)
        t_infer = time.monotonic_ns()
        det = self.model.decode(outputs, inputs)
        if self.detection_filter is not None:  # before anything sees them: tracker, apps, records
            det = self.detection_filter(det)
        t_decode = time.monotonic_ns()
        for classifier in self.second_stage:
            det = classify_detections(classifier, frame.pixels, det)
        t_classify = time.monotonic_ns()
        pixels = frame.pixels if frame.pixels.size else None  # none from a metadata-only sensor
        if self.tracker is not None:
            det = self.tracker.update(det, pixels)
            if self.stationary is not None:
                det = self.stationary.update(det, self._t_source(frame))
        tracked = det.tracked() if self.tracker is not None else det
        # Asked once a frame: the apps and the record must say the same.
        hidden = self.tracker.hidden() if self.tracker is not None else {}
        events = self._run_apps(frame, det, tracked, hidden)
        if self.evidence is not None:  # this frame is buffered before its events are sent
            self.evidence.take_frame(frame.index, self._t_source(frame), frame.wall_time, frame.pixels, det)
        t_apps = time.monotonic_ns()

        timings = Timings(
            read=round(item.read_ms, 3),
            queue=round((t_start - frame.t_capture_ns) / 1e6, 3),
            isp=round((t_isp - t_start) / 1e6, 3),
            infer=round((t_infer - t_isp) / 1e6, 3),
            decode=round((t_decode - t_infer) / 1e6, 3),
            classify=round((t_classify - t_decode) / 1e6, 3),
            apps=round((t_apps - t_classify) / 1e6, 3),
            total=round(item.read_ms + (t_apps - frame.t_capture_ns) / 1e6, 3),
            **self._sensor_timings(inputs),
        )
        artifact = self.artifacts.write(frame, inputs, det) if self.artifacts is not None else None
        dropped_total = self._slot.dropped
        self._report_gaps(frame)
        record = self._record(frame, det, timings, dropped_total, artifact, hidden)
        if self.emit_frames:
            self._emit(record)
        for event in events:
            self._emit(msgspec.structs.replace(event, sensor_id=self.sensor_id, seq=self._next_seq()))
        self.events += len(events)
        self._maybe_ledger(frame)
        self._maybe_heartbeat(frame)

        st = self.stats
        st.frames_processed += 1
        st.detections += len(det)
        st.dropped = dropped_total
        st.rate_meter.tick()
        for name in STAGES:
            st.timings[name].append(getattr(timings, name))
        for name in SENSOR_STAGES:
            if (value := getattr(timings, name)) is not None:
                st.timings.setdefault(name, Samples()).append(value)
        if self.on_record is not None:
            self.on_record(record, det)

    def _sensor_timings(self, inputs: Any) -> dict[str, float]:
        """The DNN and DSP runtimes an IMX500 reported for this frame (none on the CPU path)."""
        kpi = self.model.kpi(inputs)
        return {} if kpi is None else {"sensor_dnn": round(kpi.dnn_ms, 3), "sensor_dsp": round(kpi.dsp_ms, 3)}

    def _report_gaps(self, frame: Frame) -> None:
        """A `gap` event for each outage the source came back from since the last frame."""
        outages = self.source.outages
        self.stats.skipped = self.source.frames_skipped
        if outages is None:
            return
        for gap in outages.take():
            self.stats.gaps += 1
            self.stats.frames_lost += gap.frames_lost
            log.warning("source %s: back after %.1f s (%s)", self.source.id, gap.end - gap.start, gap.reason)
            self._emit(
                SourceGap(
                    frame=frame.index, time=round(frame.wall_time, 6), t_capture_ns=frame.t_capture_ns,
                    t_source=round(self._t_source(frame), 4), app="source", sensor_id=self.sensor_id,
                    seq=self._next_seq(), start=round(gap.start, 6), end=round(gap.end, 6),
                    duration_s=round(gap.end - gap.start, 3), frames_lost=gap.frames_lost,
                    attempts=gap.attempts, reason=gap.reason,
                )
            )  # fmt: skip
            self.events += 1

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _emit(self, message: msgspec.Struct) -> None:
        self.metadata_bytes += len(encode(message))
        for i, sink in enumerate(self.sinks):
            try:
                sink.write(message)
            except OutboxWriteError as err:
                # A full disk must not stop the sensor: the message is lost, counted, and said
                # once per outage; what was committed before stays and is still delivered.
                self.messages_lost[i] = self.messages_lost.get(i, 0) + 1
                if i not in self._failing:
                    self._failing[i] = self.messages_lost[i] - 1
                    log.error("%s; messages are lost (and counted) until it can be written again", err)
                continue
            if i in self._failing:
                lost = self.messages_lost[i] - self._failing.pop(i)
                log.warning("%s: writable again after %d messages were lost", type(sink).__name__, lost)

    def ledger(self, frame: Frame | None) -> Ledger:
        """The ledger as an event (for `frame`, or the last one processed)."""
        compressed = self.source.compressed_bytes
        ctx = self._last_ctx
        index = frame.index if frame is not None else (ctx.index if ctx else 0)
        t_ns = frame.t_capture_ns if frame is not None else (ctx.t_capture_ns if ctx else 0)
        return Ledger(
            frame=index,
            time=round(time.time(), 6),
            t_capture_ns=t_ns,
            t_source=round(self._t_source(frame) if frame is not None else (ctx.t_source if ctx else 0.0), 4),
            app="ledger",
            sensor_id=self.sensor_id,
            seq=self._next_seq(),
            frames=self.stats.frames_read,
            raw_bytes=self.raw_bytes,
            compressed_bytes=int(compressed) if compressed is not None else None,
            metadata_bytes=self.metadata_bytes,
            frames_skipped=self.source.frames_skipped,
            evidence_bytes=self.evidence.evidence_bytes if self.evidence is not None else 0,
        )

    @staticmethod
    def _t_source(frame: Frame) -> float:
        return frame.pts if frame.pts is not None else frame.t_capture_ns / 1e9

    def _maybe_ledger(self, frame: Frame) -> None:
        if self.ledger_period_s is None:
            return
        t = self._t_source(frame)
        if self._ledger_at is None:
            self._ledger_at = t
        elif t - self._ledger_at >= self.ledger_period_s:
            self._ledger_at = t
            self._emit(self.ledger(frame))

    def _maybe_heartbeat(self, frame: Frame) -> None:
        if self.heartbeat_s is None:
            return
        now = time.monotonic()
        if self._heartbeat_at is not None and now - self._heartbeat_at < self.heartbeat_s:
            return
        self._heartbeat_at = now
        m, st = self.model.manifest, self.stats
        self._emit(
            Heartbeat(
                frame=frame.index, time=round(frame.wall_time, 6), t_capture_ns=frame.t_capture_ns,
                t_source=round(self._t_source(frame), 4), app="sensor", sensor_id=self.sensor_id,
                seq=self._next_seq(), model=m.name, version=m.version, runtime=self._runtime,
                fps=round(st.recent_fps(), 2), frames=st.frames_processed, dropped=self._slot.dropped,
                period_s=self.heartbeat_s,
            )
        )  # fmt: skip
        self.events += 1

    def _context(self, frame: Frame, det: Detections, tracked: Detections, hidden: dict[int, int]) -> FrameContext:
        t_source = self._t_source(frame)
        return FrameContext(
            index=frame.index,
            time=frame.wall_time,
            t_capture_ns=frame.t_capture_ns,
            t_source=t_source,
            width=frame.width,
            height=frame.height,
            labels=self.model.labels,
            detections=det,
            tracked=tracked,
            hidden=hidden,
        )

    def _run_apps(self, frame: Frame, det: Detections, tracked: Detections, hidden: dict[int, int]) -> list[Event]:
        if not self.apps:
            return []
        ctx = self._context(frame, det, tracked, hidden)
        self._last_ctx = ctx
        off = self.disabled_apps
        return [event for app in self.apps if app.name not in off for event in app.update(ctx)]

    def _finish_apps(self) -> None:
        """Events the apps owe at the end of a run (e.g. the last heatmap)."""
        for app in self.apps:
            for event in app.finish(self._last_ctx):
                self._emit(msgspec.structs.replace(event, sensor_id=self.sensor_id, seq=self._next_seq()))
                self.events += 1

    def _record(
        self,
        frame: Frame,
        det: Detections,
        timings: Timings,
        dropped_total: int,
        artifact: str | None,
        hidden: dict[int, int],
    ) -> FrameRecord:
        m = self.model.manifest
        rows = detection_rows(det, m.labels, self.second_stage, hidden)
        roi = self.model.isp.roi
        previous = self._last_dropped
        self._last_dropped = dropped_total
        return FrameRecord(
            sensor_id=self.sensor_id,
            seq=self._next_seq(),
            frame=frame.index,
            time=round(frame.wall_time, 6),
            t_capture_ns=frame.t_capture_ns,
            pts=frame.pts,
            source=frame.source_id,
            width=frame.width,
            height=frame.height,
            roi=(roi.x, roi.y, roi.w, roi.h) if roi is not None else None,
            model=ModelRef(m.name, m.version, m.task, self._runtime, m.notice),
            detections=rows,
            timings_ms=timings,
            dropped=dropped_total - previous,
            dropped_total=dropped_total,
            mode=self.mode,
            artifact=artifact,
        )
