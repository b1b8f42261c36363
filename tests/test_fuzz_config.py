"""Malformed sensor configs (hypothesis): random mutations of the examples/*.yaml configs and
generated YAML documents go through what `ivs config check` runs (`ivs.config.load`, then
`check_against` with the sample video's frame size and the person model's labels). Each is
either a valid config with no problems, or no config and problems that each carry a line
number and a one-line message; never an exception.

IVS_FUZZ_EXAMPLES raises the example counts for a longer session (docs/testing.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivs.config import MAX_DEPTH, SensorConfig, check_against, load

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
EXAMPLE_TEXT = {p.name: p.read_text() for p in EXAMPLES}
FRAME = (768, 576)  # the sample video's frame size, which the examples' coordinates are for
LABELS = ["person"]
FUZZ = settings(
    max_examples=int(os.environ.get("IVS_FUZZ_EXAMPLES", "150")),
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


def check(tmp_path: Path, data: bytes) -> SensorConfig | None:
    """`ivs config check` on `data` short of opening the source and the model: asserts what
    every outcome must be and returns the config where it is valid."""
    path = tmp_path / "sensor.yaml"
    path.write_bytes(data)
    config, problems, node = load(path)
    if config is not None:
        assert problems == []
        problems = check_against(config, node, FRAME, LABELS)
    else:
        assert problems, "an invalid config without a problem that says why"
    # YAML also breaks lines at \r, U+0085, U+2028 and U+2029: splitlines counts those (and a few more)
    lines = len(data.decode("utf-8", "replace").splitlines()) + 1
    for problem in problems:
        text = problem.format(str(path))
        assert problem.line is not None and 1 <= problem.line <= lines, f"no line, or not in the file: {text}\n{data!r}"
        assert text.startswith(f"{path}:{problem.line}: ") and problem.message.strip(), text
        assert "\n" not in text, f"a problem on more than one line: {text!r}"
    return config if not problems else None


def test_the_examples_are_valid(tmp_path: Path) -> None:
    """The baseline the mutations break: every example checks clean."""
    assert len(EXAMPLES) >= 3
    for name, text in EXAMPLE_TEXT.items():
        assert check(tmp_path, text.encode()) is not None, name


YAML_CHARS = st.sampled_from([*":-[]{},#&*!|>'\"%@`?\n\t ", "  ", "\n  ", "- ", ": ", "~", "null", "1e400"])


def mutated(text: str) -> st.SearchStrategy[str]:
    """A config with one edit: a span deleted, YAML syntax or a random value inserted, a line
    duplicated, dropped or re-indented."""
    lines = text.splitlines(keepends=True)
    at = st.integers(0, len(text))
    row = st.integers(0, len(lines) - 1)
    junk = st.one_of(
        YAML_CHARS, st.text(max_size=12), st.sampled_from(["-1", "0", ".nan", ".inf", "2**64", "[]", "{}"])
    )
    return st.one_of(
        st.builds(lambda i, k: text[:i] + text[i + k :], at, st.integers(1, 40)),
        st.builds(lambda i, s: text[:i] + s + text[i:], at, junk),
        st.builds(lambda r: "".join(lines[: r + 1] + lines[r:]), row),
        st.builds(lambda r: "".join(lines[:r] + lines[r + 1 :]), row),
        st.builds(lambda r, d: "".join([*lines[:r], " " * d + lines[r], *lines[r + 1 :]]), row, st.integers(1, 5)),
        st.builds(lambda r: "".join([*lines[:r], lines[r].lstrip(), *lines[r + 1 :]]), row),
    )


@FUZZ
@given(st.sampled_from(sorted(EXAMPLE_TEXT)).flatmap(lambda name: mutated(EXAMPLE_TEXT[name])))
def test_a_mutated_example_is_valid_or_refused_line_by_line(tmp_path: Path, text: str) -> None:
    check(tmp_path, text.encode())


@FUZZ
@given(st.sampled_from(sorted(EXAMPLE_TEXT)), st.binary(min_size=1, max_size=8), st.data())
def test_a_mutated_example_with_raw_bytes_is_valid_or_refused_line_by_line(
    tmp_path: Path, name: str, junk: bytes, data: st.DataObject
) -> None:
    raw = EXAMPLE_TEXT[name].encode()
    at = data.draw(st.integers(0, len(raw)), label="at")
    check(tmp_path, raw[:at] + junk + raw[at:])


KEYS = st.sampled_from(
    ["id", "source", "model", "apps", "sinks", "tracker", "url", "name", "type", "p1", "p2", "polygon", "classes",
     "coords", "fps", "roi", "tiles", "path", "port", "frames", "line", "zone", "safety", "heatmap", "jsonl", "mqtt"]
)  # fmt: skip
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=10), KEYS)
DOCUMENTS: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=25,
)


@FUZZ
@given(DOCUMENTS)
def test_a_generated_yaml_document_is_valid_or_refused_line_by_line(tmp_path: Path, doc: Any) -> None:
    text = yaml.safe_dump(doc, default_flow_style=bool(isinstance(doc, list)), allow_unicode=True)
    check(tmp_path, text.encode())


@FUZZ
@given(st.lists(YAML_CHARS | st.text(max_size=6), max_size=40).map("".join))
def test_random_yaml_text_is_valid_or_refused_line_by_line(tmp_path: Path, text: str) -> None:
    check(tmp_path, text.encode())


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"id: cam\n" + b"source: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", f"nested more than {MAX_DEPTH} deep"),
        (
            b"id: cam\nsource:\n" + b"".join(b" " * i + b"a:\n" for i in range(1, 2000)),
            f"nested more than {MAX_DEPTH} deep",
        ),
        (b"id: cam\nsource: {url: x}\nmodel: {name: person}\nid: other\n", "key 'id' is set twice (lines 1 and 4)"),
        (b"id: cam\nsource: {url: x, fps: .inf}\nmodel: {name: person}\n", "source.fps: Input should be a finite"),
        (b"id: cam\nsource: {url: x, fps: .nan}\nmodel: {name: person}\n", "source.fps: Input should be a finite"),
        (b"id: cam\nsource:\n  url: \xff\xfe\n", "byte 0xff is not UTF-8"),
        (b"id: cam\nsource:\n  url: a\x00b\n", "not valid YAML: character #x0000"),
    ],
    ids=["deep-flow", "deep-block", "duplicate-key", "infinity", "nan", "not-utf8", "nul"],
)
def test_malformed_configs_are_refused_with_line_and_reason(tmp_path: Path, data: bytes, problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(data)
    config, problems, _ = load(path)
    assert config is None
    assert any(problem in p.message or problem in p.format("") for p in problems), [p.format("") for p in problems]
    check(tmp_path, data)


def test_ivs_config_check_reports_instead_of_a_traceback(tmp_path: Path) -> None:
    """The command itself, on a few of the cases above: exit 1, every problem on a line of its own."""
    cases = {
        "deep.yaml": b"id: cam\nsource: " + b"[" * 5000 + b"]" * 5000 + b"\n",
        "twice.yaml": EXAMPLE_TEXT["retail-counting.yaml"].encode() + b"id: again\n",
        "binary.yaml": b"\x00\xff" * 100,
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        r = subprocess.run(
            [sys.executable, "-m", "ivs", "config", "check", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 1, (name, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.startswith(f"ivs: error: {tmp_path / name}:"), r.stderr
