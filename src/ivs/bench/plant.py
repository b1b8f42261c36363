"""The stop at a plant's side of the sensor: capture to a Modbus coil a client polls, and to an
OPC UA data change at a subscribed client (part d's scene and target, other outputs).

Two kinds of row, for each protocol:

- end to end: the walker of part d (cut from vtest.avi) walks in and out of a stop zone in a
  generated 640x480 scene paced at 30 fps; the person detector, the `SafetyZone` and the
  sensor's `ModbusSink` and `OpcUaSink`; a pymodbus client reads coil 0 every `POLL_S` (as a
  PLC's cycle would) and an asyncua client is subscribed (publishing interval 0) to the stop
  variable. Each stop's latency: `monotonic_ns` when the client sees it, minus its frame's
  `t_capture_ns` (same host, same clock).
- delivery alone: `write` of a stop event to the sinks (no model), the same clients.

    python -m ivs.bench.plant --stops 50      # the rows alone, as a Markdown table
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ivs.bench.common import spread
from ivs.bench.results import PlantRow
from ivs.localnet import free_port
from ivs.sinks.plant import LoopThread

TARGET_MS = 10.0
POLL_S = 0.001
"""The Modbus client's cycle: a read every millisecond (a PLC's is typically 1-10 ms)."""


class _Watchers:
    """A Modbus client polling coil 0 and an OPC UA client subscribed to the stop variable, each
    noting `monotonic_ns` of every rising edge (stop) it sees."""

    def __init__(self, mb_port: int, ua_url: str, nodeid: str) -> None:
        from asyncua.client.client import Client
        from pymodbus.client import ModbusTcpClient

        self.modbus_edges: list[int] = []
        self.opcua_edges: list[int] = []
        self._stop = threading.Event()
        self._mb: Any = ModbusTcpClient("127.0.0.1", port=mb_port)
        if not self._mb.connect():  # type: ignore[no-untyped-call]  # pymodbus leaves it untyped
            raise RuntimeError("the bench's Modbus client did not connect")
        self._poller = threading.Thread(target=self._poll, name="ivs-bench-modbus", daemon=True)
        self._loop = LoopThread("ivs-bench-opcua")
        self._client = Client(ua_url)
        watchers = self

        class Handler:
            def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                if val is True:
                    watchers.opcua_edges.append(time.monotonic_ns())

        async def start() -> None:
            await self._client.connect()
            sub = await self._client.create_subscription(0, Handler())
            await sub.subscribe_data_change(self._client.get_node(nodeid))

        self._loop.run(start(), 20)
        self._poller.start()

    def _poll(self) -> None:
        last = False
        while not self._stop.is_set():
            now = self._mb.read_coils(0, count=1).bits[0]
            if now and not last:
                self.modbus_edges.append(time.monotonic_ns())
            last = bool(now)
            time.sleep(POLL_S)

    def close(self) -> None:
        self._stop.set()
        self._poller.join(5)
        self._mb.close()
        self._loop.run(self._client.disconnect(), 10)
        self._loop.stop()


class _KeepOpen:
    """A sink whose close is left to the bench (the sensor closes its sinks when it ends)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def write(self, message: Any) -> None:
        self.sink.write(message)

    def close(self) -> None:
        pass


def _rows(kind: str, captured: list[int], w: _Watchers, note: str) -> list[PlantRow]:
    """One row per protocol: the k-th stop seen against the k-th stop's capture time."""
    rows = []
    for path, edges in (("Modbus coil (client polling every 1 ms)", w.modbus_edges),
                        ("OPC UA data change (subscribed, publishing interval 0)", w.opcua_edges)):  # fmt: skip
        lat = [(seen - cap) / 1e6 for cap, seen in zip(captured, edges, strict=False)]
        s = spread(lat)
        rows.append(
            PlantRow(
                kind=kind, path=path, stops=len(captured), seen=len(edges), p50_ms=s.p50_ms, p99_ms=s.p99_ms,
                max_ms=s.max_ms, target_ms=TARGET_MS,
                within_target=round(sum(v <= TARGET_MS for v in lat) / len(lat), 3) if lat else None, note=note,
            )
        )  # fmt: skip
    return rows


def _sinks() -> tuple[Any, Any, _Watchers]:
    from ivs.sinks.modbus import ModbusSink
    from ivs.sinks.opcua import OpcUaSink
    from ivs.sinks.plant import points_of

    points = points_of([("cell", "safety")])
    mb = ModbusSink(points, port=free_port())
    ua_port = free_port()
    opc = OpcUaSink("bench", points, port=ua_port)
    return mb, opc, _Watchers(mb.port, opc.url, "ns=2;s=bench.cell.stop")


