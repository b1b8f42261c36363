"""`Detections`: the one record of what a model saw in one frame.

Every decoder returns it, the tracker and the apps take it and return it. Fields are arrays
with one row per detection, so filtering is a boolean mask and nothing is a positional tuple.

>>> import numpy as np
>>> d = Detections(xyxy=np.array([[10, 20, 50, 80]], np.float32),
...                confidence=np.array([0.9], np.float32), class_id=np.array([1]))
>>> len(d), d[d.confidence > 0.5].xyxy.tolist()
(1, [[10.0, 20.0, 50.0, 80.0]])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def _check(name: str, arr: np.ndarray[Any, Any], n: int, tail: tuple[int, ...]) -> None:
    expected = (n, *tail)
    if arr.ndim != len(expected) or arr.shape[0] != n or arr.shape[1:] != tail:
        raise ValueError(f"Detections.{name}: expected shape {expected}, got {arr.shape}")


@dataclass
class Detections:
    """Detections of one frame, one row per object.

    xyxy: (N, 4) float32 corners in pixels. A decoder returns them in the model input's
        pixel space; the sensor maps them to full-frame pixels before anything else sees them.
    confidence: (N,) float32 in [0, 1].
    class_id: (N,) int64 index into the model's labels.
    tracker_id: (N,) int64, -1 where no tracker has assigned an id.
    keypoints: optional (N, K, 3) float32 (x, y, score) in the same space as xyxy.
    data: extra per-detection arrays (each with N rows) or per-frame values, e.g. "top_k".
    """

    xyxy: FloatArray
    confidence: FloatArray
    class_id: IntArray
    tracker_id: IntArray = None  # type: ignore[assignment]  # None given: every row -1 (__post_init__)
    keypoints: FloatArray | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        self.class_id = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        _check("confidence", self.confidence, n, ())
        _check("class_id", self.class_id, n, ())
        if self.tracker_id is None:
            self.tracker_id = np.full(n, -1, dtype=np.int64)
        self.tracker_id = np.asarray(self.tracker_id, dtype=np.int64).reshape(-1)
        _check("tracker_id", self.tracker_id, n, ())
        if self.keypoints is not None:
            self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
            if self.keypoints.ndim != 3 or self.keypoints.shape[0] != n:
                raise ValueError(f"Detections.keypoints: expected shape ({n}, K, 3), got {self.keypoints.shape}")

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros(0, np.float32),
            class_id=np.zeros(0, np.int64),
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self)))

    def __getitem__(self, index: Any) -> Detections:
        """Select rows with a boolean mask, an index array or a slice."""
        if isinstance(index, int | np.integer):
            index = [int(index)]
        n = len(self)
        data = {
            k: v[index] if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == n else v
            for k, v in self.data.items()
        }
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            tracker_id=self.tracker_id[index],
            keypoints=None if self.keypoints is None else self.keypoints[index],
            data=data,
        )

    def tracked(self) -> Detections:
        """The rows a tracker gave an id (those of confirmed tracks), in order."""
        return self[np.flatnonzero(self.tracker_id >= 0)]

    def with_boxes(self, xyxy: FloatArray, keypoints: FloatArray | None = None) -> Detections:
        """The same detections with new coordinates (used when mapping between spaces)."""
        return Detections(
            xyxy=xyxy,
            confidence=self.confidence,
            class_id=self.class_id,
            tracker_id=self.tracker_id,
            keypoints=keypoints if keypoints is not None else self.keypoints,
            data=dict(self.data),
        )

    @classmethod
    def merge(cls, parts: list[Detections]) -> Detections:
        """Concatenate detections (e.g. of several tiles); per-detection `data` arrays are
        concatenated, other `data` values are taken from the first part."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        data: dict[str, Any] = {}
        for key, value in parts[0].data.items():
            if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == len(parts[0]):
                data[key] = np.concatenate([p.data[key] for p in parts])
            else:
                data[key] = value
        kps = [p.keypoints for p in parts]
        return cls(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            confidence=np.concatenate([p.confidence for p in parts]),
            class_id=np.concatenate([p.class_id for p in parts]),
            tracker_id=np.concatenate([p.tracker_id for p in parts]),
            keypoints=None if any(k is None for k in kps) else np.concatenate(kps),  # type: ignore[arg-type]
            data=data,
        )

    @property
    def area(self) -> FloatArray:
        w = np.clip(self.xyxy[:, 2] - self.xyxy[:, 0], 0, None)
        h = np.clip(self.xyxy[:, 3] - self.xyxy[:, 1], 0, None)
        area: FloatArray = (w * h).astype(np.float32)
        return area


def box_iou(a: FloatArray, b: FloatArray) -> FloatArray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes, as an (N, M) array."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    iou: FloatArray = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)
    return iou


def batched_nms(
    xyxy: FloatArray,
    scores: FloatArray,
    class_id: IntArray,
    iou_threshold: float,
    max_detections: int | None = None,
) -> IntArray:
    """Class-wise non-maximum suppression (OpenCV's); kept indices, best first, capped."""
    if len(xyxy) == 0:
        return np.zeros(0, np.int64)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    keep = np.asarray(
        cv2.dnn.NMSBoxesBatched(
            xywh.astype(np.float64).tolist(),
            np.asarray(scores, np.float32).tolist(),
            np.asarray(class_id, np.int32).tolist(),
            0.0,
            float(iou_threshold),
        ),
        dtype=np.int64,
    ).reshape(-1)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    return keep[:max_detections] if max_detections is not None else keep


def nms(xyxy: FloatArray, scores: FloatArray, iou_threshold: float) -> IntArray:
    """Non-maximum suppression over all boxes regardless of class; kept indices, best first."""
    return batched_nms(xyxy, scores, np.zeros(len(xyxy), np.int64), iou_threshold)
