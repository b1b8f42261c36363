"""The IMX500 path: picamera2's metadata layout, the replay of recorded sensor output through the
same decoder, tracker and apps as the CPU path, its errors, and the AI Camera itself (hardware)."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from ivs import decode
from ivs.apps.line import LineCounter
from ivs.apps.zone import Zone
from ivs.errors import ModelError, SourceError
from ivs.events import Event
from ivs.imx500.model import SensorModel, from_package, load_sensor_model, sensor_region
from ivs.imx500.recording import read_recording, record, write_recording
from ivs.imx500.source import NO_PICAMERA2, ReplaySource, SensorFrame
from ivs.imx500.tensors import (
    flatten_outputs,
    pack_output_tensor_info,
    parse_kpi,
    parse_output_tensor_info,
    split_outputs,
)
from ivs.isp import InputSpec, Isp, Roi
from ivs.model import load_model
from ivs.package.reader import read_package
from ivs.package.zoo import resolve
from ivs.records import FrameRecord
from ivs.sensor import Sensor
from ivs.sources import Source, open_source
from ivs.track import ByteTracker
from tests.conftest import DATA

COUNTS = json.loads((DATA / "vtest_counts.json").read_text())
ZONE = json.loads((DATA / "vtest_zone.json").read_text())
FRAMES = 240  # vtest frames 0-239: eight hand-counted crossings of the line


def hand_built_info(name: bytes, tensors: list[tuple[int, ...]], max_tensors: int, max_dims: int) -> bytes:
    """The C struct written field by field, independently of `pack_output_tensor_info`."""
    out = name + b"\0" * (64 - len(name)) + len(tensors).to_bytes(4, "little")
    for dims in tensors:
        out += int(np.prod(dims)).to_bytes(4, "little") + len(dims).to_bytes(4, "little")
        out += b"".join(d.to_bytes(2, "little") for d in dims) + b"\0\0" * (max_dims - len(dims))
    return out + b"\0" * ((8 + 2 * max_dims) * (max_tensors - len(tensors)))


@pytest.mark.parametrize(("max_tensors", "max_dims", "size"), [(16, 16, 708), (8, 8, 260)])
def test_tensor_info_parses_both_libcamera_layouts(max_tensors: int, max_dims: int, size: int) -> None:
    raw = hand_built_info(b"ssd_mobilenetv2_fpnlite", [(4, 100), (100,), (100,), (1,)], max_tensors, max_dims)
    assert len(raw) == size
    info = parse_output_tensor_info(raw)
    assert info.network_name == "ssd_mobilenetv2_fpnlite"
    assert [t.dims for t in info.tensors] == [(4, 100), (100,), (100,), (1,)]
    assert [t.data_num for t in info.tensors] == [400, 100, 100, 1]
    assert info.total == 601
    # picamera2 hands the struct over as bytes or as a list of byte values: both parse.
    assert parse_output_tensor_info(list(raw)) == info
    assert pack_output_tensor_info(info.network_name, [t.dims for t in info.tensors], (max_tensors, max_dims)) == raw


def test_tensors_reshape_first_dimension_fastest_as_picamera2_does() -> None:
    info = parse_output_tensor_info(hand_built_info(b"n", [(2, 3), (2,)], 16, 16))
    first, second = split_outputs(np.arange(8, dtype=np.float32), info)
    # Fortran order: element [i, j] is value i + 2 * j.
    assert first.tolist() == [[[0, 2, 4], [1, 3, 5]]]
    assert second.tolist() == [[6, 7]]
    # A network's batch-1 outputs survive the round trip through the layout unchanged.
    rng = np.random.default_rng(0)
    outputs = [rng.standard_normal((1, 1917, 4)).astype(np.float32), rng.standard_normal((1, 1917, 2), np.float32)]
    flat, dims = flatten_outputs(outputs)
    back = split_outputs(flat, parse_output_tensor_info(pack_output_tensor_info("person", dims)))
    assert all(np.array_equal(a, b) for a, b in zip(outputs, back, strict=True))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\0" * 100, "100 bytes; expected 708 (16 tensors x 16 dims) or 260"),
        (hand_built_info(b"n", [], 16, 16), "0 tensors; expected 1 to 16"),
        (hand_built_info(b"n", [(0, 4)], 16, 16), "zero dimension"),
        (b"\0" * 64 + struct.pack("<III", 1, 1, 17) + b"\0" * 632, "17 dimensions; expected 1 to 16"),
        ("not bytes", "expected bytes or a sequence of byte values, got str"),
    ],
)
def test_malformed_tensor_info_is_refused_with_the_reason(raw: Any, message: str) -> None:
    with pytest.raises(SourceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_output_tensor_info(raw)


def test_tensor_values_must_match_the_info() -> None:
    info = parse_output_tensor_info(hand_built_info(b"net", [(4, 10)], 16, 16))
    with pytest.raises(SourceError, match=r"39 values; expected 40 for the tensors \(4, 10\)"):
        split_outputs(np.zeros(39, np.float32), info)


def test_kpi_in_both_picamera2_forms() -> None:
    assert parse_kpi(struct.pack("<II", 6200, 1500)) == parse_kpi((6200, 1500))
    kpi = parse_kpi([6200, 1500])
    assert (kpi.dnn_ms, kpi.dsp_ms) == (6.2, 1.5)
    with pytest.raises(SourceError, match="CnnKpiInfo: 4 bytes; expected 8"):
        parse_kpi(b"\0" * 4)
    with pytest.raises(SourceError, match="two non-negative integers"):
        parse_kpi([1.5, 2.0, 3.0])


@pytest.mark.parametrize("resize", ["stretch", "crop"])
@pytest.mark.parametrize("roi", [None, Roi(100, 40, 500, 300)])
def test_sensor_region_maps_boxes_as_the_cpu_isp_does(resize: str, roi: Roi | None) -> None:
    spec = InputSpec(name="x", width=300, height=200, layout="NHWC", resize=resize)  # type: ignore[arg-type]
    cpu = Isp(spec, roi).process(np.zeros((576, 768, 3), np.uint8)).box_map
    x, y, w, h = sensor_region(spec, roi, 768, 576)
    assert (cpu.origin_x, cpu.origin_y) == (x, y)
    assert (cpu.scale_x, cpu.scale_y) == (300 / w, 200 / h)


def test_letterbox_packages_are_refused() -> None:
    with pytest.raises(ModelError, match="cannot letterbox"):
        load_sensor_model("face")


class Collect:
    def __init__(self) -> None:
        self.records: list[FrameRecord] = []
        self.events: list[Event] = []

    def write(self, message: Any) -> None:
        (self.records if isinstance(message, FrameRecord) else self.events).append(message)

    def close(self) -> None:
        pass


def apps() -> list[Any]:
    (x1, y1), (x2, y2) = COUNTS["line"]["p1"], COUNTS["line"]["p2"]
    line = LineCounter("line", (x1, max(y1, y2)), (x2, min(y1, y2)), classes={0})
    return [line, Zone("zone", np.array(ZONE["polygon"], np.float32), classes={0})]


def comparable(message: msgspec.Struct) -> dict[str, Any]:
    """A message without what depends on when it ran (wall time, monotonic clock) or on which path."""
    doc = msgspec.to_builtins(message)
    for key in ("time", "t_capture_ns", "timings_ms", "source", "model"):
        doc.pop(key, None)
    return doc  # type: ignore[no-any-return]


def run_path(source: Any, model: Any) -> Collect:
    sink = Collect()
    # The sensor path has no pixels, so the tracker's colour cue is off on both paths.
    tracker = ByteTracker(appearance_weight=0)
    Sensor(source, model, [sink], fps=0, apps=apps(), tracker=tracker, max_frames=FRAMES).run()
    return sink


@pytest.fixture(scope="module")
def recording(vtest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vtest through the person package on the CPU, its outputs written in picamera2's layout."""
    path = tmp_path_factory.mktemp("imx500") / "person-vtest.npz"
    model = load_model("person", runtime="onnxruntime", tiles=(1, 1))
    try:
        assert record(model, open_source(str(vtest)), path, max_frames=FRAMES) == FRAMES
    finally:
        model.close()
    return path


