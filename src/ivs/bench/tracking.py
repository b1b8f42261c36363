"""Part h of `ivs bench`: how well the tracker keeps identities, in the field's metrics.

HOTA with its detection and association parts (Luiten et al. 2020; TrackEval's code, the
`trackeval` package from PyPI, a dev dependency), and IDF1, ID precision and recall and ID
switches (Ristani et al. 2016; as `motmetrics` computes them, the py-motmetrics package from
PyPI, a dev dependency) against the hand-labelled tracks of
`tests/data/vtest_tracks.json`: 10 people, 5 boxes each over 40-160 frames (tests/data/README.md).

Those labels are complete for the 10 people, not for each frame: other people walk by
unlabelled. A tracked box that overlaps no labelled box of its frame (IoU < `IGNORE_IOU`) is
someone nobody labelled and is left out, as MOTChallenge leaves out boxes in its ignore
regions; a tracked box on a labelled person counts in full, matched at IoU >= `MATCH_IOU`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ivs.bench.results import TrackIdentity
from ivs.detections import box_iou

MATCH_IOU = 0.5
IGNORE_IOU = 0.3

Tracked = Mapping[int, tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]
"""Frame index -> the tracked boxes (xyxy) and their track ids on that frame."""


class _Frame(NamedTuple):
    """One labelled frame: the labelled people and the tracked boxes kept for scoring."""

    gt_ids: list[int]
    track_ids: list[int]
    iou: npt.NDArray[np.float32]
    """labelled x kept tracked boxes."""


def _frames(tracked: Tracked, labels: dict[str, Any]) -> tuple[dict[int, _Frame], int]:
    """The labelled frames with the tracked boxes on labelled people, and how many were left out."""
    by_frame: dict[int, list[tuple[int, list[float]]]] = {}
    for gt_id, track in enumerate(labels["tracks"], start=1):
        for b in track["boxes"]:
            by_frame.setdefault(int(b["frame"]), []).append((gt_id, [float(v) for v in b["box"]]))
    missing = sorted(set(by_frame) - set(tracked))
    if missing:
        raise ValueError(f"no tracked boxes for labelled frames {missing[:5]}: expected every frame of the clip")
    frames: dict[int, _Frame] = {}
    ignored = 0
    for frame in sorted(by_frame):
        gt = np.array([b for _, b in by_frame[frame]], np.float32)
        xyxy, ids = tracked[frame]
        if len(xyxy):
            iou = box_iou(gt, xyxy)
            keep = iou.max(axis=0) >= IGNORE_IOU
            ignored += int((~keep).sum())
            iou, ids = iou[:, keep], ids[keep]
        else:
            iou = np.zeros((len(gt), 0), np.float32)
        frames[frame] = _Frame([g for g, _ in by_frame[frame]], [int(i) for i in ids], iou)
    return frames, ignored


def _hota(frames: dict[int, _Frame]) -> tuple[float, float, float]:
    """HOTA, DetA and AssA (Luiten et al. 2020), each averaged over TrackEval's 19 IoU
    thresholds 0.05..0.95, as TrackEval's own `HOTA` metric computes them."""
    from trackeval.metrics import HOTA

    def dense(ids: list[list[int]]) -> list[npt.NDArray[np.int64]]:
        # TrackEval wants ids 0..n-1 within the sequence.
        index = {i: k for k, i in enumerate(sorted({i for f in ids for i in f}))}
        return [np.array([index[i] for i in f], np.int64) for f in ids]

    ordered = [frames[f] for f in sorted(frames)]
    gt_ids = dense([f.gt_ids for f in ordered])
    track_ids = dense([f.track_ids for f in ordered])
    data = {
        "num_gt_ids": len({i for f in ordered for i in f.gt_ids}),
        "num_tracker_ids": len({i for f in ordered for i in f.track_ids}),
        "num_gt_dets": sum(len(f.gt_ids) for f in ordered),
        "num_tracker_dets": sum(len(f.track_ids) for f in ordered),
        "gt_ids": gt_ids,
        "tracker_ids": track_ids,
        "similarity_scores": [f.iou.astype(np.float64) for f in ordered],
    }
    res = HOTA().eval_sequence(data)
    return tuple(round(float(np.mean(res[k])), 4) for k in ("HOTA", "DetA", "AssA"))  # type: ignore[return-value]


