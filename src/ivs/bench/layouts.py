"""The person detector's tile layouts on the tuning and the test labels, side by side.

`python -m ivs.bench.layouts [--markdown]`: for each layout (tiles, with or without the
whole-frame pass) and runtime, recall and the worst false positives per frame on the hand-
labelled vtest frames that chose the shipped layout (tuning) and on those held out (test), and
on the three stills labelled after it was chosen (test). Labels: tests/data/README.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ivs.detections import box_iou

HELD_OUT = frozenset({125, 385, 645})
"""vtest_people.json frames labelled after the layout and threshold were chosen on the others."""

LAYOUTS: tuple[tuple[tuple[int, int], bool], ...] = (
    ((1, 1), False),
    ((2, 1), False),
    ((2, 1), True),
    ((3, 2), False),
    ((3, 2), True),
)
"""(tiles, whole-frame pass) measured; (2, 1) + whole frame is the package's shipped layout."""

Boxes = npt.NDArray[np.float32]


def match(gt: Boxes, det: Boxes, iou_min: float = 0.5) -> list[tuple[int, int]]:
    """Greedy one-to-one matching, highest IoU first (the usual detection-metric rule)."""
    if len(gt) == 0 or len(det) == 0:
        return []
    iou = box_iou(gt, det)
    pairs: list[tuple[int, int]] = []
    used_g: set[int] = set()
    used_d: set[int] = set()
    for flat in np.argsort(-iou, axis=None):
        g, d = divmod(int(flat), iou.shape[1])
        if iou[g, d] < iou_min:
            break
        if g not in used_g and d not in used_d:
            pairs.append((g, d))
            used_g.add(g)
            used_d.add(d)
    return pairs


def evaluate(
    frames: list[dict[str, Any]], detections: dict[int, Boxes], iou_min: float = 0.5
) -> tuple[float, dict[int, int]]:
    """Recall over non-difficult people, and false positives per frame. A detection matched to
    a person marked difficult is neither a hit nor a false positive."""
    hits = total = 0
    fps: dict[int, int] = {}
    for frame in frames:
        people = frame["people"]
        gt = np.array([p["box"] for p in people], np.float32).reshape(-1, 4)
        difficult = np.array([p["difficult"] for p in people], bool)
        det = detections[frame["index"]]
        pairs = match(gt, det, iou_min)
        hits += sum(1 for g, _ in pairs if not difficult[g])
        total += int((~difficult).sum())
        fps[frame["index"]] = len(det) - len(pairs)
    return (hits / total if total else 1.0), fps


@dataclass(frozen=True)
class LayoutRow:
    """One layout on one runtime: recall and worst false positives per frame on each label set."""

    runtime: str
    tiles: tuple[int, int]
    full_frame: bool
    tuning_recall: float
    tuning_worst_fp: int
    held_out_recall: float
    held_out_worst_fp: int
    stills_recall: float
    stills_fp: int
    messi_boxes: int


def _frames(video: Path, indices: set[int]) -> dict[int, npt.NDArray[np.uint8]]:
    import av

    out: dict[int, npt.NDArray[np.uint8]] = {}
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in indices:
                out[i] = np.asarray(frame.to_ndarray(format="rgb24"), np.uint8)
            if len(out) == len(indices):
                break
    return out


def _image(path: Path) -> npt.NDArray[np.uint8]:
    import cv2

    bgr = cv2.imread(str(path))
    if bgr is None:
        raise FileNotFoundError(f"{path}: not an image OpenCV can read (scripts/fetch-media.sh fetches the samples)")
    return np.ascontiguousarray(bgr[:, :, ::-1], np.uint8)


def bench_layouts(media: Path, data: Path, runtimes: tuple[str, ...]) -> list[LayoutRow]:
    """Every layout of `LAYOUTS` on every runtime, on the vtest frames and the stills."""
    from ivs.model import load_model

    people = json.loads((data / "vtest_people.json").read_text())["frames"]
    stills = json.loads((data / "still_people.json").read_text())["images"]
    frames = _frames(media / "vtest.avi", {f["index"] for f in people})
    images = [_image(media / s["file"]) for s in stills]
    tuning = [f for f in people if f["index"] not in HELD_OUT]
    held = [f for f in people if f["index"] in HELD_OUT]
    rows = []
    for runtime in runtimes:
        for tiles, full in LAYOUTS:
            model = load_model("person", runtime=runtime, tiles=tiles, full_frame=full)
            try:
                det = {i: model(px).xyxy for i, px in frames.items()}
                still_det = {k: model(px).xyxy for k, px in enumerate(images)}
            finally:
                model.close()
            t_rec, t_fp = evaluate(tuning, det)
            h_rec, h_fp = evaluate(held, det)
            s_rec, s_fp = evaluate([{"index": k, "people": s["people"]} for k, s in enumerate(stills)], still_det)
            messi = next(k for k, s in enumerate(stills) if s["file"] == "messi5.jpg")
            tuning_row = (round(t_rec, 3), max(t_fp.values()), round(h_rec, 3), max(h_fp.values()))
            rows.append(
                LayoutRow(runtime, tiles, full, *tuning_row, round(s_rec, 3), sum(s_fp.values()), len(still_det[messi]))
            )
    return rows


def markdown(rows: list[LayoutRow]) -> str:
    """The rows as one markdown table."""
    head = (
        "| runtime | layout | tuning recall (6 frames) | worst FP/frame | held-out recall (3 frames) | worst FP/frame "
        "| stills recall (test) | stills FP | messi5 boxes |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    body = "".join(
        f"| {r.runtime} | {r.tiles[0]}x{r.tiles[1]}{' + whole frame' if r.full_frame else ''} | {r.tuning_recall:.3f} "
        f"| {r.tuning_worst_fp} | {r.held_out_recall:.3f} | {r.held_out_worst_fp} | {r.stills_recall:.3f} "
        f"| {r.stills_fp} | {r.messi_boxes} |\n"
        for r in rows
    )
    return head + body


def main(argv: list[str] | None = None) -> int:
    """`python -m ivs.bench.layouts [--runtime R ...]`: the table on stdout, as markdown."""
    import argparse
    import sys

    from ivs.bench.common import ROOT, media_dir

    parser = argparse.ArgumentParser(prog="python -m ivs.bench.layouts", description=main.__doc__)
    parser.add_argument("--runtime", action="append", help="onnxruntime | openvino (default: both)")
    args = parser.parse_args(argv)
    runtimes = tuple(args.runtime or ("onnxruntime", "openvino"))
    rows = bench_layouts(media_dir(), ROOT / "tests" / "data", runtimes)
    sys.stdout.write(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
