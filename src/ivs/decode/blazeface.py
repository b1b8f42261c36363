"""BlazeFace decoder (MediaPipe face detection): regressors + logits -> faces with keypoints.

MediaPipe's BlazeFace models output, per anchor, 4 + 2K regressors and one logit:

* ``regressors`` (1, N, 4 + 2K): box centre offset and size (dx, dy, w, h), then K keypoints
  (x, y), all in model-input pixels relative to the anchor (``x_scale`` = input width);
* ``scores`` (1, N, 1): the face logit.

This decoder does what MediaPipe's TensorsToDetectionsCalculator and
NonMaxSuppressionCalculator do in the face detection graph:

1. score = sigmoid(clip(logit, -100, 100)); anchors scoring below ``score_threshold`` drop;
2. ``xc = dx / x_scale * wa + xca``, ``w = w / w_scale * wa`` (no exponential), the same for
   y and h, and keypoints ``kx = kx / x_scale * wa + xca``; scaled to model-input pixels;
3. non-maximum suppression: ``weighted`` (MediaPipe's: each kept face is the score-weighted
   mean of itself and every face overlapping it by more than ``iou_threshold``, and keeps the
   best score) or ``plain`` (greedy, `ivs.detections.nms`).

Anchors come from the package asset (``ctx.assets``): (N, 4) float, (x_center, y_center, w, h)
normalized to [0, 1], as MediaPipe's SsdAnchorsCalculator makes them (with
``fixed_anchor_size`` every w and h is 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ivs.decode import DecodeContext, register
from ivs.decode.params import param_float, param_int, sigmoid
from ivs.detections import Detections, box_iou, nms

# MediaPipe's score_clipping_thresh for BlazeFace: logits are clipped before the sigmoid.
_LOGIT_CLIP = 100.0
_NMS_METHODS = ("weighted", "plain")


def _scales(params: Mapping[str, Any], ctx: DecodeContext) -> npt.NDArray[np.float32]:
    default = [
        float(ctx.input_width),
        float(ctx.input_height),
        float(ctx.input_width),
        float(ctx.input_height),
    ]
    value = params.get("scales", default)
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        arr = np.zeros(0, np.float32)
    if arr.shape != (4,) or not np.all(arr > 0):
        raise ValueError(f"blazeface: param 'scales' must be 4 positive numbers (x, y, w, h), got {value!r}")
    return arr


def weighted_nms(
    xyxy: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    keypoints: npt.NDArray[np.float32],
    iou_threshold: float,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """MediaPipe's weighted non-maximum suppression.

    Args:
        xyxy: (N, 4) boxes, corners.
        scores: (N,) scores.
        keypoints: (N, K, 2) keypoint coordinates (x, y).
        iou_threshold: a box overlapping the current best one by more than this IoU is merged
            into it (and removed).

    Returns:
        boxes (M, 4), scores (M,) and keypoints (M, K, 2), best first: each kept box and its
        keypoints are the score-weighted mean over the boxes merged into it (itself
        included); its score is the best one's.
    """
    order = np.argsort(-scores, kind="stable")
    out_boxes: list[npt.NDArray[np.float32]] = []
    out_scores: list[float] = []
    out_kps: list[npt.NDArray[np.float32]] = []
    while order.size:
        best = int(order[0])
        ious = box_iou(xyxy[best : best + 1], xyxy[order])[0]
        merged = ious > iou_threshold
        merged[0] = True  # the best box always merges with itself, even a degenerate one
        members = order[merged]
        w = scores[members].astype(np.float32)
        total = float(w.sum())
        out_boxes.append((w[:, None] * xyxy[members]).sum(axis=0) / total)
        out_kps.append((w[:, None, None] * keypoints[members]).sum(axis=0) / total)
        out_scores.append(float(scores[best]))
        order = order[~merged]
    k = keypoints.shape[1]
    if not out_boxes:
        return (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, k, 2), np.float32))
    return (
        np.stack(out_boxes).astype(np.float32),
        np.asarray(out_scores, np.float32),
        np.stack(out_kps).astype(np.float32),
    )


@register("blazeface")
def decode_blazeface(
    outputs: Mapping[str, np.ndarray[Any, Any]], params: Mapping[str, Any], ctx: DecodeContext
) -> Detections:
    """Decode raw BlazeFace outputs (roles ``regressors`` and ``scores``) into faces.

    Tensors (batch 1): ``regressors`` (1, N, 4 + 2K) float, ``scores`` (1, N, 1) (or (1, N))
    logits. Anchors: ``ctx.assets[anchors]``, (N, 4) float (x_center, y_center, w, h),
    normalized.

    params:
        score_threshold (float in [0, 1], default 0.5): a face scoring below this is dropped
            (MediaPipe's min_score_thresh; 0.5 for both short- and full-range models).
        iou_threshold (float in [0, 1], default 0.3): NMS merges or removes a box whose IoU
            with a better one exceeds this (MediaPipe's min_suppression_threshold).
        nms ("weighted" | "plain", default "weighted"): weighted averages the overlapping boxes
            and keypoints by score, as MediaPipe does; plain keeps the best box only.
        max_detections (int >= 0, default 100): keep at most this many, best first.
        anchors (str, default "anchors"): name of the asset holding the anchors.
        num_keypoints (int >= 0, default 6): keypoints per face, K; the regressors must have
            4 + 2K columns.
        keypoint_names (list of K str, optional): the keypoints' names, reported in
            ``data["keypoint_names"]``.
        scales (4 positive numbers, default [input_width, input_height] * 2): MediaPipe's
            x_scale, y_scale, w_scale, h_scale: the regressors are divided by these.
        clip (bool, default False): clip boxes to the model input (MediaPipe does not).

    Returns boxes xyxy and keypoints (N, K, 3) = (x, y, score) in model-input pixels; a
    keypoint's score is its face's score. class_id is 0 (the package's only label).
    """
    p = _params(params, ctx)
    anchors, reg, logits = _tensors(outputs, ctx, p)
    n, num_keypoints = anchors.shape[0], p.num_keypoints

    # 1. Scores, thresholded before anything is decoded.
    scores = sigmoid(np.clip(logits.reshape(n), -_LOGIT_CLIP, _LOGIT_CLIP))
    idx = np.flatnonzero(scores >= p.score_threshold)
    data: dict[str, Any] = {} if p.names is None else {"keypoint_names": list(p.names)}
    if idx.size == 0 or p.max_detections == 0:
        # Empty, but with the keypoints column, so that every frame has the same fields.
        return Detections(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros(0, np.float32),
            class_id=np.zeros(0, np.int64),
            keypoints=np.zeros((0, num_keypoints, 3), np.float32),
            data=data,
        )
    conf = scores[idx]
    # 2. Boxes and keypoints, normalized, then in model-input pixels.
    xyxy, kxy = _boxes_and_keypoints(reg[0, idx, : 4 + 2 * num_keypoints], anchors[idx], p, ctx)
    size = np.array([ctx.input_width, ctx.input_height], np.float32)
    iou_threshold, max_detections, clip, method = p.iou_threshold, p.max_detections, p.clip, p.method

    # 3. NMS, best first, capped.
    if method == "weighted":
        xyxy, conf, kxy = weighted_nms(xyxy, conf, kxy, iou_threshold)
    else:
        keep = nms(xyxy, conf, iou_threshold)
        xyxy, conf, kxy = xyxy[keep], conf[keep], kxy[keep]
    xyxy, conf, kxy = xyxy[:max_detections], conf[:max_detections], kxy[:max_detections]
    if clip:
        xyxy = np.clip(xyxy, 0.0, np.tile(size, 2)).astype(np.float32)
    keypoints = np.concatenate([kxy, np.broadcast_to(conf[:, None, None], (len(conf), num_keypoints, 1))], axis=2)
    return Detections(
        xyxy=xyxy,
        confidence=conf,
        class_id=np.zeros(len(conf), np.int64),
        keypoints=keypoints.astype(np.float32),
        data=data,
    )


@dataclass(frozen=True)
class _Params:
    score_threshold: float
    iou_threshold: float
    max_detections: int
    num_keypoints: int
    scales: Any
    method: str
    clip: bool
    names: Sequence[str] | None
    anchors: str


def _params(params: Mapping[str, Any], ctx: DecodeContext) -> _Params:
    """The decoder's parameters, checked (ValueError saying which one and what it must be)."""
    num_keypoints = param_int("blazeface", params, "num_keypoints", 6, 0)
    method = params.get("nms", "weighted")
    if method not in _NMS_METHODS:
        raise ValueError(f"blazeface: param 'nms' must be one of {list(_NMS_METHODS)}, got {method!r}")
    clip = params.get("clip", False)
    if not isinstance(clip, bool):
        raise ValueError(f"blazeface: param 'clip' must be true or false, got {clip!r}")
    names = params.get("keypoint_names")
    if names is not None and (
        not isinstance(names, Sequence)
        or isinstance(names, str)
        or len(names) != num_keypoints
        or not all(isinstance(n, str) for n in names)
    ):
        raise ValueError(
            f"blazeface: param 'keypoint_names' must be a list of {num_keypoints} strings "
            f"(one per keypoint), got {names!r}"
        )
    anchors_name = params.get("anchors", "anchors")
    if not isinstance(anchors_name, str):
        raise ValueError(f"blazeface: param 'anchors' must be an asset name, got {anchors_name!r}")
    return _Params(
        score_threshold=param_float("blazeface", params, "score_threshold", 0.5, 0.0, 1.0),
        iou_threshold=param_float("blazeface", params, "iou_threshold", 0.3, 0.0, 1.0),
        max_detections=param_int("blazeface", params, "max_detections", 100, 0),
        num_keypoints=num_keypoints,
        scales=_scales(params, ctx),
        method=method,
        clip=clip,
        names=names,
        anchors=anchors_name,
    )


def _tensors(
    outputs: Mapping[str, np.ndarray[Any, Any]], ctx: DecodeContext, p: _Params
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(anchors, regressors, score logits), their shapes checked against each other."""
    for role in ("regressors", "scores"):
        if role not in outputs:
            raise ValueError(f"blazeface: expected outputs with roles 'regressors' and 'scores', got {sorted(outputs)}")
    if p.anchors not in ctx.assets:
        raise ValueError(
            f"blazeface: expected an asset {p.anchors!r} with the anchors, got assets {sorted(ctx.assets)}"
        )
    anchors = np.asarray(ctx.assets[p.anchors], np.float32)
    if anchors.ndim != 2 or anchors.shape[1] != 4:
        raise ValueError(f"blazeface: expected anchors of shape (N, 4) (x_center, y_center, w, h), got {anchors.shape}")
    n = anchors.shape[0]
    cols = 4 + 2 * p.num_keypoints
    reg = np.asarray(outputs["regressors"], np.float32)
    if reg.ndim != 3 or reg.shape[:2] != (1, n) or reg.shape[2] < cols:
        raise ValueError(
            f"blazeface: expected 'regressors' of shape (1, {n}, {cols}) (box + {p.num_keypoints} "
            f"keypoints per anchor), got {reg.shape}"
        )
    logits = np.asarray(outputs["scores"], np.float32)
    if logits.shape not in ((1, n, 1), (1, n)):
        raise ValueError(
            f"blazeface: expected 'scores' of shape (1, {n}, 1) (one logit per anchor), got {logits.shape}"
        )
    return anchors, reg, logits


def _boxes_and_keypoints(
    r: npt.NDArray[np.float32], a: npt.NDArray[np.float32], p: _Params, ctx: DecodeContext
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The kept rows' boxes (xyxy) and keypoints (x, y), in model-input pixels."""
    scales, num_keypoints = p.scales, p.num_keypoints
    xca, yca, wa, ha = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
    xc = r[:, 0] / scales[0] * wa + xca
    yc = r[:, 1] / scales[1] * ha + yca
    w = r[:, 2] / scales[2] * wa
    h = r[:, 3] / scales[3] * ha
    size = np.array([ctx.input_width, ctx.input_height], np.float32)
    xyxy = (np.stack([xc - 0.5 * w, yc - 0.5 * h, xc + 0.5 * w, yc + 0.5 * h], axis=1) * np.tile(size, 2)).astype(
        np.float32
    )
    kp = r[:, 4:].reshape(-1, num_keypoints, 2)
    kxy = np.empty_like(kp)
    kxy[..., 0] = kp[..., 0] / scales[0] * wa[:, None] + xca[:, None]
    kxy[..., 1] = kp[..., 1] / scales[1] * ha[:, None] + yca[:, None]
    kxy = (kxy * size).astype(np.float32)
    return xyxy, kxy
