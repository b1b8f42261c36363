"""SSD decoder (TF object detection API convention): box encodings + class logits -> boxes.

The model is cut before its own post-processing, so it outputs, per anchor, the raw box
encoding (ty, tx, th, tw) and one logit per class (index 0 is the background class in TF OD
API graphs). This decoder does what the graph's Postprocessor did:

1. scores: sigmoid (or softmax) of the logits of the classes asked for;
2. threshold the scores, then decode only the surviving anchors with the Faster R-CNN box
   coder: ``yc = ty / sy * ha + yca``, ``h = exp(th / sh) * ha`` (same for x, w);
3. clip to the input, per-class non-maximum suppression, best first, at most
   ``max_detections``.

Anchors come from the package asset (``ctx.assets``), shape (N, 4), normalized to [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ivs.decode import DecodeContext, register
from ivs.decode.params import param_float, param_int, sigmoid
from ivs.detections import Detections, batched_nms

_SCORE_FUNCTIONS = ("sigmoid", "softmax", "identity")
_ANCHOR_FORMATS = ("ycxchw", "yxyx")
# exp() of more than this overflows float32; TF clamps nothing, but a quantized model can
# emit a saturated encoding and a box of 1e38 pixels is of use to no one.
_MAX_LOG_SCALE = float(np.log(1000.0 / 16.0))


def _choice(params: Mapping[str, Any], key: str, default: str, allowed: Sequence[str]) -> str:
    value = params.get(key, default)
    if value not in allowed:
        raise ValueError(f"ssd: param {key!r} must be one of {list(allowed)}, got {value!r}")
    return str(value)


def _scale_factors(params: Mapping[str, Any]) -> npt.NDArray[np.float32]:
    value = params.get("scale_factors", [10.0, 10.0, 5.0, 5.0])
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        arr = np.zeros(0, np.float32)
    if arr.shape != (4,) or not np.all(arr > 0):
        raise ValueError(f"ssd: param 'scale_factors' must be 4 positive numbers (y, x, h, w), got {value!r}")
    return arr


def _class_indices(params: Mapping[str, Any], num_logits: int) -> npt.NDArray[np.int64]:
    value = params.get("class_logit_indices")
    if value is None:
        # Every class but the background one, in order: label i is logit i + 1.
        if num_logits < 2:
            raise ValueError(
                f"ssd: with no 'class_logit_indices', expected scores with a background "
                f"column and at least one class (>= 2 columns), got {num_logits}"
            )
        return np.arange(1, num_logits, dtype=np.int64)
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not value
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in value)
    ):
        raise ValueError(f"ssd: param 'class_logit_indices' must be a non-empty list of integers, got {value!r}")
    idx = np.asarray(value, dtype=np.int64)
    if idx.min() < 0 or idx.max() >= num_logits:
        raise ValueError(
            f"ssd: param 'class_logit_indices' must index the {num_logits} score columns "
            f"(0..{num_logits - 1}), got {list(value)}"
        )
    return idx


@register("ssd")
def decode_ssd(
    outputs: Mapping[str, np.ndarray[Any, Any]], params: Mapping[str, Any], ctx: DecodeContext
) -> Detections:
    """Decode raw SSD outputs (roles ``boxes`` and ``scores``) into detections.

    Tensors (batch 1): ``boxes`` (1, N, 4) encodings (ty, tx, th, tw) — a (1, N, 1, 4)
    tensor is accepted too; ``scores`` (1, N, C) logits. Anchors: ``ctx.assets[anchors]``,
    (N, 4) float, normalized.

    params:
        score_threshold (float in [0, 1], default 0.5): a class score below this drops the
            detection. Lower finds more (and more false) objects.
        iou_threshold (float in [0, 1], default 0.6): NMS removes a box whose IoU with a
            better box of the same class exceeds this. Lower merges more aggressively.
        max_detections (int >= 0, default 100): keep at most this many, best first.
        scale_factors (4 numbers, default [10, 10, 5, 5]): the box coder's (y, x, h, w)
            divisors of the encodings; must match the model's training config.
        score_function ("sigmoid" | "softmax" | "identity", default "sigmoid"): how logits
            become scores. TF OD API SSDLite uses sigmoid; softmax is over all C columns
            (background included), as the TF config's SOFTMAX converter does.
        class_logit_indices (list of int, default: 1..C-1): which score columns are reported;
            the i-th listed column becomes class_id i (an index into the package labels).
            E.g. [1] reports only COCO "person" of a 91-column TF OD API model.
        anchors (str, default "anchors"): name of the asset holding the anchors.
        anchor_format ("ycxchw" | "yxyx", default "ycxchw"): the anchors' layout, both
            normalized to [0, 1]: centre and size, or corners (ymin, xmin, ymax, xmax).
        clip (bool, default True): clip boxes to the model input, as the TF graph does.

    Returns boxes xyxy in model-input pixels (0..input_width, 0..input_height).
    """
    score_threshold = param_float("ssd", params, "score_threshold", 0.5, 0.0, 1.0)
    iou_threshold = param_float("ssd", params, "iou_threshold", 0.6, 0.0, 1.0)
    max_detections = param_int("ssd", params, "max_detections", 100, 0)
    scales = _scale_factors(params)
    score_function = _choice(params, "score_function", "sigmoid", _SCORE_FUNCTIONS)
    anchor_format = _choice(params, "anchor_format", "ycxchw", _ANCHOR_FORMATS)
    clip = params.get("clip", True)
    if not isinstance(clip, bool):
        raise ValueError(f"ssd: param 'clip' must be true or false, got {clip!r}")
    anchors_name = params.get("anchors", "anchors")
    if not isinstance(anchors_name, str):
        raise ValueError(f"ssd: param 'anchors' must be an asset name, got {anchors_name!r}")

    for role in ("boxes", "scores"):
        if role not in outputs:
            raise ValueError(f"ssd: expected outputs with roles 'boxes' and 'scores', got {sorted(outputs)}")
    if anchors_name not in ctx.assets:
        raise ValueError(f"ssd: expected an asset {anchors_name!r} with the anchors, got assets {sorted(ctx.assets)}")
    anchors = np.asarray(ctx.assets[anchors_name], np.float32)
    if anchors.ndim != 2 or anchors.shape[1] != 4:
        raise ValueError(f"ssd: expected anchors of shape (N, 4), got {anchors.shape}")
    n = anchors.shape[0]

    boxes = np.asarray(outputs["boxes"], np.float32)
    if boxes.shape == (1, n, 1, 4):
        boxes = boxes.reshape(1, n, 4)
    if boxes.shape != (1, n, 4):
        raise ValueError(f"ssd: expected 'boxes' of shape (1, {n}, 4) (one encoding per anchor), got {boxes.shape}")
    logits = np.asarray(outputs["scores"], np.float32)
    if logits.ndim != 3 or logits.shape[:2] != (1, n) or logits.shape[2] < 1:
        raise ValueError(f"ssd: expected 'scores' of shape (1, {n}, classes) (one row per anchor), got {logits.shape}")
    classes = _class_indices(params, logits.shape[2])

    # 1. Scores of the requested classes only, (N, K).
    if score_function == "sigmoid":
        scores = sigmoid(np.ascontiguousarray(logits[0][:, classes]))
    elif score_function == "softmax":
        z = logits[0] - logits[0].max(axis=1, keepdims=True)
        e = np.exp(z)
        scores = (e / e.sum(axis=1, keepdims=True))[:, classes]
    else:
        scores = logits[0][:, classes]

    # 2. Threshold before anything else: (anchor, class) pairs that survive.
    anchor_idx, class_id = np.nonzero(scores >= score_threshold)
    if anchor_idx.size == 0 or max_detections == 0:
        return Detections.empty()
    conf = scores[anchor_idx, class_id].astype(np.float32)

    a = anchors[anchor_idx]
    if anchor_format == "yxyx":
        ha, wa = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        yca, xca = a[:, 0] + 0.5 * ha, a[:, 1] + 0.5 * wa
    else:
        yca, xca, ha, wa = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
    t = boxes[0][anchor_idx] / scales
    yc = t[:, 0] * ha + yca
    xc = t[:, 1] * wa + xca
    h = np.exp(np.minimum(t[:, 2], _MAX_LOG_SCALE)) * ha
    w = np.exp(np.minimum(t[:, 3], _MAX_LOG_SCALE)) * wa
    xyxy = np.stack([xc - 0.5 * w, yc - 0.5 * h, xc + 0.5 * w, yc + 0.5 * h], axis=1)
    if clip:
        xyxy = np.clip(xyxy, 0.0, 1.0)
    xyxy = (xyxy * np.array([ctx.input_width, ctx.input_height] * 2, np.float32)).astype(np.float32)

    # 3. Per-class NMS (OpenCV takes x, y, w, h), best first, capped.
    keep = batched_nms(xyxy, conf, class_id, iou_threshold, max_detections)
    return Detections(xyxy=xyxy[keep], confidence=conf[keep], class_id=class_id[keep])
