"""YOLO decoder (darknet YOLOv3 ``[yolo]`` layer convention): raw head maps -> boxes.

The model is cut before its ``[yolo]`` layers, so each detection head outputs its raw
convolution map of shape (1, A * (5 + C), H, W): for each of its A anchors, channels
(tx, ty, tw, th, to, c_1 .. c_C) per grid cell, all before any sigmoid. This decoder does
what darknet's ``forward_yolo_layer`` + ``get_yolo_detections`` + ``do_nms_sort`` did:

1. objectness ``sigmoid(to)``; a cell-anchor whose objectness is below the threshold can
   not score above it, so only the others are looked at further;
2. class scores ``sigmoid(to) * sigmoid(c_k)``, kept where >= ``score_threshold`` (one
   detection per box and class, as darknet reports every class above the threshold);
3. boxes in model-input pixels: ``cx = (col + s * sigmoid(tx) - (s - 1) / 2) * stride``
   (s = ``scale_x_y``, 1 for YOLOv3), ``w = exp(tw) * anchor_w`` (same for y, h);
4. optional clipping to the input, per-class non-maximum suppression, best first, at most
   ``max_detections``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ivs.decode import DecodeContext, register
from ivs.decode.params import param_float, param_int, sigmoid
from ivs.detections import Detections, batched_nms

# exp() of more than this overflows float32; a quantized model can emit a saturated tw/th,
# and a box 1000x its anchor is of use to no one.
_MAX_LOG_SCALE = float(np.log(1000.0))


def _heads(params: Mapping[str, Any]) -> list[str]:
    value = params.get("heads")
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not value
        or not all(isinstance(h, str) for h in value)
    ):
        raise ValueError(f"yolo: param 'heads' must be a non-empty list of output roles, one per head, got {value!r}")
    return list(value)


def _strides(params: Mapping[str, Any], n_heads: int) -> list[int]:
    value = params.get("strides")
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != n_heads
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in value)
    ):
        raise ValueError(
            f"yolo: param 'strides' must be {n_heads} positive integers (one per head, input "
            f"pixels per grid cell), got {value!r}"
        )
    return list(value)


def _anchors(params: Mapping[str, Any], n_heads: int) -> list[npt.NDArray[np.float32]]:
    value = params.get("anchors")
    err = ValueError(
        f"yolo: param 'anchors' must be {n_heads} lists (one per head) of [width, height] "
        f"pairs in input pixels, all positive, got {value!r}"
    )
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != n_heads:
        raise err
    out: list[npt.NDArray[np.float32]] = []
    for per_head in value:
        try:
            arr = np.asarray(per_head, dtype=np.float32)
        except (TypeError, ValueError):
            raise err from None
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] != 2 or not np.all(arr > 0):
            raise err
        out.append(arr)
    return out


def _decode_head(
    raw: npt.NDArray[np.float32],
    anchors: npt.NDArray[np.float32],
    stride: int,
    scale_x_y: float,
    score_threshold: float,
    num_classes: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """One head's (xyxy, score, class_id) above the threshold; raw is (A, 5 + C, H, W)."""
    obj = sigmoid(np.ascontiguousarray(raw[:, 4]))  # (A, H, W)
    a_idx, gy, gx = np.nonzero(obj >= score_threshold)
    if a_idx.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    cand = raw[a_idx, :, gy, gx]  # (K, 5 + C)
    scores = obj[a_idx, gy, gx][:, None] * sigmoid(np.ascontiguousarray(cand[:, 5 : 5 + num_classes]))
    row, class_id = np.nonzero(scores >= score_threshold)
    if row.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    t = cand[row, :4]
    xy = sigmoid(np.ascontiguousarray(t[:, :2])) * scale_x_y - 0.5 * (scale_x_y - 1.0)
    cx = (gx[row] + xy[:, 0]) * stride
    cy = (gy[row] + xy[:, 1]) * stride
    wh = np.exp(np.minimum(t[:, 2:4], _MAX_LOG_SCALE)) * anchors[a_idx[row]]
    xyxy = np.stack(
        [cx - 0.5 * wh[:, 0], cy - 0.5 * wh[:, 1], cx + 0.5 * wh[:, 0], cy + 0.5 * wh[:, 1]], axis=1
    ).astype(np.float32)
    return xyxy, scores[row, class_id].astype(np.float32), class_id.astype(np.int64)