def track_identity(tracked: Tracked, labels: dict[str, Any], how: str) -> TrackIdentity:
    """HOTA (DetA, AssA), IDF1, IDP, IDR and ID switches of `tracked` against hand-labelled tracks."""
    import motmetrics as mm

    frames, ignored = _frames(tracked, labels)
    acc = mm.MOTAccumulator(auto_id=False)
    for index, f in frames.items():
        dist = np.where(f.iou >= MATCH_IOU, 1.0 - f.iou, np.nan)
        acc.update(f.gt_ids, f.track_ids, dist, frameid=index)
    mh = mm.metrics.create()
    summary = mh.compute(acc, metrics=["idf1", "idp", "idr", "num_switches", "num_matches", "num_objects"], name="ivs")
    row = summary.loc["ivs"]
    hota, deta, assa = _hota(frames)
    return TrackIdentity(
        how=how,
        people=len(labels["tracks"]),
        labelled_boxes=int(row["num_objects"]),
        matched_boxes=int(row["num_matches"]),
        hota=hota,
        deta=deta,
        assa=assa,
        idf1=round(float(row["idf1"]), 4),
        idp=round(float(row["idp"]), 4),
        idr=round(float(row["idr"]), 4),
        id_switches=int(row["num_switches"]),
        unlabelled_boxes_left_out=ignored,
    )


def bench_tracking(video: Path, labels_path: Path, runtime: str, threads: int) -> TrackIdentity:
    """The whole clip through the shipped person detector and the tracker, unpaced; identity
    metrics on the labelled tracks."""
    from ivs.apps import FrameContext
    from ivs.model import load_model
    from ivs.sensor import Sensor
    from ivs.sources.video import VideoSource

    labels = json.loads(labels_path.read_text())
    tracked: dict[int, tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]] = {}

    class Probe:
        """An app that keeps the tracked boxes of every frame."""

        name = "probe"
        uses_tracks = True

        def update(self, ctx: FrameContext) -> list[Any]:
            tracked[ctx.index] = (ctx.tracked.xyxy.copy(), ctx.tracked.tracker_id.copy())
            return []

        def state(self) -> dict[str, Any]:
            return {}

        def finish(self, ctx: FrameContext) -> list[Any]:
            return []

    model = load_model("person", runtime=runtime, threads=threads)
    try:
        Sensor(VideoSource(str(video)), model, [], fps=0, apps=[Probe()], emit_frames=False).run()  # type: ignore[list-item]
        how = f"person ({model.runner.name}, shipped layout {model.isp.tiles[0]}x{model.isp.tiles[1]}"
        how += " + whole frame)" if model.isp.full_frame else ")"
    finally:
        model.close()
    return track_identity(tracked, labels, how + f", ByteTracker, {video.name}")


def main(argv: list[str] | None = None) -> int:
    """`python -m ivs.bench.tracking [--runtime R]`: part h alone, as JSON on stdout."""
    import argparse
    import sys

    import msgspec

    from ivs.bench.common import ROOT, media_dir

    parser = argparse.ArgumentParser(prog="python -m ivs.bench.tracking", description=main.__doc__)
    parser.add_argument("--runtime", default="onnxruntime", help="onnxruntime | openvino | auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    result = bench_tracking(media_dir() / "vtest.avi", ROOT / "tests" / "data" / "vtest_tracks.json", args.runtime,
                            args.threads)  # fmt: skip
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(result), indent=2).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
