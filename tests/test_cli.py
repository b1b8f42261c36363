"""Bad input: one line saying what was wrong and what was expected, a non-zero exit, and
every record of a frame already processed on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def ivs(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ivs", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def error_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in r.stderr.splitlines() if line.startswith("ivs: error:")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "what", "expected"),
    [
        (["--source", "/no/such/video.mp4", "--model", "classifier"], "not found", "expected a video file"),
        (
            ["--source", "63", "--model", "classifier"],
            "camera 63 cannot be opened",
            "expected a connected camera",
        ),
        (
            ["--source", "synthetic", "--model", "nosuch"],
            "unknown model 'nosuch'",
            "expected a zoo name (classifier",
        ),
        (["--source", "synthetic", "--model", "no/such.ivsm"], "not found", "expected an .ivsm file"),
        (
            ["--source", "synthetic", "--model", "classifier", "--roi", "1,2,3"],
            "malformed ROI '1,2,3'",
            "expected X,Y,W,H",
        ),
        (
            ["--source", "synthetic:320x240", "--model", "classifier", "--roi", "300,0,100,100"],
            "reaches beyond the 320x240 frame",
            "expected X+W <= 320",
        ),
        (
            ["--source", "synthetic", "--model", "classifier", "--mode", "video"],
            "unknown mode 'video'",
            "expected one of metadata",
        ),
        (
            ["--source", "synthetic", "--model", "classifier", "--runtime", "litert"],
            "cannot run this model",
            "expected one of",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_nonzero_exit(args, what, expected):
    r = ivs("run", *args)
    assert r.returncode == 2
    line = error_line(r)
    assert what in line and expected in line, line


def test_corrupt_video_is_refused(tmp_path: Path):
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"RIFF" + bytes(range(256)) * 100)
    r = ivs("run", "--source", str(junk), "--model", "classifier")
    assert r.returncode == 2
    line = error_line(r)
    assert "not a readable video" in line and "expected a video file" in line


def test_truncated_video_flushes_every_processed_frame(vtest: Path, tmp_path: Path):
    cut = tmp_path / "cut.avi"
    cut.write_bytes(vtest.read_bytes()[:1_500_000])
    out = tmp_path / "m.jsonl"
    r = ivs("run", "--source", str(cut), "--model", "classifier", "--fps", "0", "--out", str(out), "-q")
    assert r.returncode == 1
    line = error_line(r)
    assert "declares 795 frames" in line and "expected a complete file" in line
    records = [json.loads(x) for x in out.read_text().splitlines()]
    decoded = int(line.split("only ")[1].split(" ")[0])
    assert decoded > 50
    assert [rec["frame"] for rec in records] == list(range(decoded))


def test_stdout_carries_only_json_lines():
    r = ivs("run", "--source", "synthetic:160x120@30:3", "--model", "classifier", "--fps", "0", "--out", "-")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and all(json.loads(x)["schema"] == "ivs.frame/1" for x in lines)
    assert "ivs run summary" in r.stderr


def test_model_list_and_verify():
    r = ivs("model", "list")
    assert r.returncode == 0 and "classifier" in r.stdout
    r = ivs("model", "verify", "classifier")
    assert r.returncode == 0 and r.stdout.startswith("OK classifier")


def test_untrained_benchmark_model_says_so_in_every_output():
    r = ivs("run", "--source", "synthetic:160x120@30:3", "--model", "mobilenet-v1", "--fps", "0", "--out", "-")
    assert r.returncode == 0, r.stderr
    records = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(records) == 3
    assert all("untrained" in rec["model"]["notice"] for rec in records)
    assert "note: mobilenet-v1: untrained weights" in r.stderr


def test_an_image_folder_processes_every_image_by_default(media: Path, tmp_path: Path):
    # No --fps: a folder has no clock, so nothing goes stale and nothing may be dropped, even
    # with a model slower than the folder is read.
    folder = tmp_path / "shots"
    folder.mkdir()
    names = ["basketball1.png", "basketball2.png", "messi5.jpg"]
    for name in names:
        (folder / name).write_bytes((media / name).read_bytes())
    r = ivs("run", "--source", str(folder), "--model", "person", "--out", "-")
    assert r.returncode == 0, r.stderr
    records = [json.loads(x) for x in r.stdout.splitlines()]
    assert [rec["frame"] for rec in records] == [0, 1, 2], r.stderr
    assert "processed 3, dropped 0" in r.stderr, r.stderr
