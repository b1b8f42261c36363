"""Classification decoder: logits or probabilities -> one detection covering the input.

The whole model input is the "box" (mapped back to the frame it becomes the ROI or the
crop the classifier saw), class_id and confidence are the top-1, and `data` carries the
top-k as per-detection arrays: `top_k_class_id` and `top_k_confidence`, shape (1, k).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ivs.decode import DecodeContext, register
from ivs.detections import Detections


@register("classify")
def decode_classify(
    outputs: Mapping[str, np.ndarray[Any, Any]], params: Mapping[str, Any], ctx: DecodeContext
) -> Detections:
    """Decode a classifier's output.

    params:
        softmax (bool, default True): apply softmax (set False when the model outputs probabilities).
        top_k (int, default 5): how many classes to keep in `data`.
        min_confidence (float, default 0): below this top-1 confidence, return no detection.
    """
    if "logits" not in outputs:
        raise ValueError(f"classify: expected an output with role 'logits', got {sorted(outputs)}")
    logits = np.asarray(outputs["logits"], np.float32)
    if logits.ndim != 2 or logits.shape[0] != 1:
        raise ValueError(f"classify: expected logits of shape (1, classes), got {logits.shape}")
    scores = logits[0]
    if params.get("softmax", True):
        e = np.exp(scores - scores.max())
        scores = e / e.sum()
    k = min(int(params.get("top_k", 5)), scores.size)
    top = np.argsort(-scores, kind="stable")[:k]
    if scores[top[0]] < float(params.get("min_confidence", 0.0)):
        return Detections.empty()
    return Detections(
        xyxy=np.array([[0, 0, ctx.input_width, ctx.input_height]], np.float32),
        confidence=scores[top[:1]],
        class_id=top[:1],
        data={
            "top_k_class_id": top[None].astype(np.int64),
            "top_k_confidence": scores[top][None].astype(np.float32),
        },
    )
