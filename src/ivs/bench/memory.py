"""Part g of `ivs bench`: the peak resident set of a real sensor process and a real hub process.

Each runs as its own `python -m ivs ...` process, and its peak comes from the kernel: `wait4`
returns the process's `ru_maxrss` when it exits, and `/proc/PID/status` (VmHWM) gives the peak
so far while it runs. The process is started by a small launcher (`LAUNCHER`), not forked from
the bench itself: Linux keeps the larger of the pre-exec and post-exec peaks in `ru_maxrss`,
and a fork of the bench (which holds every runner of part a) would report the bench's peak.

sensor: `ivs run` with the person detector over the sample video, with a counting line, a
    zone and a heatmap, a JSON-lines sink and (when Mosquitto is installed) an MQTT sink with
    its durable outbox, unpaced (every frame, as fast as the machine goes).
hub: `ivs hub serve` on SQLite, idle after start, then under ingest: batches of events posted
    over HTTP by one client.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from ivs.bench.results import HubMemory, SensorMemory
from ivs.localnet import LocalMosquitto, free_port, mosquitto_path


def _kib_to_mib(kib: int) -> float:
    return round(kib / 1024, 1)


def vm_hwm_mib(pid: int, field: str = "VmHWM") -> float | None:
    """The peak resident set of a running process so far (Linux /proc), MiB; `field="VmRSS"`:
    the resident set now."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return _kib_to_mib(int(line.split()[1]))
    except (OSError, ValueError, IndexError):
        return None
    return None


def _sample_rss(proc: subprocess.Popen[bytes], pid: int, timeout: float, period_s: float = 0.2) -> list[float]:
    """The measured process's resident set every `period_s` until it exits (or `timeout`)."""
    samples: list[float] = []
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        rss = vm_hwm_mib(pid, "VmRSS")
        if rss is not None:
            samples.append(rss)
        time.sleep(period_s)
    return samples


LAUNCHER = """
import json, os, signal, sys
out, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    os.execv(argv[0], argv)
with open(out + ".pid", "w") as f:
    f.write(str(pid))
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda s, _f: os.kill(pid, s))
while True:
    try:
        _, status, usage = os.wait4(pid, 0)
        break
    except InterruptedError:
        continue
with open(out, "w") as f:
    json.dump({"code": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss}, f)
"""
"""Runs a command as its child (forked from this small interpreter, then exec'd) and writes the
child's exit code and `ru_maxrss` to a file; forwards SIGINT and SIGTERM to it."""


def _launch(argv: list[str], result: Path, **popen: Any) -> tuple[subprocess.Popen[bytes], int]:
    """Start `argv` under the launcher; returns the launcher and the measured process's pid."""
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(result), *argv], **popen)
    pid_file = Path(f"{result}.pid")
    deadline = time.monotonic() + 30
    while not pid_file.is_file() or not pid_file.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the launcher for {argv[2:]} did not start it")
        time.sleep(0.01)
    return proc, int(pid_file.read_text())


def _wait_peak(proc: subprocess.Popen[bytes], result: Path, timeout: float) -> tuple[int, float]:
    """Wait for the launcher; the measured process's exit code and peak RSS (MiB)."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        raise TimeoutError(f"{proc.args!r} still running after {timeout:.0f} s: stopped") from None
    data = json.loads(result.read_text())
    return int(data["code"]), _kib_to_mib(int(data["maxrss_kib"]))


def sensor_peak_rss(video: Path, frames: int | None, runtime: str = "auto", timeout: float = 300.0) -> SensorMemory:
    """Peak RSS of `ivs run` (person detector, three apps, JSONL + MQTT sinks) over `video`."""
    with tempfile.TemporaryDirectory(prefix="ivs-bench-rss-") as tmp:
        broker: LocalMosquitto | None = None
        sinks = f"  - type: jsonl\n    path: {tmp}/events.jsonl\n"
        if mosquitto_path() is not None:
            broker = LocalMosquitto(Path(tmp) / "broker", persistence=False)
            broker.start()
            sinks += f"  - type: mqtt\n    host: 127.0.0.1\n    port: {broker.port}\n    outbox: {tmp}/outbox.sqlite\n"
        cfg = Path(tmp) / "sensor.yaml"
        cfg.write_text(
            f"""id: bench-rss
