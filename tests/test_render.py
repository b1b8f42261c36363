"""`ivs heatmap`'s reading of heatmap events: sums grids, refuses malformed lines with their line number."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from ivs.errors import ConfigError
from ivs.events import Heatmap
from ivs.render import sum_heatmaps


def heatmap(counts: list[int], rows: int = 2, cols: int = 2, frame: int = 1) -> Heatmap:
    return Heatmap(frame=frame, time=1.0, t_capture_ns=1, t_source=0.1, app="floor", cols=cols, rows=rows,
                   width=64, height=48, counts=counts, frames=10)  # fmt: skip


def write(path: Path, *lines: bytes) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_heatmaps_are_summed_cell_by_cell(tmp_path: Path) -> None:
    events = write(tmp_path / "e.jsonl", msgspec.json.encode(heatmap([1, 2, 3, 4])),
                   msgspec.json.encode(heatmap([10, 0, 0, 1], frame=2)))  # fmt: skip
    total, last, count = sum_heatmaps(events)
    assert total.tolist() == [[11, 2], [3, 5]] and count == 2 and last.frame == 2


def test_a_heatmap_line_that_is_not_json_names_its_line(tmp_path: Path) -> None:
    events = write(tmp_path / "e.jsonl", msgspec.json.encode(heatmap([1, 2, 3, 4])), b'{"kind":"heatmap", oops')
    with pytest.raises(ConfigError, match=r"e\.jsonl:2: a malformed heatmap event"):
        sum_heatmaps(events)


def test_a_heatmap_whose_counts_do_not_fill_its_grid_is_refused(tmp_path: Path) -> None:
    events = write(tmp_path / "e.jsonl", msgspec.json.encode(heatmap([1, 2, 3])))
    with pytest.raises(ConfigError, match=r"e\.jsonl:1: a heatmap event with 3 counts for a 2x2 grid"):
        sum_heatmaps(events)