@pytest.fixture(scope="module")
def cpu_run(vtest: Path) -> Collect:
    """The CPU path on the clip (one region, no tiles): what every replay must reproduce."""
    cpu_model = load_model("person", runtime="onnxruntime", tiles=(1, 1))
    try:
        return run_path(open_source(str(vtest)), cpu_model)
    finally:
        cpu_model.close()


@pytest.mark.slow
def test_replayed_sensor_output_gives_the_cpu_paths_detections_and_events(recording: Path, cpu_run: Collect) -> None:
    """What this proves: a layout round trip. The CPU path's own outputs, written in picamera2's
    layout and read back, give exactly the CPU path's detections, tracks and events. It cannot
    show that the layout is the one a real sensor writes (the writer and the reader are both
    ours): `test_hand_written_sensor_tensors_give_the_hand_worked_detections` checks that, from
    values written by hand as picamera2 documents them, and the AI Camera test on the hardware."""
    rec = read_recording(recording)
    assert (rec.width, rec.height, len(rec)) == (768, 576, FRAMES)
    assert rec.infos.shape == (FRAMES, 708)  # libcamera's current struct
    assert rec.header["output_roles"] == ["boxes", "scores"]

    cpu = cpu_run
    sensor = run_path(open_source(f"imx500-replay:{recording}"), load_sensor_model("person"))

    counts = [e for e in cpu.events if getattr(e, "direction", None)]
    zone = [e for e in cpu.events if e.app == "zone"]
    print(f"{FRAMES} frames: {sum(len(r.detections) for r in cpu.records)} detections, "
          f"{len(counts)} counts, {len(zone)} zone events")  # fmt: skip
    assert counts and zone, "the clip must exercise both apps for the comparison to mean anything"
    assert [comparable(e) for e in sensor.events] == [comparable(e) for e in cpu.events]
    assert [comparable(r) for r in sensor.records] == [comparable(r) for r in cpu.records]

    # Each record names the path and carries the timings the sensor reported for its frame.
    first = sensor.records[0]
    assert first.model.runtime == "imx500" and cpu.records[0].model.runtime == "onnxruntime"
    assert first.timings_ms.sensor_dnn == round(int(rec.kpis[0, 0]) / 1000, 3)
    assert first.timings_ms.sensor_dsp == round(int(rec.kpis[0, 1]) / 1000, 3)
    assert cpu.records[0].timings_ms.sensor_dnn is None


