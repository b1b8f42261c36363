"""Part i of `ivs bench`: how many cameras one box runs, as one node and as separate processes.

Each trial runs N streams of the sample video (vtest.avi, 768x576) at its 10 fps for `seconds`,
through the person detector in its shipped layout, metadata only, no apps and no sinks (the
model is the cost). Like with like: every inference runs on one intra-op thread on both sides
(the node: `threads: 1`, a worker per core; each separate `ivs run`: `--threads 1`), the same
runtime, the same video, the same layout.

A trial passes when every stream kept the video's rate in wall time: no frame dropped, no frame
captured a frame period or more behind the video's clock (`late`), and each stream's frames
over its wall seconds at least 9.8 fps. An N passes when all its `repeats` pass (a failing
repeat ends that N). The largest passing N is found by doubling from 1 until an N fails, then
bisecting. Memory is proportional set size (PSS, /proc/PID/smaps_rollup) of every process of
the trial, summed at the same moment every 0.5 s, and the largest sum kept: pages the separate
processes share (the libraries) count once, as they cost once.

    python -m ivs.bench.streams --seconds 60      # part i alone, as JSON
"""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from ivs.bench.memory import _launch, _wait_peak
from ivs.bench.results import StreamsRow, StreamsRun, StreamsTrial

Trial = Callable[[int, int], StreamsTrial]
"""(streams, repeat) -> the trial's result."""
FPS = 10
REPEATS = 3
MIN_FPS = 9.8


def pss_mib(pid: int) -> float:
    """The process's proportional set size now (0 once it has gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0
    m = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else 0.0


class PssSampler:
    """The largest sum of the given processes' PSS, sampled together every `period_s`."""

    def __init__(self, pids: list[int], period_s: float = 0.5) -> None:
        self.pids, self.period_s = pids, period_s
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ivs-bench-pss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.peak = max(self.peak, sum(pss_mib(p) for p in self.pids))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak, 1)


_HEALTH = re.compile(r"^\s+cam\d+: \w+(?: \(.*?\))?, (\d+) frames, (\d+) dropped, (\d+) late, .*?, ([\d.]+) s$", re.M)
_RUN = re.compile(r"processed (\d+), dropped (\d+), detections \d+, ([\d.]+) s, [\d.]+ fps(?:, late (\d+))?")


def node_trial(video: Path, seconds: float, runtime: str) -> Trial:
    """N streams in one `ivs node` (a worker per core, one thread each)."""

    def run(n: int, repeat: int = 1) -> StreamsTrial:
        with tempfile.TemporaryDirectory(prefix="ivs-bench-streams-") as tmp:
            site = Path(tmp) / "site.yaml"
            frames = int(seconds * FPS)
            entries = "".join(f"  - {{id: cam{i}}}\n" for i in range(n))
            site.write_text(
                "node: {threads: 1}\n"
                "defaults:\n"
                f"  source: {{url: '{video}', fps: {FPS}, max_frames: {frames}}}\n"
                f"  model: {{name: person, runtime: {runtime}}}\n"
                "  sinks: []\n"
                f"sensors:\n{entries}"
            )
            argv = [sys.executable, "-m", "ivs", "node", "--config", str(site), "--status-s", "0"]
            log = Path(tmp) / "node.log"
            with log.open("wb") as out:
                proc, pid = _launch(argv, Path(tmp) / "result.json", stdout=out, stderr=subprocess.STDOUT)
                sampler = PssSampler([pid])
                code, _ = _wait_peak(proc, Path(tmp) / "result.json", seconds * 3 + 120)
                pss = sampler.stop()
            text = log.read_text(errors="replace")
            if code != 0:
                raise RuntimeError(f"ivs node failed ({code}): {text[-500:]}")
            rows = _HEALTH.findall(text)
            if len(rows) != n:
                raise RuntimeError(f"ivs node printed {len(rows)} sensors' health, expected {n}: {text[-500:]}")
            processed = [int(f) for f, _, _, _ in rows]
            return StreamsTrial(
                streams=n, repeat=repeat, dropped=sum(int(d) for _, d, _, _ in rows),
                late=sum(int(lt) for _, _, lt, _ in rows), frames=sum(processed), min_frames=min(processed),
                min_fps=round(min(int(f) / float(s) for f, _, _, s in rows), 2), pss_mib=pss,
            )  # fmt: skip

    return run


