"""Part h of `ivs bench`: how well the tracker keeps identities, in the field's metrics.

IDF1, ID precision and recall and ID switches (Ristani et al. 2016; as `motmetrics` computes
them, the py-motmetrics package from PyPI, a dev dependency) against the hand-labelled tracks of
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
from typing import Any

import numpy as np
import numpy.typing as npt

from ivs.bench.results import TrackIdentity
from ivs.detections import box_iou

MATCH_IOU = 0.5
IGNORE_IOU = 0.3

Tracked = Mapping[int, tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]
"""Frame index -> the tracked boxes (xyxy) and their track ids on that frame."""


def track_identity(tracked: Tracked, labels: dict[str, Any], how: str) -> TrackIdentity:
    """IDF1, IDP, IDR and ID switches of `tracked` against hand-labelled tracks."""
    import motmetrics as mm

    by_frame: dict[int, list[tuple[int, list[float]]]] = {}
    for gt_id, track in enumerate(labels["tracks"], start=1):
        for b in track["boxes"]:
            by_frame.setdefault(int(b["frame"]), []).append((gt_id, [float(v) for v in b["box"]]))
    missing = sorted(set(by_frame) - set(tracked))
    if missing:
        raise ValueError(f"no tracked boxes for labelled frames {missing[:5]}: expected every frame of the clip")
    acc = mm.MOTAccumulator(auto_id=False)
    ignored = 0
    for frame in sorted(by_frame):
        gt_ids = [g for g, _ in by_frame[frame]]
        gt = np.array([b for _, b in by_frame[frame]], np.float32)
        xyxy, ids = tracked[frame]
        if len(xyxy):
            iou = box_iou(gt, xyxy)
            keep = iou.max(axis=0) >= IGNORE_IOU
            ignored += int((~keep).sum())
            iou, ids = iou[:, keep], ids[keep]
        else:
            iou = np.zeros((len(gt), 0), np.float32)
        dist = np.where(iou >= MATCH_IOU, 1.0 - iou, np.nan)
        acc.update(gt_ids, [int(i) for i in ids], dist, frameid=frame)
    mh = mm.metrics.create()
    summary = mh.compute(acc, metrics=["idf1", "idp", "idr", "num_switches", "num_matches", "num_objects"], name="ivs")
    row = summary.loc["ivs"]
    return TrackIdentity(
        how=how,
        people=len(labels["tracks"]),
        labelled_boxes=int(row["num_objects"]),
        matched_boxes=int(row["num_matches"]),
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
