"""A frame's detections as the rows of its record (`ivs.records.DetectionRecord`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ivs.detections import Detections
from ivs.model import Model
from ivs.records import ClassScore, DetectionRecord


def detection_rows(
    det: Detections, labels: list[str], second_stage: Sequence[Model], hidden: Mapping[int, int]
) -> list[DetectionRecord]:
    """One row per detection: box, score, label, track id, top-k, the second stages' answers,
    the tracks hidden in its box, and whether it is stationary (set by `ivs.track.stationary`)."""
    top_ids = det.data.get("top_k_class_id")
    top_scores = det.data.get("top_k_confidence")
    still = det.data.get("stationary")
    rows = []
    carried: dict[int, list[int]] = {}
    for hid, carrier in sorted(hidden.items()):
        carried.setdefault(carrier, []).append(hid)
    for i in range(len(det)):
        cid = int(det.class_id[i])
        top_k = None
        if top_ids is not None and top_scores is not None:
            top_k = [
                ClassScore(int(c), label_of(labels, int(c)), round(float(s), 4))
                for c, s in zip(top_ids[i], top_scores[i], strict=True)
            ]
        attributes = {
            m.manifest.name: ClassScore(
                int(det.data[f"{m.manifest.name}.class_id"][i]),
                label_of(m.labels, int(det.data[f"{m.manifest.name}.class_id"][i])),
                round(float(det.data[f"{m.manifest.name}.confidence"][i]), 4),
            )
            for m in second_stage
            if int(det.data[f"{m.manifest.name}.class_id"][i]) >= 0
        }
        tid = int(det.tracker_id[i])
        x1, y1, x2, y2 = (round(float(v), 1) for v in det.xyxy[i])
        rows.append(
            DetectionRecord(
                box=(x1, y1, x2, y2),
                score=round(float(det.confidence[i]), 4),
                class_id=cid,
                label=label_of(labels, cid),
                track_id=tid if tid >= 0 else None,
                top_k=top_k,
                attributes=attributes or None,
                hides=carried.get(tid) if tid >= 0 else None,
                stationary=True if still is not None and still[i] else None,
            )
        )
    return rows


def label_of(labels: list[str], cid: int) -> str:
    return labels[cid] if 0 <= cid < len(labels) else str(cid)