def _wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def bench_plant_delivery(stops: int) -> list[PlantRow]:
    """`write` of stop and clear events to both sinks, 30 a second, no model."""
    from ivs.events import Clear, Stop

    mb, opc, w = _sinks()
    captured: list[int] = []
    try:
        t0 = time.monotonic()
        for i in range(2 * stops):
            delay = t0 + i / 30 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t_ns = time.monotonic_ns()
            common: dict[str, Any] = dict(sensor_id="bench", seq=i + 1, frame=i, time=time.time(), t_capture_ns=t_ns,
                                          t_source=i / 30, app="cell")  # fmt: skip
            if i % 2 == 0:
                captured.append(t_ns)
                event: Any = Stop(**common, objects=1, labels=["person"], boxes=[(1.0, 2.0, 3.0, 4.0)])
            else:
                event = Clear(**common, empty_frames=5, stopped_s=0.03)
            mb.write(event)
            opc.write(event)
        _wait(lambda: len(w.modbus_edges) >= stops and len(w.opcua_edges) >= stops, 10)
    finally:
        w.close()
        mb.close()
        opc.close()
    return _rows("delivery alone (write -> client)", captured, w, "stop and clear events written 30 a second")


def bench_plant_end_to_end(stops: int, video: Path, runtime: str, threads: int) -> list[PlantRow]:
    """The walker scene of part d through the person detector to both sinks."""
    from ivs.apps.safety import SafetyZone
    from ivs.bench.live import cut_walker
    from ivs.events import Stop
    from ivs.model import load_model
    from ivs.sensor import Sensor
    from ivs.sources.synthetic import Figure, SyntheticSource

    walker, _ = cut_walker(video, runtime)
    width, height, fps, vx, fig_w, fig_h = 640, 480, 30.0, 24.0, 70, 180
    fig = Figure(x=20, y=200, vx=vx, vy=0, w=fig_w, h=fig_h, color=(0, 0, 0), sprite=walker)
    frames = int(np.ceil((stops + 1) / 2 * 2 * (width - fig_w) / vx)) + 10
    source = SyntheticSource(width, height, fps=fps, frames=frames, figures=[fig])
    zone = np.array([[320, 0], [430, 0], [430, height - 1], [320, height - 1]], np.float32)
    captured: list[int] = []

    class Captures:  # notes each stop's capture time, in the order the sinks get them
        def write(self, message: Any) -> None:
            if isinstance(message, Stop):
                captured.append(message.t_capture_ns)

        def close(self) -> None:
            pass

    mb, opc, w = _sinks()
    try:
        model = load_model("person", runtime=runtime, tiles=(1, 1), threads=threads)
        app = SafetyZone("cell", zone, classes={0}, clear_frames=5)
        sinks: list[Any] = [Captures(), _KeepOpen(mb), _KeepOpen(opc)]  # closed below, once the clients are done
        sensor = Sensor(source, model, sinks, sensor_id="bench", fps=None, apps=[app])
        try:
            sensor.run()
        finally:
            model.close()
        _wait(lambda: len(w.modbus_edges) >= len(captured) and len(w.opcua_edges) >= len(captured), 10)
    finally:
        w.close()
        mb.close()
        opc.close()
    note = (f"person detector 1x1 ({runtime}, {threads} threads), {width}x{height} at {fps:.0f} fps paced, "
            f"{sensor.stats.frames_processed} frames, {sensor.stats.dropped} dropped")  # fmt: skip
    return _rows("end to end (capture -> client)", captured, w, note)


def markdown(rows: list[PlantRow]) -> list[str]:
    lines = [
        "| what | path | stops | seen | p50 ms | p99 ms | max ms | within 10 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        within = "-" if r.within_target is None else f"{r.within_target:.1%}"
        lines.append(
            f"| {r.kind} | {r.path} | {r.stops} | {r.seen} | {r.p50_ms} | {r.p99_ms} | {r.max_ms} | {within} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    import argparse

    from ivs.bench.common import media_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stops", type=int, default=50)
    parser.add_argument("--runtime", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    rows = bench_plant_delivery(max(args.stops, 50) * 2)
    rows += bench_plant_end_to_end(args.stops, media_dir() / "vtest.avi", args.runtime, args.threads)
    sys.stdout.write("\n".join(markdown(rows)) + "\n")


if __name__ == "__main__":
    main()
