"""The sensor's Prometheus metrics, read from its counters when scraped (nothing per frame).

ivs run --config sensor.yaml --metrics-port 9108      # then scrape http://127.0.0.1:9108/metrics
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ivs.sensor import STAGES, Sensor


class SensorCollector(Collector):
    """Frames, drops, fps, stage latencies, events, bytes, and each sink's outbox."""

    def __init__(self, sensor: Sensor) -> None:
        self.sensor = sensor

    def collect(self) -> Iterator[Metric]:
        s, st = self.sensor, self.sensor.stats
        labels = ["sensor"]
        sid = [s.sensor_id]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric(sid, value)
            return c

        yield counter("ivs_sensor_frames_read", "Frames read from the source.", st.frames_read)
        yield counter("ivs_sensor_frames_processed", "Frames the model ran on.", st.frames_processed)
        yield counter("ivs_sensor_frames_dropped", "Frames dropped because the model was busy.", st.dropped)
        yield counter("ivs_sensor_events", "Events the apps sent.", s.events)
        yield counter("ivs_sensor_metadata_bytes", "Bytes of metadata sent (JSON).", s.metadata_bytes)
        yield counter("ivs_sensor_raw_frame_bytes", "Bytes of the frames read, as raw RGB.", s.raw_bytes)
        fps = GaugeMetricFamily("ivs_sensor_fps", "Frames processed per second, recent.", labels=labels)
        fps.add_metric(sid, st.recent_fps())
        yield fps
        stage = GaugeMetricFamily(
            "ivs_sensor_stage_ms",
            "Per-frame stage time in ms (quantile over the run).",
            labels=[*labels, "stage", "quantile"],
        )
        for name in STAGES:
            for q, quantile in ((50, "0.5"), (99, "0.99")):
                stage.add_metric([s.sensor_id, name, quantile], st.percentile(name, q))
        yield stage
        m = s.model.manifest
        info = GaugeMetricFamily(
            "ivs_sensor_model_info", "The model running now.", labels=[*labels, "model", "version", "runtime"]
        )
        info.add_metric([s.sensor_id, m.name, m.version, s.model.runner.name], 1)
        yield info
        depth = GaugeMetricFamily(
            "ivs_sensor_outbox_depth", "Messages waiting in a sink's outbox.", labels=[*labels, "sink"]
        )
        shed = CounterMetricFamily(
            "ivs_sensor_outbox_shed", "Messages shed from a full outbox.", labels=[*labels, "sink"]
        )
        rejected = CounterMetricFamily(
            "ivs_sensor_sink_rejected", "Batches or messages a receiver refused.", labels=[*labels, "sink"]
        )
        lost = CounterMetricFamily(
            "ivs_sensor_outbox_write_failures",
            "Messages lost because the outbox could not store them (a full disk).",
            labels=[*labels, "sink"],
        )
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


def serve_metrics(sensor: Sensor, port: int, host: str = "127.0.0.1") -> Any:
    """Serve /metrics for `sensor` on host:port from a background thread; returns the server
    (`.shutdown()` and `.server_close()` stop it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SensorCollector(sensor))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