def separate_trial(video: Path, seconds: float, runtime: str) -> Trial:
    """N `ivs run --threads 1` processes side by side."""

    def run(n: int, repeat: int = 1) -> StreamsTrial:
        frames = int(seconds * FPS)
        with tempfile.TemporaryDirectory(prefix="ivs-bench-streams-") as tmp:
            procs = []
            for i in range(n):
                argv = [sys.executable, "-m", "ivs", "run", "--source", str(video), "--model", "person", "--runtime",
                        runtime, "--threads", "1", "--fps", str(FPS), "--max-frames", str(frames), "-q"]  # fmt: skip
                log = (Path(tmp) / f"run{i}.log").open("wb")
                proc, pid = _launch(argv, Path(tmp) / f"result{i}.json", stdout=log, stderr=subprocess.STDOUT)
                procs.append((proc, pid, log, Path(tmp) / f"result{i}.json", Path(tmp) / f"run{i}.log"))
            sampler = PssSampler([pid for _, pid, _, _, _ in procs])
            dropped = late = 0
            processed_each: list[int] = []
            fps_each: list[float] = []
            for proc, _, log, result, path in procs:
                code, _ = _wait_peak(proc, result, seconds * 3 + 120)
                log.close()
                text = path.read_text(errors="replace")
                m = _RUN.search(text)
                if code != 0 or m is None:
                    raise RuntimeError(f"ivs run failed ({code}): {text[-500:]}")
                processed_each.append(int(m.group(1)))
                dropped += int(m.group(2))
                late += int(m.group(4) or 0)
                fps_each.append(int(m.group(1)) / float(m.group(3)))
            return StreamsTrial(streams=n, repeat=repeat, dropped=dropped, late=late, frames=sum(processed_each),
                                min_frames=min(processed_each), min_fps=round(min(fps_each), 2),
                                pss_mib=sampler.stop())  # fmt: skip

    return run


def most_streams(
    trial: Trial, limit: int = 32, repeats: int = REPEATS, log: Callable[[str], None] = lambda _: None
) -> list[StreamsTrial]:
    """Every trial run to find the largest N whose every repeat passes: 1, 2, 4, ... until one
    fails (or `limit`), then bisect between the last that passed and the first that failed."""
    trials: list[StreamsTrial] = []

    def passes(n: int) -> bool:
        for r in range(1, repeats + 1):
            t = trial(n, r)
            trials.append(t)
            log(f"i. {n} streams, repeat {r}: {t.dropped} dropped, {t.late} late, slowest {t.min_fps} fps, "
                f"{t.pss_mib} MiB PSS")  # fmt: skip
            if not t.passed:
                return False
        return True

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
    by_n: dict[int, list[StreamsTrial]] = {}
    for t in trials:
        by_n.setdefault(t.streams, []).append(t)
    passing = [n for n, ts in by_n.items() if all(t.passed for t in ts)]
    best = max(passing, default=0)
    return StreamsRow(how=how, threads=1, max_streams=best,
                      pss_mib_at_max=max(t.pss_mib for t in by_n[best]) if best else None,
                      trials=sorted(trials, key=lambda t: (t.streams, t.repeat)))  # fmt: skip


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

    from ivs.bench.common import git_commit, machine_info, media_dir

    parser = argparse.ArgumentParser(prog="python -m ivs.bench.streams", description=main.__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runtime", default="onnxruntime", help="onnxruntime | openvino | auto")
    parser.add_argument("--only", choices=("node", "separate"), help="one of the two rows")
    parser.add_argument("--streams", type=int, nargs="+", help="these N (each repeated), not the search")
    parser.add_argument("--repeats", type=int, default=REPEATS)
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
        if args.streams:
            trials = [trial(n, r) for n in args.streams for r in range(1, args.repeats + 1)]
            for t in trials:
                log(f"i. {name} {t.streams} streams, repeat {t.repeat}: {t.dropped} dropped, {t.late} late, "
                    f"slowest {t.min_fps} fps, {t.pss_mib} MiB PSS")  # fmt: skip
        else:
            trials = most_streams(trial, repeats=args.repeats, log=log)
        rows.append(streams_row(name, trials))
    run = StreamsRun(commit=git_commit(), machine=machine_info(), seconds=args.seconds, runtime=args.runtime,
                     when=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), rows=rows)  # fmt: skip
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(run), indent=2).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
