"""Sensor config files: bad ones fail `ivs config check` with messages that name the line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
id: test-1
source:
  url: synthetic:640x480@30:10
model:
  name: person
apps:
  - type: line
    name: door
    p1: [320, 470]
    p2: [320, 10]
    classes: [person]
  - type: zone
    name: hall
    polygon: [[10, 10], [300, 10], [300, 300]]
"""


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "sensor.yaml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "ivs", "config", "check", str(path)], capture_output=True, text=True, timeout=120
    )


def test_good_config_passes(tmp_path: Path):
    r = check(tmp_path, GOOD)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout and "line 'door'" in r.stdout


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        # An unknown key, on line 12.
        (("    classes: [person]\n", "    classes: [person]\n    colour: red\n"), 12, "unknown key 'colour'"),
        # A polygon of two points (the zone's polygon is on line 14).
        (
            ("[[10, 10], [300, 10], [300, 300]]", "[[10, 10], [300, 10]]"),
            14,
            "a polygon needs at least 3 points, got 2",
        ),
        # A line outside the 640x480 frame (p2 is on line 10).
        (("p2: [320, 10]", "p2: [320, 900]"), 10, "point (320, 900) is outside the 640x480 frame"),
        # A zone of a class the model does not know (line 11).
        (("classes: [person]", "classes: [forklift]"), 11, "unknown class 'forklift': the model's labels are person"),
        # A type that does not exist (line 7).
        (
            ("  - type: line\n", "  - type: lines\n"),
            7,
            "'lines' found using 'type' does not match any of the expected tags: 'crowding', 'heatmap', 'line'",
        ),
    ],
)
def test_bad_config_names_the_line(tmp_path: Path, change, line, message):
    r = check(tmp_path, GOOD.replace(*change))
    assert r.returncode == 1
    errors = [x for x in r.stderr.splitlines() if x.startswith("ivs: error:")]
    assert errors, r.stderr
    assert any(f"sensor.yaml:{line}:" in x and message in x for x in errors), errors


def test_every_error_is_reported_not_just_the_first(tmp_path: Path):
    bad = GOOD.replace("p2: [320, 10]", "p2: [320, 900]").replace("classes: [person]", "classes: [forklift]")
    r = check(tmp_path, bad)
    errors = [x for x in r.stderr.splitlines() if x.startswith("ivs: error:")]
    assert len(errors) == 2


def test_malformed_yaml(tmp_path: Path):
    r = check(tmp_path, "id: [unclosed\n")
    assert r.returncode == 1 and "not valid YAML" in r.stderr


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(example: Path, media):
    r = subprocess.run(
        [sys.executable, "-m", "ivs", "config", "check", str(example)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    from ivs.config import MAX_NODES, read_yaml
    from ivs.node_config import parse_node

    # ten levels of nine aliases: 9**10 values once expanded, in 341 bytes
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9)
    )
    data, _, problems = read_yaml(bomb)
    assert data is None and len(problems) == 1
    assert f"more than {MAX_NODES} values with its aliases expanded" in problems[0].message
    assert problems[0].line == 6  # where the count passed the bound: 9**6 > 100,000
    _, node_problems, _ = parse_node("sensors:\n  - {id: a}\n" + bomb)
    assert any("aliases expanded" in p.message for p in node_problems)
    # aliases as configs use them (a merge key, a shared list) still read
    ordinary = "base: &base {fps: 10, max_frames: 5}\nsensor:\n  <<: *base\n  fps: 5\nzones: &z [1, 2]\nagain: *z\n"
    data, _, problems = read_yaml(ordinary)
    assert problems == [] and data["sensor"] == {"fps": 5, "max_frames": 5} and data["again"] == [1, 2]