source:
  url: {video}
model:
  name: person
  runtime: {runtime}
frames: true
apps:
  - type: line
    name: crossing
    p1: [384, 575]
    p2: [384, 100]
    classes: [person]
  - type: zone
    name: walkway
    polygon: [[250, 220], [560, 220], [620, 420], [200, 420]]
    classes: [person]
    loiter_s: 8
  - type: heatmap
    name: floor
    period_s: 10
sinks:
{sinks}"""
        )
        cmd = [sys.executable, "-m", "ivs", "run", "--config", str(cfg), "-q", "--fps", "0"]
        if frames is not None:
            cmd += ["--max-frames", str(frames)]
        try:
            t0 = time.perf_counter()
            # stderr to a file: a pipe nobody reads while the child runs could fill and stall it
            result = Path(tmp) / "rusage.json"
            with open(Path(tmp) / "stderr.txt", "wb") as stderr:
                proc, pid = _launch(cmd, result, stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp)
                samples = _sample_rss(proc, pid, timeout)
                code, peak = _wait_peak(proc, result, timeout)
            seconds = time.perf_counter() - t0
            err = (Path(tmp) / "stderr.txt").read_text(errors="replace")
        finally:
            if broker is not None:
                broker.stop()
        if code != 0:
            raise RuntimeError(f"ivs run exited with {code}: {err[-500:]}")
        lines = (Path(tmp) / "events.jsonl").read_text().count("\n")
    return SensorMemory(
        runtime=runtime,
        what=f"person detector ({runtime}) on {video.name}, line + zone + heatmap apps, frame records, JSONL sink"
        + (" and MQTT sink (durable outbox) to a local Mosquitto" if broker is not None else ""),
        frames=frames,
        messages=lines,
        seconds=round(seconds, 1),
        peak_rss_mib=peak,
        # The resident set while frames flow (the later half of the samples): the peak also
        # holds what loading took once (runtime "auto" builds every runner to time them).
        rss_running_mib=round(float(np.median(samples[len(samples) // 2 :])), 1) if samples else None,
    )


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ivs hub serve exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"ivs hub serve did not listen on port {port} within {timeout:.0f} s")


def hub_peak_rss(events: int, batch: int = 1_000, timeout: float = 300.0) -> HubMemory:
    """Peak RSS of `ivs hub serve` (SQLite) after start and after ingesting `events` over HTTP."""
    from ivs.bench.ingest import ingest_events
    from ivs.hub.store import Store

    sensor = "bench-rss"
    with tempfile.TemporaryDirectory(prefix="ivs-bench-rss-") as tmp:
        url = f"sqlite:///{tmp}/hub.db"
        store = Store(url)
        try:
            token = store.add_device(sensor)
        finally:
            store.close()
        port = free_port()
        cmd = [sys.executable, "-m", "ivs", "hub", "serve", "--db", url, "--port", str(port), "--open-read"]
        env = {k: v for k, v in os.environ.items() if k != "IVS_HUB_ADMIN_TOKEN"}
        result = Path(tmp) / "rusage.json"
        proc, pid = _launch(cmd, result, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp, env=env)
        try:
            _wait_port(port, proc, 60)
            idle = vm_hwm_mib(pid)
            messages = ingest_events(events, sensor)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            accepted = 0
            t0 = time.perf_counter()
            try:
                for start in range(0, len(messages), batch):
                    body = msgspec.json.encode(messages[start : start + batch])
                    conn.request("POST", "/api/v1/ingest", body, headers)
                    response = conn.getresponse()
                    payload = response.read()
                    if response.status != 200:
                        raise RuntimeError(f"hub answered {response.status}: {payload[:200]!r}")
                    accepted += int(msgspec.json.decode(payload)["accepted"])
            finally:
                conn.close()
            seconds = time.perf_counter() - t0
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise
        proc.send_signal(signal.SIGINT)  # forwarded: uvicorn shuts down cleanly on SIGINT
        code, peak = _wait_peak(proc, result, timeout)
    return HubMemory(
        what=f"SQLite, {events:,} events posted over HTTP in batches of {batch:,} by one client",
        events=events,
        accepted=accepted,
        seconds=round(seconds, 1),
        exit_code=code,
        peak_rss_idle_mib=idle,
        peak_rss_mib=peak,
    )
