"""Mask check: one yes/no ping per tracked face, decided over several frames.

Needs a face detector as the model and the `mask` classifier as the second stage
(`classify_with: mask`), which puts `mask.class_id` / `mask.confidence` on every face. Each
track collects one vote per frame; once it has `min_frames` votes and one answer has at
least `min_share` of them, the ping is sent, once per track.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ivs.apps import FrameContext
from ivs.events import Event, MaskPing


@dataclass
class MaskCheck:
    name: str
    classifier: str = "mask"
    mask_class: int = 0
    """The classifier's class id that means "wearing a mask"."""
    min_frames: int = 3
    min_share: float = 0.7
    totals: dict[str, int] = field(default_factory=lambda: {"mask": 0, "no_mask": 0})
    _votes: dict[int, list[bool]] = field(default_factory=dict)
    _done: set[int] = field(default_factory=set)

    def update(self, ctx: FrameContext) -> list[Event]:
        det = ctx.tracked
        key = f"{self.classifier}.class_id"
        if key not in det.data:
            raise ValueError(
                f"mask app {self.name!r}: detections carry no {key!r}: expected the "
                f"{self.classifier!r} classifier as the second stage (classify_with: {self.classifier})"
            )
        events: list[Event] = []
        for i in range(len(det)):
            tid, answer = int(det.tracker_id[i]), int(det.data[key][i])
            if tid in self._done or answer < 0:
                continue
            votes = self._votes.setdefault(tid, [])
            votes.append(answer == self.mask_class)
            if len(votes) < self.min_frames:
                continue
            share_mask = sum(votes) / len(votes)
            for verdict, share in ((True, share_mask), (False, 1 - share_mask)):
                if share >= self.min_share:
                    self._done.add(tid)
                    del self._votes[tid]
                    self.totals["mask" if verdict else "no_mask"] += 1
                    events.append(
                        MaskPing(
                            **ctx.event_fields(self.name),
                            track_id=tid,
                            mask=verdict,
                            score=round(share, 3),
                            frames=len(votes),
                            totals=dict(self.totals),
                        )
                    )
                    break
        return events

    def state(self) -> dict[str, Any]:
        return dict(self.totals)

    def finish(self, ctx: FrameContext | None) -> list[Event]:
        return []
