"""Part i of `ivs bench`: how many cameras one box runs, as one node and as separate processes.

Each trial runs N streams of the sample video (vtest.avi, 768x576) at its 10 fps for `seconds`,
through the person detector in its shipped layout, metadata only, no apps and no sinks (the
model is the cost). A trial passes when no stream dropped a frame. `ivs node` runs the N
streams in one process (one inference service for the network); the separate way runs N
`ivs run` processes side by side, as before nodes. The largest passing N is found by doubling
from 1 until a trial drops, then bisecting. RSS: the node's peak resident set, or the sum of
the processes' peaks (each from the kernel's `ru_maxrss`, `ivs.bench.memory`).

    python -m ivs.bench.streams --seconds 60      # part i alone, as JSON
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ivs.bench.memory import _launch, _wait_peak
from ivs.bench.results import StreamsRow, StreamsTrial

Trial = Callable[[int], StreamsTrial]


def node_trial(video: Path, seconds: float, runtime: str) -> Trial:
    """N streams in one `ivs node`."""

    def run(n: int) -> StreamsTrial:
        with tempfile.TemporaryDirectory(prefix="ivs-bench-streams-") as tmp:
            site = Path(tmp) / "site.yaml"
            frames = int(seconds * 10)
            entries = "".join(f"  - {{id: cam{i}}}\n" for i in range(n))
            site.write_text(
                "defaults:\n"
                f"  source: {{url: '{video}', fps: 10, max_frames: {frames}}}\n"
                f"  model: {{name: person, runtime: {runtime}}}\n"
                "  sinks: []\n"
                f"sensors:\n{entries}"
            )
            argv = [sys.executable, "-m", "ivs", "node", "--config", str(site), "--status-s", "0"]
            log = Path(tmp) / "node.log"
            with log.open("wb") as out:
                proc, _ = _launch(argv, Path(tmp) / "result.json", stdout=out, stderr=subprocess.STDOUT)
                code, peak = _wait_peak(proc, Path(tmp) / "result.json", seconds * 3 + 120)
            text = log.read_text(errors="replace")
            if code != 0:
                raise RuntimeError(f"ivs node failed ({code}): {text[-500:]}")
            rows = re.findall(r"^\s+cam\d+: \w+(?: \(.*?\))?, (\d+) frames, (\d+) dropped", text, re.M)
            if len(rows) != n:
                raise RuntimeError(f"ivs node printed {len(rows)} sensors' health, expected {n}: {text[-500:]}")
            processed = [int(f) for f, _ in rows]
            return StreamsTrial(streams=n, dropped=sum(int(d) for _, d in rows), frames=sum(processed),
                                min_frames=min(processed), rss_mib=peak)  # fmt: skip

    return run


def separate_trial(video: Path, seconds: float, runtime: str) -> Trial:
    """N `ivs run` processes side by side."""

    def run(n: int) -> StreamsTrial:
        frames = int(seconds * 10)
        with tempfile.TemporaryDirectory(prefix="ivs-bench-streams-") as tmp:
            procs = []
            for i in range(n):
                argv = [sys.executable, "-m", "ivs", "run", "--source", str(video), "--model", "person", "--runtime",
                        runtime, "--fps", "10", "--max-frames", str(frames), "-q"]  # fmt: skip
                log = (Path(tmp) / f"run{i}.log").open("wb")
                proc, _ = _launch(argv, Path(tmp) / f"result{i}.json", stdout=log, stderr=subprocess.STDOUT)
                procs.append((proc, log, Path(tmp) / f"result{i}.json", Path(tmp) / f"run{i}.log"))
            dropped = processed_total = 0
            peaks: list[float] = []
            processed_each = []
            for proc, log, result, path in procs:
                code, peak = _wait_peak(proc, result, seconds * 3 + 120)
                log.close()
                text = path.read_text(errors="replace")
                m = re.search(r"processed (\d+), dropped (\d+)", text)
                if code != 0 or m is None:
                    raise RuntimeError(f"ivs run failed ({code}): {text[-500:]}")
                processed_each.append(int(m.group(1)))
                processed_total += int(m.group(1))
                dropped += int(m.group(2))
                peaks.append(peak)
            return StreamsTrial(streams=n, dropped=dropped, frames=processed_total, min_frames=min(processed_each),
                                rss_mib=round(sum(peaks), 1))  # fmt: skip

    return run


def most_streams(trial: Trial, limit: int = 32, log: Callable[[str], None] = lambda _: None) -> list[StreamsTrial]:
    """Every trial run to find the largest N with no frame dropped: 1, 2, 4, ... until one
    drops (or `limit`), then bisect between the last that passed and the first that dropped."""
    trials: list[StreamsTrial] = []

    def passes(n: int) -> bool:
        t = trial(n)
        trials.append(t)
        log(f"i. {n} streams: {t.dropped} dropped, {t.frames} frames, {t.rss_mib} MiB")
        return t.dropped == 0

    good, bad = 0, None
    n = 1
    while n <= limit:
        if not passes(n):
            bad = n
            break
        good, n = n, n * 2
    if bad is None:
        return trials
    while bad - good > 1:
        mid = (good + bad) // 2
        if passes(mid):
            good = mid
        else:
            bad = mid
    return trials


def streams_row(how: str, trials: list[StreamsTrial]) -> StreamsRow:
    passing = [t for t in trials if t.dropped == 0]
    best = max(passing, key=lambda t: t.streams) if passing else None
    return StreamsRow(how=how, max_streams=best.streams if best else 0, rss_mib_at_max=best.rss_mib if best else None,
                      trials=sorted(trials, key=lambda t: t.streams))  # fmt: skip


def bench_streams(video: Path, seconds: float, runtime: str, log: Callable[[str], None]) -> list[StreamsRow]:
    """Part i: the node's row and the separate processes' row, measured in the same run."""
    rows = []
    for how, make in (("ivs node (one process)", node_trial), ("separate ivs run processes", separate_trial)):
        log(f"i. {how}")
        rows.append(streams_row(how, most_streams(make(video, seconds, runtime), log=log)))
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m ivs.bench.streams [--seconds S] [--runtime R]`: part i alone, as JSON."""
    import argparse

    import msgspec

    from ivs.bench.common import media_dir

    parser = argparse.ArgumentParser(prog="python -m ivs.bench.streams", description=main.__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runtime", default="onnxruntime", help="onnxruntime | openvino | auto")
    parser.add_argument("--only", choices=("node", "separate"), help="one of the two rows")
    parser.add_argument("--streams", type=int, help="one trial of this many streams, not the search")
    args = parser.parse_args(argv)
    video = media_dir() / "vtest.avi"

    def log(msg: str) -> None:
        sys.stderr.write(msg + "\n")

    makers = {"node": node_trial, "separate": separate_trial}
    rows = []
    for name, make in makers.items():
        if args.only not in (None, name):
            continue
        trial = make(video, args.seconds, args.runtime)
        trials = [trial(args.streams)] if args.streams else most_streams(trial, log=log)
        rows.append(streams_row(name, trials))
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(rows), indent=2).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
