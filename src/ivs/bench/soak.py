"""The soak run: a sensor left running at its source's rate, its memory, file descriptors and
threads sampled from outside, to show that nothing grows.

    python -m ivs.bench.soak --minutes 30 --json out/soak.json

The sensor runs in a child process (so what is measured is the sensor alone): vtest.avi,
looped, paced at its own 10 fps; the person detector; a tracker with a counting line, a
zone and a heatmap; per-frame records and events through the durable outbox to an MQTT sink on
a local Mosquitto. This process starts the broker, subscribes to everything the sensor
sends (counting what arrives, duplicates removed) and samples the child's `/proc/<pid>`
every `interval_s`: resident set (VmRSS), open file descriptors and threads.

Growth is judged after `warmup_s` (model load, allocator pools, the tracker reaching its
steady number of tracks): resident memory at the end against right after warm-up, and the
range of descriptor and thread counts after warm-up. docs/reliability.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ivs.bench import ROOT
from ivs.bench.soak_results import CountFigures, RssFigures, SoakFigures, SoakSensor

SENSOR_ID = "soak"
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Sample:
    t: float
    """Seconds since the child started."""
    rss_mib: float
    fds: int
    threads: int
    frames: int
    """Messages received from the sensor so far (a liveness check)."""


@dataclass
class SoakReport:
    seconds: float
    warmup_s: float
    interval_s: float
    samples: list[Sample] = field(default_factory=list)
    child: SoakSensor | None = None
    """The sensor's own summary (frames read, processed, dropped, events, last seq)."""
    received: int = 0
    duplicates: int = 0
    rejected: int = 0

    def after_warmup(self) -> list[Sample]:
        return [s for s in self.samples if s.t >= self.warmup_s]

    def figures(self) -> SoakFigures | None:
        """Start, after warm-up, end and extremes of each measure; growth in percent (None: no
        sample after the warm-up)."""
        warm = self.after_warmup()
        if not self.samples or not warm:
            return None
        # "start": the first sample with the sensor delivering (the model loaded, frames flowing).
        first = next((s for s in self.samples if s.frames > 0), self.samples[0])
        w0, last = warm[0], self.samples[-1]
        rss = [s.rss_mib for s in warm]
        return SoakFigures(
            rss_mib=RssFigures(
                start=round(first.rss_mib, 1),
                after_warmup=round(w0.rss_mib, 1),
                end=round(last.rss_mib, 1),
                max_after_warmup=round(max(rss), 1),
                growth_pct=round(100 * (last.rss_mib - w0.rss_mib) / w0.rss_mib, 2),
                max_growth_pct=round(100 * (max(rss) - w0.rss_mib) / w0.rss_mib, 2),
            ),
            fds=CountFigures(
                start=first.fds,
                min_after_warmup=min(s.fds for s in warm),
                end=last.fds,
                max_after_warmup=max(s.fds for s in warm),
            ),
            threads=CountFigures(
                start=first.threads,
                min_after_warmup=min(s.threads for s in warm),
                end=last.threads,
                max_after_warmup=max(s.threads for s in warm),
            ),
            samples=len(self.samples),
        )


