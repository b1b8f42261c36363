"""Part d of `ivs bench`: the safety stop over a real MQTT broker (part e, hub ingest, is in
`ivs.bench.ingest`).

d. a person (cut from a vtest frame) walks in and out of a stop zone in a generated scene, paced
   like a camera; the sensor's `SafetyZone` stops, its `MqttSink` publishes to a Mosquitto on a
   free loopback port, and a `Consumer` on the same broker takes `monotonic_ns - t_capture_ns`
   for every stop it receives (same host, same clock).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from ivs.bench.common import spread
from ivs.bench.ingest import INGEST_BATCH, INGEST_TARGET_EPS, bench_ingest, ingest_events
from ivs.bench.results import DeliveryRow, SafetyStop, StopLatency
from ivs.localnet import LocalMosquitto, mosquitto_path

if TYPE_CHECKING:
    from ivs.consumer import Message
    from ivs.sinks.mqtt import MqttSink

# Part e moved to ivs.bench.ingest; its names stay importable from here.
__all__ = ["INGEST_BATCH", "INGEST_TARGET_EPS", "bench_ingest", "bench_safety_stop", "cut_walker", "ingest_events"]

STOP_TARGET_MS = 10.0
"""The safety stop target: capture to the event at a subscriber."""


# ---------------------------------------------------------------------------------------- part d


@contextmanager
def _loopback_mqtt(on_message: Callable[[Message], None], synchronous: Literal["full", "normal"]) -> Iterator[MqttSink]:
    """A throw-away Mosquitto on loopback with a `Consumer` calling `on_message` and a
    connected sensor-side `MqttSink` (durable outbox with the given synchronous mode)."""
    from ivs.consumer import Consumer
    from ivs.mqtt_client import MqttSettings
    from ivs.outbox import Outbox
    from ivs.sinks.mqtt import MqttSink

    with tempfile.TemporaryDirectory(prefix="ivs-bench-") as tmp:
        broker = LocalMosquitto(Path(tmp) / "broker", persistence=False)
        broker.start()
        consumer: Consumer | None = None
        try:
            consumer = Consumer("127.0.0.1", broker.port, on_message, sensors="bench")
            if not consumer.connected.wait(10):
                raise RuntimeError("the consumer did not connect to the bench broker")
            time.sleep(0.2)  # the subscription is acknowledged after the connection
            outbox = Outbox(Path(tmp) / "outbox.sqlite", synchronous=synchronous)
            try:
                sink = MqttSink("bench", outbox, MqttSettings(port=broker.port))
                if not sink.connected.wait(10):
                    sink.close(1)
                    raise RuntimeError("the sensor's MQTT sink did not connect to the bench broker")
                yield sink
            finally:
                outbox.close()
        finally:
            if consumer is not None:
                consumer.close()
            broker.stop()


def cut_walker(video: Path, runtime: str) -> tuple[npt.NDArray[np.uint8], list[int]]:
    """The tallest person the person detector finds on frame 60 of `video`, cut out (RGB)."""
    import av

    from ivs.model import load_model

    with av.open(str(video)) as container:
        frame = None
        for i, vf in enumerate(container.decode(video=0)):
            if i == 60:
                frame = np.ascontiguousarray(vf.to_ndarray(format="rgb24"), dtype=np.uint8)
                break
    if frame is None:
        raise RuntimeError(f"{video.name} has fewer than 61 frames")
    model = load_model("person", runtime=runtime, tiles=(1, 1))
    try:
        det = model(frame)
    finally:
        model.close()
    det = det[det.class_id == 0] if len(det) else det
    if not len(det):
        raise RuntimeError(f"no person found on frame 60 of {video.name}")
    boxes = det.xyxy
    x1, y1, x2, y2 = (round(float(v)) for v in boxes[int(np.argmax(boxes[:, 3] - boxes[:, 1]))])
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    return np.ascontiguousarray(frame[y1:y2, x1:x2]), [x1, y1, x2, y2]


def bench_safety_stop(
    stops: int, video: Path, runtime: str, threads: int, synchronous: Literal["full", "normal"] = "full"
) -> SafetyStop:
    """Capture to a stop event at an MQTT subscriber, over `stops` entries into the zone.

    synchronous: the outbox's durability ("full": every commit waits for the disk)."""
    if mosquitto_path() is None:
        raise FileNotFoundError("mosquitto not found (scripts/install-system-deps.sh installs it)")
    from ivs.apps.safety import SafetyZone
    from ivs.events import Stop
    from ivs.model import load_model
    from ivs.records import FrameRecord
    from ivs.sensor import Sensor
    from ivs.sources.synthetic import Figure, SyntheticSource

    walker, box = cut_walker(video, runtime)
    width, height, fps, vx = 640, 480, 30.0, 24.0
    fig_w, fig_h = 70, 180
    fig = Figure(x=20, y=200, vx=vx, vy=0, w=fig_w, h=fig_h, color=(0, 0, 0), sprite=walker)
    # Bouncing between the walls, the walker crosses the zone twice per round trip.
    period = 2 * (width - fig_w) / vx
    frames = int(np.ceil((stops + 1) / 2 * period)) + 10
    source = SyntheticSource(width, height, fps=fps, frames=frames, figures=[fig])
    zone = np.array([[320, 0], [430, 0], [430, height - 1], [320, height - 1]], np.float32)

    latencies: dict[int, float] = {}
    records: dict[int, FrameRecord] = {}
    got_all = threading.Event()
    lock = threading.Lock()

    def on_message(message: Message) -> None:
        now = time.monotonic_ns()
        with lock:
            if isinstance(message, Stop):
                latencies[message.frame] = (now - message.t_capture_ns) / 1e6
                if len(latencies) >= stops:
                    got_all.set()
            elif isinstance(message, FrameRecord):
                records[message.frame] = message

    with _loopback_mqtt(on_message, synchronous) as sink:
        app = SafetyZone("cell", zone, classes={0}, clear_frames=5)
        model = load_model("person", runtime=runtime, tiles=(1, 1), threads=threads)
        runtime_used = model.runner.name
        sensor = Sensor(source, model, [sink], sensor_id="bench", fps=None, apps=[app], emit_frames=True)
        t0 = time.perf_counter()
        try:
            sensor.run()  # paced at the source's 30 fps, like a camera; closes the sink at the end
        finally:
            model.close()
        seconds = time.perf_counter() - t0
        got_all.wait(5)

    with lock:
        lat = dict(latencies)
        recs = dict(records)
    result = SafetyStop(
        model="person",
        tiles=[1, 1],
        runtime=runtime_used,
        threads=threads,
        scene=f"{width}x{height} at {fps:.0f} fps (paced), walker {fig_w}x{fig_h} px at {vx:.0f} px/frame, "
        f"cut from vtest frame 60 box {box}",
        zone="x 320..430, full height; clear after 5 empty frames",
        frames=sensor.stats.frames_processed,
        dropped=sensor.stats.dropped,
        seconds=round(seconds, 1),
        stops_sent=app.stops,
        stops_received=len(lat),
        target_ms=STOP_TARGET_MS,
        outbox_synchronous=synchronous,
        transport=f"MqttSink (QoS 1, durable SQLite outbox, synchronous={synchronous.upper()}) -> Mosquitto on "
        "127.0.0.1 -> Consumer; frame records sent too, each before its frame's events",
    )
    if not lat:
        return result
    values = [lat[k] for k in sorted(lat)]
    result.latency = StopLatency(**msgspec.structs.asdict(spread(values)), n=len(values))
    result.within_target = round(sum(v <= STOP_TARGET_MS for v in values) / len(values), 3)
    # The breakdown from each stop frame's record: capture to the app's event on the sensor,
    # and the rest (outbox commit, publish, broker, subscriber) for delivery.
    parts: dict[str, list[float]] = {k: [] for k in ("queue", "isp", "infer", "decode", "apps", "sensor", "delivery")}
    for frame, ms in lat.items():
        rec = recs.get(frame)
        if rec is None:
            continue
        t = rec.timings_ms
        sensor_ms = t.total - t.read  # t_capture_ns is taken once the frame is read
        for name, v in (("queue", t.queue), ("isp", t.isp), ("infer", t.infer), ("decode", t.decode)):
            parts[name].append(v)
        parts["apps"].append(t.apps)
        parts["sensor"].append(sensor_ms)
        parts["delivery"].append(ms - sensor_ms)
    if parts["sensor"]:
        result.breakdown = {k: spread(v) for k, v in parts.items()}
    return result


