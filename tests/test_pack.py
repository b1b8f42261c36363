"""`ivs model pack`: every source format, int8 calibration, the budget, signing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ivs.errors import PackageError
from ivs.model import load_model
from ivs.package.pack import pack
from ivs.package.reader import read_package
from ivs.package.signing import Keyring, generate, load_private
from tests.conftest import DATA
from tests.test_package import fields, tiny_classifier

TINY = DATA / "tiny"
REF = np.load(TINY / "reference.npz")
# (source, input name, output name) as each format names the same tensors.
SOURCES = {
    "savedmodel": (TINY / "saved_model", "image", "logits"),
    "frozen": (TINY / "tiny_frozen.pb", "image:0", "logits:0"),
    "tflite": (TINY / "tiny.tflite", "serving_default_image:0", "PartitionedCall:0"),
}


def spec_for(input_name: str, output_name: str) -> dict:
    return {
        "name": "tiny",
        "version": "1.0.0",
        "task": "classification",
        "input": {
            "name": input_name,
            "width": 32,
            "height": 32,
            "layout": "NHWC",
            "mean": [127.5] * 3,
            "std": [127.5] * 3,
        },
        "outputs": {"logits": output_name},
        "labels": ["a", "b", "c", "d"],
        "decoder": {"name": "classify", "params": {}},
    }


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(0)
    for i in range(16):
        cv2.imwrite(str(d / f"{i:02d}.png"), rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    return d


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    (d / "ring").mkdir()
    generate(d / "k.key")
    (d / "k.pub").rename(d / "ring" / "k.pub")
    return load_private(d / "k.key"), Keyring.load(d / "ring"), d


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_tensorflow_formats_pack_to_int8_openvino(kind, calibration, signer, tmp_path):
    key, ring, _ = signer
    src, iname, oname = SOURCES[kind]
    out = tmp_path / "tiny.ivsm"
    manifest = pack(src, spec_for(iname, oname), out, calibration=calibration, key=key)
    assert (manifest.model.format, manifest.model.precision) == ("openvino", "int8")
    assert manifest.budget is not None and manifest.budget.fits and manifest.budget.weight_bytes > 0
    pkg = read_package(out, ring)
    assert set(pkg.members) == {"model.xml", "model.bin"}
    model = load_model(out, keyring=ring, runtime="openvino")
    y = model.runner.run(REF["input"])[oname]
    ref = REF["logits"]
    # The same network, in int8: close to the float outputs, not equal.
    assert np.abs(y - ref).max() < 0.35 * np.abs(ref).max()
    assert np.corrcoef(y.ravel(), ref.ravel())[0, 1] > 0.9
    model.close()


def test_tflite_without_calibration_is_kept_for_litert(signer, tmp_path):
    key, ring, _ = signer
    src, iname, oname = SOURCES["tflite"]
    out = tmp_path / "t.ivsm"
    manifest = pack(src, spec_for(iname, oname), out, calibration=None, key=key)
    assert (manifest.model.format, manifest.model.precision) == ("tflite", "fp32")
    for runtime in ("litert", "openvino"):
        model = load_model(out, keyring=ring, runtime=runtime)
        assert model.runner.name == runtime
        np.testing.assert_allclose(model.runner.run(REF["input"])[oname], REF["logits"], atol=1e-4)
        model.close()
    with pytest.raises(Exception, match="runtime 'onnxruntime' cannot run this model: it cannot read tflite"):
        load_model(out, keyring=ring, runtime="onnxruntime")


def test_wrong_tensor_names_and_unknown_formats_are_refused(tmp_path):
    src, _, oname = SOURCES["frozen"]
    with pytest.raises(PackageError, match=r"spec input 'nope' is not a model input: it has \['image:0'\]"):
        pack(src, spec_for("nope", oname), tmp_path / "x.ivsm", calibration=None, key=None)
    with pytest.raises(PackageError, match=r"spec outputs \['nope'\] are not outputs of the model"):
        pack(src, spec_for("image:0", "nope"), tmp_path / "x.ivsm", calibration=None, key=None)
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"x")
    with pytest.raises(PackageError, match=r"not a model ivs can pack: expected an ONNX file"):
        pack(h5, spec_for("a", "b"), tmp_path / "x.ivsm", calibration=None, key=None)


def ivs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ivs", *args], capture_output=True, text=True, timeout=300)


def test_cli_pack_verify_and_budget_refusal(calibration, signer, tmp_path):
    _, _, keydir = signer
    model = tmp_path / "tiny.onnx"
    model.write_bytes(tiny_classifier())
    spec = {k: v for k, v in fields(model.read_bytes()).items() if k not in ("model", "budget")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "tiny.ivsm"
    r = ivs(
        "model",
        "pack",
        str(model),
        "--spec",
        str(tmp_path / "spec.json"),
        "-o",
        str(out),
        "--calibration",
        str(calibration),
        "--key",
        str(keydir / "k.key"),
    )
    assert r.returncode == 0, r.stderr
    assert "int8" in r.stdout and "of 8.0 MiB" in r.stdout
    r = ivs("model", "verify", str(out), "--keyring", str(keydir / "ring"))
    assert r.returncode == 0 and r.stdout.startswith("OK tiny 0.0.1: signed by"), r.stderr

    r = ivs(
        "model",
        "pack",
        str(model),
        "--spec",
        str(tmp_path / "spec.json"),
        "-o",
        str(tmp_path / "big.ivsm"),
        "--budget",
        "0.0001",
    )
    assert r.returncode == 1
    line = next(x for x in r.stderr.splitlines() if x.startswith("ivs: error:"))
    assert "tiny does not fit: needs" in line and "MiB over the 0.00 MiB budget; heaviest layers: w (" in line
    assert not (tmp_path / "big.ivsm").exists()


def test_openvino_ir_source(calibration, signer, tmp_path):
    import openvino as ov

    key, ring, _ = signer
    ir = tmp_path / "ir" / "tiny.xml"
    ir.parent.mkdir()
    ov.save_model(ov.convert_model(str(SOURCES["savedmodel"][0])), str(ir), compress_to_fp16=False)
    out = tmp_path / "ir.ivsm"
    manifest = pack(ir, spec_for("image", "logits"), out, calibration=calibration, key=key)
    assert (manifest.model.format, manifest.model.precision, manifest.model.weights) == (
        "openvino",
        "int8",
        "model.bin",
    )
    model = load_model(out, keyring=ring, runtime="openvino")
    assert np.corrcoef(model.runner.run(REF["input"])["logits"].ravel(), REF["logits"].ravel())[0, 1] > 0.9
    model.close()


def test_tflite_target_litert_packs_int8_tflite(calibration, signer, tmp_path):
    """--target litert: the .tflite stays TFLite, int8 weights and activations (AI Edge
    Quantizer), float input and outputs; LiteRT and OpenVINO run it close to the float model."""
    from ivs.isp import Isp
    from ivs.package import tflite
    from ivs.package.budget import budget_report
    from ivs.runtime import create

    key, ring, _ = signer
    src, iname, oname = SOURCES["tflite"]
    out = tmp_path / "t8.ivsm"
    manifest = pack(src, spec_for(iname, oname), out, calibration=calibration, key=key, target="litert")
    assert (manifest.model.format, manifest.model.precision) == ("tflite", "int8")
    pkg = read_package(out, ring)
    assert set(pkg.members) == {"model.tflite"}
    assert tflite.has_int8_weights(pkg.model_bytes) and not tflite.has_int8_weights(src.read_bytes())
    assert tflite.io_names(pkg.model_bytes) == ([iname], [oname])
    # budget.py reads TFLite; int8: the weights take a quarter of the float model's.
    assert manifest.budget is not None and manifest.budget == budget_report(pkg.model_bytes)
    fp32 = budget_report(src.read_bytes())
    assert manifest.budget.weight_bytes < 0.5 * fp32.weight_bytes
    assert manifest.budget.peak_activation_bytes * 4 == fp32.peak_activation_bytes
    # An image like the calibration ones, not one of them, through the ISP (REF's input, uniform
    # noise at 32x32, lies outside the calibrated ranges: int8 clips there, by design).
    image = np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    x = Isp(manifest.input).process(image).tensor
    ref = create("litert", src.read_bytes(), "tflite", iname, 1).run(x)[oname]
    for runtime in ("litert", "openvino"):
        model = load_model(out, keyring=ring, runtime=runtime)
        y = model.runner.run(x)[oname]
        assert y.dtype == np.float32
        assert np.abs(y - ref).max() < 0.05 * np.abs(ref).max(), (runtime, y, ref)
        model.close()


def test_target_litert_from_the_spec_and_its_refusals(calibration, tmp_path):
    src, iname, oname = SOURCES["tflite"]
    spec = {**spec_for(iname, oname), "quantize": {"target": "litert"}}
    manifest = pack(src, spec, tmp_path / "a.ivsm", calibration=calibration, key=None)
    assert (manifest.model.format, manifest.model.precision) == ("tflite", "int8")
    manifest = pack(src, spec, tmp_path / "b.ivsm", calibration=None, key=None)
    assert (manifest.model.format, manifest.model.precision) == ("tflite", "fp32")
    onnx_model = tmp_path / "tiny.onnx"
    onnx_model.write_bytes(tiny_classifier())
    with pytest.raises(PackageError, match=r"target litert packs a TFLite file \(.tflite\)"):
        pack(onnx_model, spec, tmp_path / "c.ivsm", calibration=calibration, key=None)
    with pytest.raises(PackageError, match=r"quantize options \['int4_nodes'\] are not available for target litert"):
        bad = {**spec, "quantize": {"target": "litert", "int4_nodes": ["Conv2D"]}}
        pack(src, bad, tmp_path / "d.ivsm", calibration=calibration, key=None)
    with pytest.raises(PackageError, match=r"nodes_to_exclude \['nope'\] are not op outputs of the model"):
        bad = {**spec, "quantize": {"target": "litert", "nodes_to_exclude": ["nope"]}}
        pack(src, bad, tmp_path / "f.ivsm", calibration=calibration, key=None)
    with pytest.raises(PackageError, match=r"unknown pack target 'tpu'"):
        pack(src, spec, tmp_path / "e.ivsm", calibration=calibration, key=None, target="tpu")


def test_cli_pack_target_litert(calibration, signer, tmp_path):
    _, _, keydir = signer
    src, iname, oname = SOURCES["tflite"]
    (tmp_path / "spec.json").write_text(json.dumps(spec_for(iname, oname)))
    out = tmp_path / "t.ivsm"
    r = ivs(
        "model", "pack", str(src), "--spec", str(tmp_path / "spec.json"), "-o", str(out),
        "--calibration", str(calibration), "--key", str(keydir / "k.key"), "--target", "litert",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "int8" in r.stdout and "of 8.0 MiB" in r.stdout
    assert read_package(out, Keyring.load(keydir / "ring")).manifest.model.format == "tflite"
