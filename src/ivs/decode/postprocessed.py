"""Decoder for networks that end in their own non-maximum suppression: final boxes in, `Detections` out.

The IMX500 model zoo's post-processed detection networks (the ``_pp`` ones:
``ssd_mobilenetv2_fpnlite_320x320_pp``, ``efficientdet_lite0_pp``, ``yolov8n_pp``, ``yolo11n_pp``)
and YOLO networks exported for the IMX500 by Ultralytics run NMS on the chip. Their outputs, as
picamera2 hands them over (``IMX500.get_outputs(metadata, add_batch=True)``), in this order:

=========  =========  ==========================================================================
role       shape      what
=========  =========  ==========================================================================
boxes      (1, N, 4)  corners, (y0, x0, y1, x1) or (x0, y0, x1, y1); normalized or input pixels
scores     (1, N)     each detection's score in [0, 1]
classes    (1, N)     each detection's class index (a float holding a whole number)
count      (1, 1)     optional: how many of the N rows are detections (the rest is padding)
=========  =========  ==========================================================================

picamera2's demo reads the layout from the network's intrinsics: ``bbox_order: xy`` is
``box_order: xyxy`` here, and ``bbox_normalization: true`` (the boxes are in input pixels and
the demo divides them by the input size) is ``normalized: false``. The defaults, (y0, x0, y1, x1)
normalized, are the SSD and EfficientDet networks'; the YOLO ones want ``box_order: xyxy`` and
``normalized: false``. Nothing is suppressed or re-sorted here: the network's NMS decided which
boxes remain, and in what order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ivs.decode import DecodeContext, register
from ivs.decode.params import param_float
from ivs.detections import Detections

_BOX_ORDERS = ("yxyx", "xyxy")
NAME = "postprocessed"


def _bool(params: Mapping[str, Any], key: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{NAME}: param {key!r} must be true or false, got {value!r}")
    return value


def _class_indices(params: Mapping[str, Any]) -> list[int] | None:
    value = params.get("class_indices")
    if value is None:
        return None
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not value
        or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
        or len(set(value)) != len(value)
    ):
        raise ValueError(
            f"{NAME}: param 'class_indices' must be a non-empty list of distinct class indices >= 0, got {value!r}"
        )
    return list(value)


def _count(outputs: Mapping[str, np.ndarray[Any, Any]], n: int) -> int:
    """How many rows are detections: the `count` output, or all N without one."""
    if "count" not in outputs:
        return n
    raw = np.asarray(outputs["count"], np.float64).reshape(-1)
    if raw.size != 1:
        raise ValueError(f"{NAME}: expected 'count' of one value (shape (1, 1)), got shape {outputs['count'].shape}")
    value = float(raw[0])
    # A count is a whole number; a dequantized one may come a hair off it.
    if not np.isfinite(value) or abs(value - round(value)) > 1e-3 or not 0 <= round(value) <= n:
        raise ValueError(f"{NAME}: 'count' is {value:g}; expected a whole number of detections in 0..{n}")
    return round(value)


@register(NAME)
def decode_postprocessed(
    outputs: Mapping[str, np.ndarray[Any, Any]], params: Mapping[str, Any], ctx: DecodeContext
) -> Detections:
    """Final detections of a network with on-chip NMS (roles ``boxes``, ``scores``, ``classes``,
    optionally ``count``) as `Detections`, in the network's order.

    params:
        score_threshold (float in [0, 1], default 0.5): a detection scoring below this is dropped
            (the network's own threshold may be lower).
        box_order ("yxyx" | "xyxy", default "yxyx"): the corners' order in ``boxes``.
        normalized (bool, default true): ``boxes`` are fractions of the input's width and height;
            false: input pixels.
        class_indices (list of int, default: every class, unchanged): which network classes are
            reported; the i-th listed becomes class_id i (an index into the package labels), the
            others are dropped. E.g. [0] reports only COCO "person" as label 0.
        clip (bool, default true): clip boxes to the input.

    Returns boxes xyxy in model-input pixels (0..input_width, 0..input_height).
    """
    score_threshold = param_float(NAME, params, "score_threshold", 0.5, 0.0, 1.0)
    box_order = params.get("box_order", "yxyx")
    if box_order not in _BOX_ORDERS:
        raise ValueError(f"{NAME}: param 'box_order' must be one of {list(_BOX_ORDERS)}, got {box_order!r}")
    normalized = _bool(params, "normalized", True)
    clip = _bool(params, "clip", True)
    wanted = _class_indices(params)

    missing = [r for r in ("boxes", "scores", "classes") if r not in outputs]
    if missing:
        raise ValueError(
            f"{NAME}: expected outputs with roles 'boxes', 'scores', 'classes' (and optionally 'count'), "
            f"got {sorted(outputs)}"
        )
    boxes = np.asarray(outputs["boxes"], np.float32)
    if boxes.ndim != 3 or boxes.shape[0] != 1 or boxes.shape[2] != 4:
        raise ValueError(f"{NAME}: expected 'boxes' of shape (1, N, 4), got {boxes.shape}")
    n = boxes.shape[1]
    scores = np.asarray(outputs["scores"], np.float32)
    classes = np.asarray(outputs["classes"], np.float32)
    for role, arr in (("scores", scores), ("classes", classes)):
        if arr.shape != (1, n):
            raise ValueError(f"{NAME}: expected {role!r} of shape (1, {n}) (one per box), got {arr.shape}")
    count = _count(outputs, n)

    score = scores[0, :count]
    if not np.isfinite(score).all():
        raise ValueError(f"{NAME}: 'scores' holds NaN or infinity; expected scores in [0, 1]")
    keep = np.nonzero(score >= score_threshold)[0]
    cls = classes[0, keep]
    bad = cls[~(np.isfinite(cls) & (cls >= 0) & (cls == np.round(cls)))]
    if bad.size:
        raise ValueError(f"{NAME}: 'classes' holds {bad[:5].tolist()}; expected whole numbers >= 0 (class indices)")
    class_id = cls.astype(np.int64)
    if wanted is not None:
        position = {c: i for i, c in enumerate(wanted)}
        listed = np.array([c in position for c in class_id.tolist()], bool)
        keep, class_id = keep[listed], np.array([position[c] for c in class_id[listed].tolist()], np.int64)
    if keep.size == 0:
        return Detections.empty()

    b = boxes[0, keep]
    if not np.isfinite(b).all():
        raise ValueError(f"{NAME}: 'boxes' holds NaN or infinity; expected box corners")
    xyxy = b[:, [1, 0, 3, 2]] if box_order == "yxyx" else b
    size = np.array([ctx.input_width, ctx.input_height] * 2, np.float32)
    if normalized:
        xyxy = xyxy * size
    if clip:
        xyxy = np.clip(xyxy, 0.0, size)
    return Detections(xyxy=xyxy.astype(np.float32), confidence=score[keep], class_id=class_id)
