"""Filters before tracking: what the model found that nothing downstream should see.

Per class: a box's area (pixels), its score and its aspect (width / height) must lie within the
class's rule (or the rule for every other class). Exclusion masks: a box whose anchor point
(bottom centre by default: where an object stands) lies inside a mask polygon is dropped, so
nothing is ever detected there (a poster of a person, a mirror, a road beyond the car park).
The sensor applies the filter right after decoding: the tracker, the apps (the safety stop
included) and the frame records see only what passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ivs.detections import Detections
from ivs.geometry import Anchor, anchors, inside_polygon


@dataclass(frozen=True)
class ClassRule:
    """Bounds a detection of one class must meet (None: no bound). Areas in square pixels."""

    min_area: float | None = None
    max_area: float | None = None
    min_score: float | None = None
    min_aspect: float | None = None
    max_aspect: float | None = None

    def keep(self, det: Detections) -> npt.NDArray[np.bool_]:
        w = det.xyxy[:, 2] - det.xyxy[:, 0]
        h = det.xyxy[:, 3] - det.xyxy[:, 1]
        ok = np.ones(len(det), bool)
        if self.min_area is not None:
            ok &= w * h >= self.min_area
        if self.max_area is not None:
            ok &= w * h <= self.max_area
        if self.min_score is not None:
            ok &= det.confidence >= self.min_score
        if self.min_aspect is not None or self.max_aspect is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                aspect = np.where(h > 0, w / np.maximum(h, 1e-9), np.inf)
            if self.min_aspect is not None:
                ok &= aspect >= self.min_aspect
            if self.max_aspect is not None:
                ok &= aspect <= self.max_aspect
        return ok


@dataclass(frozen=True)
class Mask:
    """A polygon (frame pixels) where nothing is detected: a box whose `anchor` is inside is dropped."""

    polygon: npt.NDArray[np.float32]
    anchor: Anchor = "bottom_center"
    name: str = ""


@dataclass
class DetectionFilter:
    """rules: class id -> its rule; `default` for every class without one. `dropped` counts
    what each reason removed ("area", "score", "aspect" share "rule"; "mask")."""

    rules: Mapping[int, ClassRule] = field(default_factory=dict)
    default: ClassRule | None = None
    masks: Sequence[Mask] = ()
    dropped: dict[str, int] = field(default_factory=lambda: {"rule": 0, "mask": 0})

    def __call__(self, det: Detections) -> Detections:
        if not len(det):
            return det
        keep = np.ones(len(det), bool)
        if self.rules or self.default is not None:
            for class_id in np.unique(det.class_id):
                rule = self.rules.get(int(class_id), self.default)
                if rule is not None:
                    rows = det.class_id == class_id
                    keep[rows] &= rule.keep(det[rows])
            self.dropped["rule"] += int((~keep).sum())
        before = int(keep.sum())
        for mask in self.masks:
            keep &= ~inside_polygon(anchors(det.xyxy, mask.anchor), mask.polygon)
        self.dropped["mask"] += before - int(keep.sum())
        return det if keep.all() else det[keep]
