"""The bandwidth ledger on the sample video with the counting app: metadata vs raw vs H.264."""

from __future__ import annotations

import io
from pathlib import Path

import av
import msgspec
import pytest

from ivs.apps.line import LineCounter
from ivs.events import Ledger
from ivs.model import load_model
from ivs.sensor import Sensor
from ivs.sinks.jsonl import JsonlSink
from ivs.sources import open_source


def h264_bytes(path: Path, crf: int = 23) -> int:
    """Size of the video re-encoded to H.264 (libx264, CRF 23: its default quality)."""
    out = io.BytesIO()
    with av.open(str(path)) as src, av.open(out, "w", format="mp4") as dst:
        stream = src.streams.video[0]
        enc = dst.add_stream("libx264", rate=stream.average_rate)
        enc.width, enc.height, enc.pix_fmt = stream.codec_context.width, stream.codec_context.height, "yuv420p"
        enc.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in src.decode(stream):
            for packet in enc.encode(frame.reformat(format="yuv420p")):
                dst.mux(packet)
        for packet in enc.encode():
            dst.mux(packet)
    return len(out.getvalue())


@pytest.mark.slow
def test_ledger_on_vtest_with_counting(vtest: Path, tmp_path: Path):
    out = tmp_path / "events.jsonl"
    model = load_model("person", runtime="onnxruntime")
    source = open_source(str(vtest))
    line = LineCounter("crossing", (340.0, 575.0), (340.0, 100.0), classes={0})
    sensor = Sensor(source, model, [JsonlSink(out)], fps=0, apps=[line], emit_frames=False, ledger_period_s=30.0)
    sensor.run()
    model.close()
    lines = out.read_bytes().splitlines()
    ledgers = [m for m in (msgspec.json.decode(x) for x in lines) if m["kind"] == "ledger"]
    assert len(ledgers) >= 2  # every 30 s of video, and the final one
    final = msgspec.json.decode(lines[-1], type=Ledger)
    assert final.frames == 795 and final.raw_bytes == 795 * 768 * 576 * 3
    assert final.compressed_bytes > 0.9 * vtest.stat().st_size  # the container's packets: nearly the whole file
    # metadata_bytes counts every message before the final ledger: exactly the bytes on disk
    # before its line (each line is the JSON of one message; the newlines are not counted).
    assert final.metadata_bytes == sum(len(x) for x in lines[:-1])
    h264 = h264_bytes(vtest)
    print(
        f"vtest, counting line: metadata {final.metadata_bytes:,} B, H.264 (crf 23) {h264:,} B "
        f"({h264 / final.metadata_bytes:,.0f}x), source MPEG-4 {final.compressed_bytes:,} B, "
        f"raw {final.raw_bytes:,} B ({final.raw_bytes / final.metadata_bytes:,.0f}x)"
    )
    assert final.metadata_bytes * 50 < h264