def bench_delivery(
    pairs: int, synchronous: Literal["full", "normal"] = "full", period_s: float = 1 / 30
) -> DeliveryRow:
    """The delivery half of part d alone, without a model: `MqttSink.write` of a frame's two
    messages (a record-sized message, then a `stop`) every `period_s`, to a `Consumer` through
    Mosquitto; `monotonic_ns` at the subscriber minus at `write`. What the outbox's commit, the
    publish, the broker and the subscriber cost, apart from the inference sharing the cores."""
    if mosquitto_path() is None:
        raise FileNotFoundError("mosquitto not found (scripts/install-system-deps.sh installs it)")
    from ivs.events import Stop

    latencies: list[float] = []
    lock = threading.Lock()

    def on_message(message: Message) -> None:
        now = time.monotonic_ns()
        if isinstance(message, Stop) and message.app == "cell":
            with lock:
                latencies.append((now - message.t_capture_ns) / 1e6)

    def stop(seq: int, app: str, t_ns: int, boxes: int) -> Stop:
        return Stop(
            sensor_id="bench", seq=seq, frame=seq // 2, time=time.time(), t_capture_ns=t_ns, t_source=0.0,
            app=app, objects=boxes, labels=["person"] * boxes, boxes=[(10.0, 20.0, 80.0, 200.0)] * boxes,
        )  # fmt: skip

    with _loopback_mqtt(on_message, synchronous) as sink:
        t0 = time.monotonic()
        for i in range(pairs):
            delay = t0 + i * period_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t_ns = time.monotonic_ns()
            sink.write(stop(2 * i + 1, "record", t_ns, 12))  # about a frame record's size (~800 B)
            sink.write(stop(2 * i + 2, "cell", t_ns, 1))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if len(latencies) >= pairs:
                    break
            time.sleep(0.02)
        sink.close(5)
    with lock:
        values = list(latencies)
    out = DeliveryRow(synchronous=synchronous, pairs=pairs, received=len(values))
    if values:
        s = spread(values)
        out.p50_ms, out.p99_ms, out.max_ms = s.p50_ms, s.p99_ms, s.max_ms
        out.within_target = round(sum(v <= STOP_TARGET_MS for v in values) / len(values), 3)
    return out
