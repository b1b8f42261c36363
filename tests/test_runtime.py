"""Runners: each engine runs the zoo where it can read the format; auto keeps the fastest."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from ivs.errors import ModelError
from ivs.model import load_model


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("name", ["person", "classifier", "coco", "face", "mobilenet-v1"])
def test_every_zoo_model_runs_on_both_onnx_runtimes(name: str, runtime: str):
    model = load_model(name, runtime=runtime)
    assert model.runner.name == runtime
    det = model(np.full((240, 320, 3), 128, np.uint8))
    assert det.xyxy.shape[1] == 4
    model.close()


def test_runtimes_agree_on_a_real_image():
    from skimage import data

    img = np.ascontiguousarray(data.astronaut())
    a = load_model("face", runtime="onnxruntime")(img)
    b = load_model("face", runtime="openvino")(img)
    assert len(a) == len(b) == 1
    assert np.abs(a.xyxy - b.xyxy).max() < 3.0


def test_auto_times_each_runtime_and_keeps_the_fastest(caplog):
    with caplog.at_level(logging.INFO, logger="ivs.runtime"):
        model = load_model("classifier", runtime="auto", retime=True)
    assert model.choice is not None and not model.choice.remembered
    timings = model.choice.medians_ms
    assert set(timings) == {"onnxruntime", "openvino"}
    assert model.runner.name == model.choice.runtime == min(timings, key=lambda k: timings[k])
    assert f"runtime auto: {model.runner.name} (timed now:" in caplog.text
    model.close()


def test_auto_remembers_its_choice_per_network_and_machine(tmp_path, monkeypatch):
    """The same command twice gets the same runtime: the second load takes the remembered one
    without timing (whatever the load on the machine then); --retime times again."""
    monkeypatch.setenv("IVS_CACHE_DIR", str(tmp_path))
    first = load_model("classifier", runtime="auto")
    assert first.choice is not None and not first.choice.remembered
    saved = json.loads((tmp_path / "runtime-choice.json").read_text())
    ((key, entry),) = saved.items()
    assert entry["runtime"] == first.runner.name and set(entry["medians_ms"]) == {"onnxruntime", "openvino"}
    assert f":t{2}:" in key and "onnxruntime=" in key and "openvino=" in key
    # Another runtime written in as the remembered one is what the next load takes: no timing.
    other = {"onnxruntime": "openvino", "openvino": "onnxruntime"}[first.runner.name]
    (tmp_path / "runtime-choice.json").write_text(json.dumps({key: {**entry, "runtime": other}}))
    second = load_model("classifier", runtime="auto")
    assert second.choice is not None and second.choice.remembered
    assert second.runner.name == other and "remembered from" in second.choice.describe()
    third = load_model("classifier", runtime="auto", retime=True)
    assert third.choice is not None and not third.choice.remembered
    for m in (first, second, third):
        m.close()


def test_an_unreadable_choice_file_costs_a_timing_not_the_load(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("IVS_CACHE_DIR", str(tmp_path))
    (tmp_path / "runtime-choice.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="ivs.runtime"):
        model = load_model("classifier", runtime="auto")
    assert model.choice is not None and not model.choice.remembered
    assert "ignoring" in caplog.text and "timed again" in caplog.text
    assert json.loads((tmp_path / "runtime-choice.json").read_text())  # rewritten whole
    model.close()


def test_litert_refuses_onnx_with_the_reason():
    with pytest.raises(ModelError, match="runtime 'litert' cannot run this model: it cannot read onnx models"):
        load_model("person", runtime="litert")


def test_auto_includes_litert_for_a_tflite_package(caplog):
    """face-litert is TFLite: LiteRT and OpenVINO both read it, and auto times both."""
    model = load_model("face-litert", runtime="auto", retime=True)
    assert model.choice is not None
    timings = model.choice.medians_ms
    assert set(timings) == {"litert", "openvino"}
    assert model.runner.name == min(timings, key=lambda k: timings[k])
    model.close()
    with pytest.raises(ModelError, match="runtime 'onnxruntime' cannot run this model: it cannot read tflite"):
        load_model("face-litert", runtime="onnxruntime")


def test_ivs_run_on_litert_finds_the_faces_of_real_images(media, tmp_path):
    """`ivs run --runtime litert` with the int8 TFLite package: the astronaut's face and Messi's
    (a crop of messi5.jpg: in the whole frame his face is too small for the short-range model),
    where the fp32 model puts them (zoo/face/README.md: [179, 81, 272, 174] and [73, 98, 109, 134])."""
    import json
    import subprocess
    import sys

    import cv2
    from skimage import data

    from ivs.bench.layouts import match

    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_astronaut.png"), np.ascontiguousarray(data.astronaut()[..., ::-1]))
    cv2.imwrite(str(folder / "b_messi5_crop.png"), cv2.imread(str(media / "messi5.jpg"))[0:200, 150:400])
    out = tmp_path / "m.jsonl"
    args = ["run", "--source", str(folder), "--model", "face-litert", "--runtime", "litert", "--fps", "0"]
    r = subprocess.run(
        [sys.executable, "-m", "ivs", *args, "--out", str(out), "-q"], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    fp32 = [[179, 81, 272, 174], [73, 98, 109, 134]]
    for rec, want in zip(records, fp32, strict=True):
        assert rec["model"] == {"name": "face-litert", "version": "1.0.0", "task": "face", "runtime": "litert"}
        assert [d["label"] for d in rec["detections"]] == ["face"]
        box = np.array([rec["detections"][0]["box"]], np.float32)
        assert len(match(np.array([want], np.float32), box, 0.8)) == 1, (box, want)
        assert rec["detections"][0]["score"] > 0.75


def test_the_gpu_runtime_is_skipped_without_a_gpu_and_refused_with_the_reason():
    from ivs.errors import ModelError
    from ivs.model import load_model
    from ivs.runtime import _ort_providers, available

    if "CUDAExecutionProvider" in _ort_providers():
        pytest.skip("a GPU is here: test_the_gpu_runtime_answers_as_the_cpu runs it")
    assert "onnxruntime-cuda" not in available("onnx")  # auto never times it here
    with pytest.raises(ModelError, match=r"no CUDAExecutionProvider here \(it needs onnxruntime-gpu"):
        load_model("face", runtime="onnxruntime-cuda")


@pytest.mark.hardware
def test_the_gpu_runtime_answers_as_the_cpu(media):
    import cv2

    from ivs.model import load_model
    from ivs.runtime import _ort_providers

    if "CUDAExecutionProvider" not in _ort_providers():
        pytest.skip("no CUDA execution provider here (onnxruntime-gpu and an NVIDIA GPU)")
    pixels = cv2.cvtColor(cv2.imread(str(media / "messi5.jpg")), cv2.COLOR_BGR2RGB)
    cpu, gpu = load_model("person", runtime="onnxruntime"), load_model("person", runtime="onnxruntime-cuda")
    a, b = cpu(pixels), gpu(pixels)
    assert gpu.runner.name == "onnxruntime-cuda" and len(a) == len(b)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=2.0)
