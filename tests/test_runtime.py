"""Runners: each engine runs the zoo where it can read the format; auto keeps the fastest."""

from __future__ import annotations

import logging
import re

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
        model = load_model("classifier", runtime="auto")
    timings = dict(re.findall(r"runtime auto: (\w+) ([\d.]+) ms", caplog.text))
    assert set(timings) == {"onnxruntime", "openvino"}
    fastest = min(timings, key=lambda k: float(timings[k]))
    assert model.runner.name == fastest
    model.close()


def test_litert_refuses_onnx_with_the_reason():
    with pytest.raises(ModelError, match="runtime 'litert' cannot run this model: it cannot read onnx models"):
        load_model("person", runtime="litert")
