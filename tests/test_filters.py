"""Filters before tracking: per-class area, score and aspect, and exclusion masks; on synthetic
boxes, and on vtest.avi through a configured sensor, its frame records checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ivs.build import RunOptions, build_sensor
from ivs.config import parse
from ivs.detections import Detections
from ivs.filters import ClassRule, DetectionFilter, Mask
from ivs.geometry import anchors, inside_polygon
from tests.test_config import GOOD, check

WALKWAY = [[600, 150], [768, 150], [768, 576], [600, 576]]
"""The right-hand walkway of vtest.avi (768x576), where about a quarter of the walkers are."""
MIN_AREA = 2000
"""Square pixels: the walkers far up the scene (feet above y = 250) are 500-2,500."""


def dets(boxes, scores=None, classes=None) -> Detections:
    n = len(boxes)
    return Detections(
        xyxy=np.asarray(boxes, np.float32).reshape(n, 4),
        confidence=np.asarray(scores if scores is not None else [0.9] * n, np.float32),
        class_id=np.asarray(classes if classes is not None else [0] * n, np.int64),
    )


def test_each_class_rule_and_the_default_for_the_others() -> None:
    f = DetectionFilter(
        rules={0: ClassRule(min_area=100, max_area=10_000, min_score=0.5, min_aspect=0.2, max_aspect=1.0)},
        default=ClassRule(min_score=0.8),
    )
    d = dets(
        [
            [0, 0, 20, 40],  # person, 800 px, aspect 0.5, 0.9: kept
            [0, 0, 5, 10],  # person, 50 px: too small
            [0, 0, 200, 200],  # person, 40,000 px: too large
            [0, 0, 20, 40],  # person, score 0.4: too low
            [0, 0, 40, 20],  # person, aspect 2: lying down, outside [0.2, 1]
            [0, 0, 5, 10],  # class 1 (the default rule): score 0.9 >= 0.8, any size: kept
            [0, 0, 5, 10],  # class 1, 0.7: too low for the default
        ],
        scores=[0.9, 0.9, 0.9, 0.4, 0.9, 0.9, 0.7],
        classes=[0, 0, 0, 0, 0, 1, 1],
    )
    out = f(d)
    assert out.class_id.tolist() == [0, 1] and out.xyxy.tolist() == [[0, 0, 20, 40], [0, 0, 5, 10]]
    assert f.dropped == {"rule": 5, "mask": 0}


def test_a_mask_drops_what_stands_in_it_by_the_chosen_point() -> None:
    square = np.asarray([[100, 100], [200, 100], [200, 200], [100, 200]], np.float32)
    d = dets([[120, 50, 160, 150], [120, 150, 160, 250], [300, 300, 340, 380]])
    # bottom centre: the first box stands in the square (y 150), the second's feet are below it
    assert f_mask(square, "bottom_center")(d).xyxy[:, 0].tolist() == [120, 300]
    # centre: the second box's centre (140, 200) is on the square's edge: inside
    assert f_mask(square, "center")(d).xyxy[:, 0].tolist() == [120, 300]
    assert f_mask(square, "top_center")(d).xyxy[:, 1].tolist() == [50, 300]


def f_mask(polygon, anchor) -> DetectionFilter:
    return DetectionFilter(masks=[Mask(polygon, anchor)])


FILTERS = """\
filters:
  objects:
    person: {min_area: 50, aspect: [0.2, 3]}
    "*": {min_score: 0.5}
  exclude:
    - name: poster
      polygon: [[10, 10], [100, 10], [100, 100]]
