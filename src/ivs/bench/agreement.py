"""The same answer on every runtime, checked without labels: a grid of counting lines across the
sample video, every one counted on each installed runtime with the shipped person layout, and
the per-line totals compared.

Lines every `step` px: vertical ones (x = step, 2 step, ... across the 768 px width; "in" is
left to right) and horizontal ones (y = step, ... down the 576 px height; "in" is downwards).
The whole clip runs once per runtime, unpaced, through the detector in its shipped layout
(the package's tiles and the whole frame), the tracker and every line at once, as
`ivs run --config` would. A line agrees when its (in, out) totals are equal on every runtime.

    python -m ivs.bench.agreement --step 40         # JSON: each line's totals per runtime
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec

from ivs.apps.line import LineCounter
from ivs.bench.common import git_commit
from ivs.model import load_model
from ivs.runtime import available
from ivs.sensor import Sensor
from ivs.sources import open_source

WIDTH, HEIGHT = 768, 576


class LineTotals(msgspec.Struct, kw_only=True):
    line: str
    """`x=120` (vertical) or `y=200` (horizontal)."""
    totals: dict[str, tuple[int, int]]
    """runtime -> (in, out)."""
    agree: bool


class Agreement(msgspec.Struct, kw_only=True):
    commit: str
    video: str
    step: int
    runtimes: list[str]
    lines: list[LineTotals]
    agreeing: int
    """Lines whose totals are equal on every runtime."""


def grid(step: int) -> list[tuple[str, tuple[float, float], tuple[float, float]]]:
    """(name, p1, p2) of every line; ivs counts "in" to the right of p1 -> p2."""
    vertical = [(f"x={x}", (float(x), float(HEIGHT)), (float(x), 0.0)) for x in range(step, WIDTH, step)]
    horizontal = [(f"y={y}", (float(WIDTH), float(y)), (0.0, float(y))) for y in range(step, HEIGHT, step)]
    return vertical + horizontal


class _Nowhere:
    def write(self, message: Any) -> None:
        pass

    def close(self) -> None:
        pass


def line_totals(video: Path, runtime: str, step: int) -> dict[str, tuple[int, int]]:
    """Each grid line's (in, out) totals over the whole clip on `runtime`."""
    lines = [LineCounter(name, p1, p2, classes={0}) for name, p1, p2 in grid(step)]
    model = load_model("person", runtime=runtime)
    try:
        Sensor(open_source(str(video)), model, [_Nowhere()], fps=0, apps=list(lines), emit_frames=False).run()
    finally:
        model.close()
    return {c.name: (sum(c.state()["in"].values()), sum(c.state()["out"].values())) for c in lines}


def agreement(video: Path, step: int = 40, runtimes: list[str] | None = None) -> Agreement:
    names = runtimes or available("onnx")
    per_runtime = {rt: line_totals(video, rt, step) for rt in names}
    rows = []
    for name, _, _ in grid(step):
        totals = {rt: per_runtime[rt][name] for rt in names}
        rows.append(LineTotals(line=name, totals=totals, agree=len(set(totals.values())) == 1))
    return Agreement(commit=git_commit(), video=video.name, step=step, runtimes=names,
                     lines=rows, agreeing=sum(r.agree for r in rows))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """`python -m ivs.bench.agreement [--step PX]`: each grid line's totals per runtime, as JSON."""
    import argparse

    from ivs.bench.common import media_dir

    parser = argparse.ArgumentParser(prog="python -m ivs.bench.agreement", description=main.__doc__)
    parser.add_argument("--step", type=int, default=40)
    parser.add_argument("--runtime", action="append", help="a runtime to compare (default: every installed one)")
    args = parser.parse_args(argv)
    result = agreement(media_dir() / "vtest.avi", args.step, args.runtime)
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(result), indent=2).decode() + "\n")
    sys.stderr.write(f"{result.agreeing} of {len(result.lines)} lines agree on {', '.join(result.runtimes)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