PP_ROLES = ["boxes", "scores", "classes", "count"]
PP_ROWS = 100  # the zoo's SSD _pp networks give 100 rows, padded past `count`


def postprocessed(recording: Path, out: Path, layout: str) -> Path:
    """The recording as a network with on-chip NMS would have sent it: each frame's raw SSD
    outputs (from the real CPU run) decoded by the package's own decoder, its detections written
    as boxes / scores / classes / count in picamera2's layout. layout "yxyx-normalized" is the
    SSD and EfficientDet _pp networks'; "xyxy-pixels" the YOLO ones' (input pixels, x first)."""
    rec = read_recording(recording)
    package = read_package(resolve("person"))
    m = package.manifest
    ctx = decode.DecodeContext(m.input.width, m.input.height, package.assets())
    size = np.array([m.input.width, m.input.height] * 2, np.float32)

    def rows() -> Any:
        for i in range(len(rec)):
            md = rec.metadata(i)
            raw = split_outputs(md["CnnOutputTensor"], parse_output_tensor_info(md["CnnOutputTensorInfo"]))
            det = decode.get("ssd")(dict(zip(rec.header["output_roles"], raw, strict=True)), m.decoder.params, ctx)
            n = len(det)
            assert n <= PP_ROWS
            boxes = np.zeros((1, PP_ROWS, 4), np.float32)
            boxes[0, :n] = det.xyxy if layout == "xyxy-pixels" else (det.xyxy / size)[:, [1, 0, 3, 2]]
            scores = np.zeros((1, PP_ROWS), np.float32)
            scores[0, :n] = det.confidence
            classes = np.zeros((1, PP_ROWS), np.float32)
            classes[0, :n] = det.class_id  # COCO class 0 is "person", as in the zoo's labels
            flat, dims = flatten_outputs([boxes, scores, classes, np.array([[n]], np.float32)])
            yield {
                **md,
                "CnnOutputTensor": flat,
                "CnnOutputTensorInfo": pack_output_tensor_info(f"person-pp-{layout}", dims),
                "index": int(rec.indices[i]),
                "pts": rec.frame_pts(i),
            }

    header = {k: v for k, v in rec.header.items() if k not in ("format", "frames")}
    write_recording(out, {**header, "network": f"person-pp-{layout}", "output_roles": PP_ROLES}, rows())
    return out