@register("yolo")
def decode_yolo(
    outputs: Mapping[str, np.ndarray[Any, Any]], params: Mapping[str, Any], ctx: DecodeContext
) -> Detections:
    """Decode raw YOLOv3-style head maps into detections.

    Tensors (batch 1): one per head, named by the roles in ``heads``, each (1, A * (5 + C),
    H, W) float with H = input_height / stride and W = input_width / stride, channels per
    anchor (tx, ty, tw, th, objectness, C class logits), all before sigmoid.

    params:
        heads (list of str, required): the output roles of the heads, in the order of
            ``strides`` and ``anchors``.
        strides (list of int, required): input pixels per grid cell of each head (e.g.
            [32, 16] for YOLOv3-tiny at 416x416: 13x13 and 26x26 grids).
        anchors (list of lists of [w, h], required): each head's anchor sizes in input
            pixels, in the order of the head's channel groups (darknet's ``mask``).
        score_threshold (float in [0, 1], default 0.25): objectness x class probability
            below this drops the (box, class) pair. Darknet's default is 0.25.
        iou_threshold (float in [0, 1], default 0.45): NMS removes a box whose IoU with a
            better box of the same class exceeds this (darknet's default is 0.45).
        max_detections (int >= 0, default 100): keep at most this many, best first.
        num_classes (int >= 1, default: from the channel count): checked against each
            head's A * (5 + C) channels when given.
        scale_x_y (float in [1, 4], default 1.0): YOLOv4's centre scaling; 1 for YOLOv3.
        clip (bool, default True): clip boxes to the model input.

    Returns boxes xyxy in model-input pixels and class_id as an index into the C labels.
    """
    heads = _heads(params)
    strides = _strides(params, len(heads))
    anchors = _anchors(params, len(heads))
    score_threshold = param_float("yolo", params, "score_threshold", 0.25, 0.0, 1.0)
    iou_threshold = param_float("yolo", params, "iou_threshold", 0.45, 0.0, 1.0)
    max_detections = param_int("yolo", params, "max_detections", 100, 0)
    scale_x_y = param_float("yolo", params, "scale_x_y", 1.0, 1.0, 4.0)
    clip = params.get("clip", True)
    if not isinstance(clip, bool):
        raise ValueError(f"yolo: param 'clip' must be true or false, got {clip!r}")
    num_classes: int | None = None
    if "num_classes" in params:
        num_classes = param_int("yolo", params, "num_classes", 1, 1)

    missing = [h for h in heads if h not in outputs]
    if missing:
        raise ValueError(f"yolo: expected outputs with roles {heads}, got {sorted(outputs)}")

    parts: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]] = []
    for role, stride, anc in zip(heads, strides, anchors, strict=True):
        raw = np.asarray(outputs[role], np.float32)
        n_anchors = anc.shape[0]
        gh, gw = ctx.input_height // stride, ctx.input_width // stride
        channels = raw.shape[1] if raw.ndim == 4 else -1
        c = channels // n_anchors - 5 if channels > 0 and channels % n_anchors == 0 else -1
        if num_classes is not None and c != num_classes:
            c = -1
        if raw.ndim != 4 or raw.shape[0] != 1 or c < 1 or raw.shape[2:] != (gh, gw):
            want_c = "5 + classes" if num_classes is None else str(5 + num_classes)
            raise ValueError(
                f"yolo: expected head {role!r} of shape (1, {n_anchors} * ({want_c}), {gh}, {gw}) "
                f"({n_anchors} anchors, stride {stride} on a {ctx.input_width}x{ctx.input_height} "
                f"input), got {raw.shape}"
            )
        if num_classes is None:
            num_classes = c
        parts.append(
            _decode_head(
                raw[0].reshape(n_anchors, 5 + c, gh, gw),
                anc,
                stride,
                scale_x_y,
                score_threshold,
                c,
            )
        )

    xyxy = np.concatenate([p[0] for p in parts])
    conf = np.concatenate([p[1] for p in parts])
    class_id = np.concatenate([p[2] for p in parts])
    if conf.size == 0 or max_detections == 0:
        return Detections.empty()
    if clip:
        limit = np.array([ctx.input_width, ctx.input_height] * 2, np.float32)
        xyxy = np.clip(xyxy, 0.0, limit).astype(np.float32)

    # Per-class NMS (OpenCV takes x, y, w, h), best first, capped.
    keep = batched_nms(xyxy, conf, class_id, iou_threshold, max_detections)
    return Detections(xyxy=xyxy[keep], confidence=conf[keep], class_id=class_id[keep])