"""


def test_config_errors_in_filters_name_their_line(tmp_path: Path) -> None:
    assert check(tmp_path, GOOD + FILTERS).returncode == 0
    cases = [
        (("person: {min_area", "forklift: {min_area"), 17, "unknown class 'forklift'"),
        (("[[10, 10], [100, 10], [100, 100]]", "[[10, 10], [100, 10], [100, 900]]"), 21,
         "point (100, 900) is outside the 640x480 frame"),
        (("aspect: [0.2, 3]", "aspect: [3, 0.2]"), 17, "aspect [3, 0.2]: expected 0 < min <= max"),
        (("min_area: 50", "min_area: 50, max_area: 10"), 17, "min_area 50 > max_area 10"),
        (("min_score: 0.5", "min_score: 5"), 18, "less than or equal to 1"),
        (("[[10, 10], [100, 10], [100, 100]]", "[[10, 10], [100, 10]]"), 21, "at least 3 points, got 2"),
        (("    - name: poster\n", "    - name: poster\n      colour: red\n"), 21, "unknown key 'colour'"),
    ]  # fmt: skip
    for change, line, message in cases:
        r = check(tmp_path, (GOOD + FILTERS).replace(*change))
        errors = [x for x in r.stderr.splitlines() if x.startswith("ivs: error:")]
        assert r.returncode == 1 and any(f"sensor.yaml:{line}:" in x and message in x for x in errors), (change, errors)


def run_vtest(vtest: Path, out: Path, filters: str) -> list[dict]:
    cfg, problems, _ = parse(
        f"id: plaza\nsource: {{url: '{vtest}', fps: 0, max_frames: 120}}\n"
        "model: {name: person, runtime: onnxruntime}\nframes: true\n"
        f"sinks:\n  - {{type: jsonl, path: '{out}'}}\n{filters}"
    )
    assert cfg is not None, problems
    built = build_sensor(cfg, RunOptions(watch=False, ledger_period_s=None))
    try:
        built.sensor.run()
    finally:
        built.close()
    return [r for r in map(json.loads, out.read_text().splitlines()) if r["schema"] == "ivs.frame/1"]


def boxes(record: dict) -> np.ndarray:
    return np.asarray([d["box"] for d in record["detections"]], np.float32).reshape(-1, 4)


def test_on_vtest_a_mask_empties_its_walkway_and_min_area_drops_the_far_walkers(vtest: Path, tmp_path: Path) -> None:
    plain = run_vtest(vtest, tmp_path / "plain.jsonl", "")
    filtered = run_vtest(
        vtest,
        tmp_path / "filtered.jsonl",
        f"filters:\n  objects:\n    person: {{min_area: {MIN_AREA}}}\n  exclude:\n    - polygon: {WALKWAY}\n",
    )
    walkway = np.asarray(WALKWAY, np.float32)
    assert len(plain) == len(filtered) == 120

    def in_walkway(b: np.ndarray) -> np.ndarray:
        return inside_polygon(anchors(b, "bottom_center"), walkway)

    def area(b: np.ndarray) -> np.ndarray:
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    # unfiltered, the walkway has people and the far walkers are small: the test can fail
    assert sum(int(in_walkway(boxes(r)).sum()) for r in plain) > 50
    assert sum(int((area(boxes(r)) < MIN_AREA).sum()) for r in plain) > 50
    for before, after in zip(plain, filtered, strict=True):
        b, a = boxes(before), boxes(after)
        assert not in_walkway(a).any(), after["frame"]  # nothing inside the mask, in any record
        assert (area(a) >= MIN_AREA).all(), after["frame"]
        # and nothing else went: each frame keeps exactly the unfiltered boxes that pass
        expected = b[~in_walkway(b) & (area(b) >= MIN_AREA)]
        assert sorted(map(tuple, a.round(1).tolist())) == sorted(map(tuple, expected.round(1).tolist()))


@pytest.mark.parametrize("bad", ["min_area: 0", "aspect: [0, 1]"])
def test_filter_values_must_make_sense(bad: str) -> None:
    cfg, problems, _ = parse(
        "id: x\nsource: {url: 'synthetic:64x48@5:1'}\nmodel: {name: person}\n"
        f"filters:\n  objects:\n    person: {{{bad}}}\n"
    )
    assert cfg is None and problems and problems[0].line == 6