@pytest.mark.slow
def test_replayed_postprocessed_output_gives_the_cpu_paths_detections_and_events(
    recording: Path, cpu_run: Collect, tmp_path: Path
) -> None:
    # YOLO _pp layout, named by the package's runtime hint (what `ivs run --source imx500:...` uses).
    pixels = postprocessed(recording, tmp_path / "pixels.npz", "xyxy-pixels")
    package = read_package(resolve("person"))
    params = {"score_threshold": 0.35, "class_indices": [0]}
    hint = {"decoder": {"name": "postprocessed", "params": {**params, "box_order": "xyxy", "normalized": False}}}
    hinted = dataclasses.replace(
        package,
        manifest=package.manifest.model_copy(update={"runtime_hints": {"imx500": {**hint, "outputs": PP_ROLES}}}),
    )
    sensor = run_path(open_source(f"imx500-replay:{pixels}"), from_package(hinted))
    assert sum(len(r.detections) for r in sensor.records) > 0
    assert [comparable(e) for e in sensor.events] == [comparable(e) for e in cpu_run.events]
    assert [comparable(r) for r in sensor.records] == [comparable(r) for r in cpu_run.records]

    # SSD / EfficientDet _pp layout (the decoder's defaults), through the decoder override. Boxes
    # went through a division by the input size and back: equal to the CPU's within a float32
    # rounding, so within one 0.1-pixel step of the record's rounding.
    normalized = postprocessed(recording, tmp_path / "normalized.npz", "yxyx-normalized")
    model = load_sensor_model("person", decoder={"name": "postprocessed", "params": params}, output_roles=PP_ROLES)
    sensor = run_path(open_source(f"imx500-replay:{normalized}"), model)
    assert [comparable(e) for e in sensor.events] == [comparable(e) for e in cpu_run.events]
    assert len(sensor.records) == len(cpu_run.records) == FRAMES
    for got, want in zip(sensor.records, cpu_run.records, strict=True):
        assert [(d.class_id, d.score, d.track_id) for d in got.detections] == [
            (d.class_id, d.score, d.track_id) for d in want.detections
        ], got.frame
        np.testing.assert_allclose(
            [d.box for d in got.detections], [d.box for d in want.detections], atol=0.1 + 1e-6, rtol=0
        )


