"""The sensor's Prometheus /metrics, scraped over HTTP while it runs."""

from __future__ import annotations

import threading
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from ivs.metrics import serve_metrics
from ivs.model import load_model
from ivs.outbox import Outbox
from ivs.sensor import Sensor
from ivs.sinks.http import HttpSink
from ivs.sources.synthetic import SyntheticSource
from tests.broker import free_port
from tests.waiting import wait_for


def scrape(port: int) -> dict[str, list]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_metrics_while_running(tmp_path):
    model = load_model("classifier", runtime="onnxruntime")
    # A sink whose receiver is down: its outbox fills, and the metrics say so.
    sink = HttpSink("m1", Outbox(tmp_path / "o.sqlite"), f"http://127.0.0.1:{free_port()}/x", max_backoff_s=1)
    sensor = Sensor(SyntheticSource(160, 120, fps=30), model, [sink], sensor_id="m1")
    port = free_port()
    server = serve_metrics(sensor, port)
    runner = threading.Thread(target=sensor.run)
    runner.start()
    try:
        wait_for(lambda: sensor.stats.frames_processed >= 20, what="20 frames processed")
        m = scrape(port)
    finally:
        sensor.stop()
        runner.join(timeout=30)
        server.shutdown()
        server.server_close()
        model.close()
    processed = m["ivs_sensor_frames_processed"][0]
    assert processed.labels == {"sensor": "m1"} and processed.value >= 20
    assert m["ivs_sensor_fps"][0].value > 0
    stages = {(s.labels["stage"], s.labels["quantile"]) for s in m["ivs_sensor_stage_ms"]}
    assert ("infer", "0.5") in stages and ("total", "0.99") in stages
    info = m["ivs_sensor_model_info"][0].labels
    assert info["model"] == "classifier" and info["runtime"] == "onnxruntime"
    assert m["ivs_sensor_outbox_depth"][0].value >= 20  # nothing delivered: the receiver is down
    assert m["ivs_sensor_metadata_bytes"][0].value > 0
