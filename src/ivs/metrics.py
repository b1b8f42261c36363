"""The sensor's Prometheus metrics, read from its counters when scraped (nothing per frame).

ivs run --config sensor.yaml --metrics-port 9108      # then scrape http://127.0.0.1:9108/metrics
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ivs.sensor import STAGES, Sensor


class SensorCollector(Collector):
    """Frames, drops, fps, stage latencies, events, bytes, and each sink's outbox, of every
    sensor `sensors()` returns (one for `ivs run`, a node's for `ivs node`), labelled by id."""

    def __init__(self, sensors: Callable[[], Sequence[Sensor]]) -> None:
        self.sensors = sensors

    def collect(self) -> Iterator[Metric]:
        sensors = list(self.sensors())
        labels = ["sensor"]

        def counter(name: str, doc: str, value: Callable[[Sensor], float]) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=labels)
            for s in sensors:
                c.add_metric([s.sensor_id], value(s))
            return c

        yield counter("ivs_sensor_frames_read", "Frames read from the source.", lambda s: s.stats.frames_read)
        yield counter("ivs_sensor_frames_processed", "Frames the model ran on.", lambda s: s.stats.frames_processed)
        yield counter(
            "ivs_sensor_frames_dropped", "Frames dropped because the model was busy.", lambda s: s.stats.dropped
        )
        yield counter(
            "ivs_sensor_frames_late",
            "Paced frames captured a frame period or more after their time (behind the source's clock).",
            lambda s: s.stats.late,
        )
        yield counter("ivs_sensor_events", "Events the apps sent.", lambda s: s.events)
        yield counter("ivs_sensor_metadata_bytes", "Bytes of metadata sent (JSON).", lambda s: s.metadata_bytes)
        yield counter("ivs_sensor_raw_frame_bytes", "Bytes of the frames read, as raw RGB.", lambda s: s.raw_bytes)
        fps = GaugeMetricFamily("ivs_sensor_fps", "Frames processed per second, recent.", labels=labels)
        stage = GaugeMetricFamily(
            "ivs_sensor_stage_ms",
            "Per-frame stage time in ms (quantile over the run).",
            labels=[*labels, "stage", "quantile"],
        )
        info = GaugeMetricFamily(
            "ivs_sensor_model_info", "The model running now.", labels=[*labels, "model", "version", "runtime"]
        )
        for s in sensors:
            fps.add_metric([s.sensor_id], s.stats.recent_fps())
            for name in STAGES:
                for q, quantile in ((50, "0.5"), (99, "0.99")):
                    stage.add_metric([s.sensor_id, name, quantile], s.stats.percentile(name, q))
            m = s.model.manifest
            info.add_metric([s.sensor_id, m.name, m.version, s.model.runner.name], 1)
        yield fps
        yield stage
        yield info
        yield from _outboxes(sensors)


def _outboxes(sensors: Sequence[Sensor]) -> Iterator[Metric]:
    labels = ["sensor", "sink"]
    depth = GaugeMetricFamily("ivs_sensor_outbox_depth", "Messages waiting in a sink's outbox.", labels=labels)
    shed = CounterMetricFamily("ivs_sensor_outbox_shed", "Messages shed from a full outbox.", labels=labels)
    rejected = CounterMetricFamily("ivs_sensor_sink_rejected", "Batches or messages a receiver refused.", labels=labels)
    lost = CounterMetricFamily(
        "ivs_sensor_outbox_write_failures",
        "Messages lost because the outbox could not store them (a full disk).",
        labels=labels,
    )
    for s in sensors:
        for i, sink in enumerate(s.sinks):
            box: Any = getattr(sink, "outbox", None)
            if box is None:
                continue
            name = f"{type(sink).__name__}#{i}"
            depth.add_metric([s.sensor_id, name], box.depth())
            shed.add_metric([s.sensor_id, name], box.shed)
            rejected.add_metric([s.sensor_id, name], float(getattr(sink, "rejected", 0)))
            # Lost where the write failed: in the sensor's loop, or in a sink that commits on its own thread.
            lost.add_metric([s.sensor_id, name], s.messages_lost.get(i, 0) + int(getattr(sink, "lost", 0)))
    yield depth
    yield shed
    yield rejected
    yield lost


def serve_metrics(sensor: Sensor, port: int, host: str = "127.0.0.1", *extra: Collector) -> Any:
    """Serve /metrics for `sensor` on host:port from a background thread; returns the server
    (`.shutdown()` and `.server_close()` stop it)."""
    return serve_collectors(port, host, SensorCollector(lambda: [sensor]), *extra)


def serve_collectors(port: int, host: str, *collectors: Collector) -> Any:
    """Serve /metrics from these collectors on host:port (a background thread); the server."""
    registry = CollectorRegistry(auto_describe=False)
    for c in collectors:
        registry.register(c)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