def test_ivs_run_replays_a_recording(tmp_path: Path, recording: Path) -> None:
    out = tmp_path / "out.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "ivs", "run", "--source", f"imx500-replay:{recording}", "--model", "person",
         "--fps", "0", "--max-frames", "20", "--out", str(out), "-q"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 20
    assert {line["model"]["runtime"] for line in lines} == {"imx500"}
    assert all(line["timings_ms"]["sensor_dnn"] > 0 for line in lines)
    assert "sensor_dnn" in r.stderr  # the summary table shows the sensor's own timing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "image"], "expected metadata (the sensor path never reads the image stream)"),
        (["--tiles", "2x1"], "the sensor runs one region per frame"),
        (["--classify-with", "mask"], "a second stage needs pixels"),
    ],
)
def test_ivs_run_refuses_what_the_sensor_cannot_do(recording: Path, args: list[str], message: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "ivs", "run", "--source", f"imx500-replay:{recording}", "--model", "person", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2
    assert message in " ".join(r.stderr.split())


def test_camera_source_without_picamera2_says_where_it_runs(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found: expected the .rpk"):
        open_source(f"imx500:{tmp_path / 'missing.rpk'}")
    rpk = tmp_path / "network.rpk"
    rpk.write_bytes(b"\0" * 64)
    if _has_picamera2():
        pytest.skip("picamera2 is installed here: the camera itself is tested by test_ai_camera")
    with pytest.raises(SourceError) as err:
        open_source(f"imx500:{rpk}")
    assert str(err.value) == NO_PICAMERA2


def test_network_with_other_outputs_than_the_package_is_refused(recording: Path) -> None:
    frame = next(iter(ReplaySource(recording).frames()))
    model = load_sensor_model("classifier")
    with pytest.raises(ModelError, match=r"gives 2 output tensors .*package classifier expects 1: logits"):
        model.infer(model.prepare_frame(frame))


def _write_npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


def test_bad_recordings_are_refused_with_the_reason(tmp_path: Path, recording: Path) -> None:
    with pytest.raises(SourceError, match="not found: expected an .npz"):
        ReplaySource(tmp_path / "none.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip")
    with pytest.raises(SourceError, match="not a readable .npz recording"):
        ReplaySource(junk)
    good = dict(np.load(recording, allow_pickle=False))
    partial = {k: v for k, v in good.items() if k != "CnnKpiInfo"}
    with pytest.raises(SourceError, match="no array CnnKpiInfo"):
        ReplaySource(_write_npz(tmp_path / "partial.npz", **partial))
    header = np.frombuffer(json.dumps({"format": "something/9"}).encode(), np.uint8)
    with pytest.raises(SourceError, match="format 'something/9'; expected 'ivs.imx500-recording/1'"):
        ReplaySource(_write_npz(tmp_path / "format.npz", **{**good, "header": header}))
    short = {**good, "CnnKpiInfo": good["CnnKpiInfo"][:-1]}
    with pytest.raises(
        SourceError, match=rf"CnnKpiInfo has shape \({FRAMES - 1}, 2\) uint32; expected \({FRAMES}, 2\)"
    ):
        ReplaySource(_write_npz(tmp_path / "short.npz", **short))
    # Values that do not fit the tensor info: refused at the frame, naming it.
    cut = {**good, "CnnOutputTensor": good["CnnOutputTensor"][:, :-1]}
    frame = next(iter(ReplaySource(_write_npz(tmp_path / "cut.npz", **cut)).frames()))
    with pytest.raises(SourceError, match=r"frame 0: CnnOutputTensor of 'person-1.0.0': 11501 values; expected 11502"):
        load_sensor_model("person").prepare_frame(frame)


# One frame of an SSD network with on-chip NMS, as picamera2's `capture_metadata()` hands it
# over, written by hand (not by ivs): CnnOutputTensor is every output's float32 values one
# after the other; CnnOutputTensorInfo lists each output's `size` with the first dimension
# varying fastest, so picamera2's `get_outputs` reshapes with order="F" and boxes of size
# (6, 4) come as all six y0, then all x0, then all y1, then all x1. Boxes are (y0, x0, y1, x1)
# fractions of the input (picamera2's demo: bbox_order "yx", no bbox_normalization).
HAND_ROWS = 6
HAND_TENSOR = [
    # boxes, size (6, 4): rows 1-6 of each coordinate in turn
    0.10, 0.50, 0.20, 0.30, 0.70, 0.00,  # y0
    0.25, 0.60, 0.05, 0.30, 0.70, 0.00,  # x0
    0.60, 0.90, 0.30, 0.50, 0.95, 0.00,  # y1
    0.40, 0.80, 0.15, 0.45, 0.95, 0.00,  # x1
    # scores, size (6,)
    0.91, 0.62, 0.80, 0.45, 0.99, 0.99,
    # classes, size (6,): COCO indices, 0 person, 2 car
    0.0, 0.0, 2.0, 0.0, 0.0, 0.0,
    # count, size (1,): rows 5 and 6 are padding (their 0.99 scores must not count)
    4.0,
]  # fmt: skip
HAND_DIMS = [(HAND_ROWS, 4), (HAND_ROWS,), (HAND_ROWS,), (1,)]
# Worked out by hand for a 640x480 picture and the person package (300x300 input, "stretch":
# the whole picture is scaled to the input, so a fraction of the input is that fraction of the
# picture), with score_threshold 0.5 and class_indices [0] (person only):
#   row 1: x 0.25*640 = 160, y 0.10*480 = 48, x 0.40*640 = 256, y 0.60*480 = 288; score 0.91
#   row 2: x 0.60*640 = 384, y 0.50*480 = 240, x 0.80*640 = 512, y 0.90*480 = 432; score 0.62
#   row 3: a car (class 2): not reported; row 4: score 0.45 < 0.5: dropped; rows 5-6: padding.
HAND_EXPECTED = [((160.0, 48.0, 256.0, 288.0), 0.91), ((384.0, 240.0, 512.0, 432.0), 0.62)]
# A second frame in the first AI Camera releases' 8x8 struct: one box past the input's corner,
# clipped to it: x 0.90*640 = 576, y 0.80*480 = 384, then x 1.0 -> 640, y 1.0 -> 480.
HAND_TENSOR_2 = [0.80, 0.0, 0.90, 0.0, 1.20, 0.0, 1.10, 0.0, 0.70, 0.0, 0.0, 0.0, 1.0]
HAND_EXPECTED_2 = [((576.0, 384.0, 640.0, 480.0), 0.7)]


class HandSource(Source):
    """Frames that are only picamera2-shaped metadata, as the AI Camera delivers them."""

    live = False
    fps = 30.0
    width, height = 640, 480
    id = "hand-written"
    expected_frames = 2

    def frames(self) -> Any:
        pp = b"ssd_mobilenetv2_fpnlite_320x320_pp"
        metadata = [
            {  # libcamera's current struct (16 tensors x 16 dims), handed over as a list of byte values
                "CnnOutputTensor": HAND_TENSOR,
                "CnnOutputTensorInfo": list(hand_built_info(pp, HAND_DIMS, 16, 16)),
                "CnnKpiInfo": (6200, 1500),
            },
            {  # the first releases' struct (8 x 8), as bytes, and the KPI as 8 bytes
                "CnnOutputTensor": HAND_TENSOR_2,
                "CnnOutputTensorInfo": hand_built_info(pp, [(2, 4), (2,), (2,), (1,)], 8, 8),
                "CnnKpiInfo": struct.pack("<II", 5000, 1000),
            },
        ]
        for i, md in enumerate(metadata):
            yield SensorFrame(np.zeros((0, 0, 3), np.uint8), i, 0, 0.0, self.id, i / 30, metadata=md, size=(640, 480))

    def close(self) -> None:
        pass


def test_hand_written_sensor_tensors_give_the_hand_worked_detections() -> None:
    model = load_sensor_model(
        "person",
        decoder={"name": "postprocessed", "params": {"score_threshold": 0.5, "class_indices": [0]}},
        output_roles=["boxes", "scores", "classes", "count"],
    )
    assert len(HAND_TENSOR) == sum(int(np.prod(d)) for d in HAND_DIMS)
    sink = Collect()
    Sensor(HandSource(), model, [sink], fps=0).run()
    got = [[(tuple(d.box), d.score) for d in r.detections] for r in sink.records]
    assert got == [HAND_EXPECTED, HAND_EXPECTED_2]
    assert all(d.label == "person" and d.class_id == 0 for r in sink.records for d in r.detections)
    assert [(r.timings_ms.sensor_dnn, r.timings_ms.sensor_dsp) for r in sink.records] == [(6.2, 1.5), (5.0, 1.0)]
    assert [r.model.runtime for r in sink.records] == ["imx500", "imx500"]


def test_sensor_model_takes_metadata_not_pixels() -> None:
    model = load_sensor_model("person")
    assert isinstance(model, SensorModel) and model.runner.name == "imx500"
    with pytest.raises(ModelError, match="reads frame metadata"):
        model.prepare(np.zeros((10, 10, 3), np.uint8))


def _has_picamera2() -> bool:
    import importlib.util

    return importlib.util.find_spec("picamera2") is not None


@pytest.mark.hardware
def test_ai_camera(tmp_path: Path) -> None:
    """On a Raspberry Pi with the AI Camera: the classifier exported by `ivs model export-imx500`
    and packaged by imx500-package (IVS_IMX500_NETWORK=path/to/network.rpk) runs on the sensor."""
    network = os.environ.get("IVS_IMX500_NETWORK")
    if not _has_picamera2():
        pytest.skip("picamera2 is not installed: no Raspberry Pi AI Camera here")
    if not network or not Path(network).is_file():
        pytest.skip("IVS_IMX500_NETWORK does not name the classifier's .rpk (see docs/imx500.md)")
    sink = Collect()
    try:
        source = open_source(f"imx500:{network}")
    except SourceError as err:
        pytest.skip(f"no AI Camera attached: {err}")
    Sensor(source, load_sensor_model("classifier"), [sink], max_frames=30).run()
    assert len(sink.records) == 30
    assert all(r.timings_ms.sensor_dnn and r.timings_ms.sensor_dnn > 0 for r in sink.records)
    assert all(len(r.detections) == 1 and r.detections[0].top_k for r in sink.records)


def oversized_package(tmp_path: Path) -> tuple[str, Path]:
    """A signed package whose budget report says it needs 9 + 1 MiB: more than the sensor has."""
    from ivs.package.signing import generate, load_private
    from ivs.package.writer import write_package
    from tests.test_package import fields, tiny_classifier

    ring = tmp_path / "ring"
    ring.mkdir()
    generate(tmp_path / "k.key")
    (tmp_path / "k.pub").rename(ring / "k.pub")
    model = tiny_classifier()
    doc = fields(model, name="big")
    doc["budget"].update(weight_bytes=9 * 2**20, peak_activation_bytes=2**20)
    path = tmp_path / "big.ivsm"
    write_package(path, doc, {"model.onnx": model}, load_private(tmp_path / "k.key"))
    return str(path), ring


@pytest.mark.parametrize(
    ("package", "message"),
    [
        ("oversized", "big does not fit the IMX500: its int8 weights 9.00 MiB + peak activations 1.00 MiB"),
        ("person", "person: no PyTorch source to quantize with Sony's Model Compression Toolkit"),
    ],
)
def test_export_refuses_what_the_sensor_cannot_take(tmp_path: Path, package: str, message: str) -> None:
    extra: list[str] = []
    if package == "oversized":
        package, ring = oversized_package(tmp_path)
        extra = ["--keyring", str(ring)]
    r = subprocess.run(
        [sys.executable, "-m", "ivs", "model", "export-imx500", package, "-o", str(tmp_path / "out"), *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert message in " ".join(r.stderr.split())
    assert not (tmp_path / "out").exists()  # nothing written