def proc_sample(pid: int) -> tuple[float, int, int]:
    """(resident MiB, open fds, threads) of a live process, from /proc (Linux)."""
    with open(f"/proc/{pid}/statm") as f:
        rss_pages = int(f.read().split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = len(os.listdir(f"/proc/{pid}/task"))
    return rss_pages * PAGE / 2**20, fds, threads


def sensor_config(video: Path, port: int, outbox: Path, frames: bool) -> dict[str, Any]:
    """The soak sensor: counting line, zone and heatmap on vtest.avi, MQTT out."""
    return {
        "id": SENSOR_ID,
        "source": {"url": str(video)},
        "model": {"name": "person", "runtime": "onnxruntime"},
        "frames": frames,
        "apps": [
            {"type": "line", "name": "door", "coords": "normalized", "p1": [0.5, 0.05], "p2": [0.5, 0.95]},
            {
                "type": "zone",
                "name": "left",
                "coords": "normalized",
                "polygon": [[0.0, 0.3], [0.45, 0.3], [0.45, 1.0], [0.0, 1.0]],
                "loiter_s": 5.0,
            },
            {"type": "heatmap", "name": "floor", "cols": 16, "rows": 12, "period_s": 30.0},
        ],
        "sinks": [{"type": "mqtt", "host": "127.0.0.1", "port": port, "outbox": str(outbox)}],
    }


def run_child(config_path: Path) -> int:
    """The sensor side: build the configured sensor on a looped video and run it until SIGTERM;
    print its summary as one JSON line."""
    from ivs.build import RunOptions, build_sensor
    from ivs.config import SensorConfig
    from ivs.sources.video import VideoSource

    cfg = SensorConfig.model_validate(json.loads(config_path.read_text()))
    source = VideoSource(cfg.source.url, loop=True)
    built = build_sensor(cfg, RunOptions(watch=False, source=source))
    sensor = built.sensor
    signal.signal(signal.SIGTERM, lambda *_: sensor.stop())
    signal.signal(signal.SIGINT, lambda *_: sensor.stop())
    stats = sensor.run()
    built.close()
    summary = SoakSensor(
        frames_read=stats.frames_read,
        frames_processed=stats.frames_processed,
        dropped=stats.dropped,
        events=sensor.events,
        last_seq=sensor._seq,
        loops=source.loops,
        seconds=round(stats.elapsed(), 1),
    )
    sys.stdout.write(msgspec.json.encode(summary).decode() + "\n")
    sys.stdout.flush()
    return 0


def soak(
    seconds: float,
    *,
    warmup_s: float = 60.0,
    interval_s: float = 5.0,
    frames: bool = True,
    video: Path | None = None,
    workdir: Path | None = None,
    progress: Any = None,
) -> SoakReport:
    """Run the soak for `seconds` and return the samples and figures."""
    from ivs.consumer import Consumer, Message
    from ivs.localnet import LocalMosquitto

    video = video or ROOT / ".cache" / "media" / "vtest.avi"
    if not video.is_file():
        raise FileNotFoundError(f"{video}: expected the sample video (scripts/fetch-media.sh fetches it)")
    own_dir = tempfile.TemporaryDirectory(prefix="ivs-soak-") if workdir is None else None
    work = Path(own_dir.name) if own_dir is not None else workdir
    assert work is not None
    broker = LocalMosquitto(work / "mosquitto", persistence=False)
    broker.start()
    report = SoakReport(seconds=seconds, warmup_s=warmup_s, interval_s=interval_s)
    received = [0]
    lock = threading.Lock()

    def on_message(message: Message) -> None:
        with lock:
            received[0] += 1

    consumer = Consumer("127.0.0.1", broker.port, on_message, sensors=SENSOR_ID)
    consumer.connected.wait(10)
    config = work / "soak.json"
    config.write_text(json.dumps(sensor_config(video, broker.port, work / "outbox.sqlite", frames)))
    # stderr to a file: a pipe nobody reads during a long run would fill and stall the sensor.
    errors = (work / "sensor.log").open("w")
    child = subprocess.Popen(
        [sys.executable, "-m", "ivs.bench.soak", "--child", str(config)],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            if child.poll() is not None:
                raise RuntimeError(f"the soak sensor exited early ({child.returncode}): {_tail(work / 'sensor.log')}")
            rss, fds, threads = proc_sample(child.pid)
            with lock:
                got = received[0]
            report.samples.append(Sample(round(elapsed, 1), rss, fds, threads, got))
            if progress is not None:
                progress(report.samples[-1])
            time.sleep(max(0.0, interval_s - (time.monotonic() - started - elapsed)))
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=60)
        if child.returncode != 0:
            raise RuntimeError(f"the soak sensor failed ({child.returncode}): {_tail(work / 'sensor.log')}")
        report.child = msgspec.json.decode(out.strip().splitlines()[-1], type=SoakSensor)
        # Wait for the last messages to arrive (the sink drains its outbox before it exits).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and received[0] < report.child.last_seq:
            time.sleep(0.1)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        errors.close()
        consumer.close()
        broker.stop()
        if own_dir is not None:
            own_dir.cleanup()
    report.received, report.duplicates = received[0], consumer.duplicates
    report.rejected = sum(consumer.rejected.values())
    return report


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ivs.bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="How long to run (default 30).")
    parser.add_argument("--warmup", type=float, default=120.0, help="Seconds of warm-up before growth counts.")
    parser.add_argument("--interval", type=float, default=5.0, help="Seconds between samples.")
    parser.add_argument("--no-frames", action="store_true", help="Send events only, not per-frame records.")
    parser.add_argument("--json", type=Path, help="Write the samples and figures here.")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return run_child(args.child)

    def show(s: Sample) -> None:
        line = f"{s.t:8.1f} s  rss {s.rss_mib:7.1f} MiB  fds {s.fds:4d}  threads {s.threads:3d}  received {s.frames}"
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    report = soak(
        args.minutes * 60, warmup_s=args.warmup, interval_s=args.interval, frames=not args.no_frames, progress=show
    )
    result = {
        "figures": msgspec.to_builtins(report.figures()),
        "sensor": msgspec.to_builtins(report.child),
        "received": report.received,
        "duplicates": report.duplicates,
        "rejected": report.rejected,
    }
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**result, "samples": [asdict(s) for s in report.samples]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
