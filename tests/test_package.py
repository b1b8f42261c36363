"""Packages: written, signed, verified; anything off is refused with a precise reason."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ivs.errors import PackageError
from ivs.package.budget import budget_report
from ivs.package.reader import read_package
from ivs.package.signing import Keyring, generate, load_private
from ivs.package.writer import write_package


def tiny_classifier() -> bytes:
    """A real (if tiny) ONNX network: global average pool then a 3->4 linear layer."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 4], np.arange(12, dtype=np.float32).tolist())
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def fields(model: bytes, **over) -> dict:
    doc = {
        "name": "tiny",
        "version": "0.0.1",
        "task": "classification",
        "model": {"path": "model.onnx", "format": "onnx", "precision": "fp32"},
        "input": {"name": "input", "width": 8, "height": 8, "layout": "NCHW", "std": [255.0, 255.0, 255.0]},
        "outputs": {"logits": "logits"},
        "labels": ["a", "b", "c", "d"],
        "decoder": {"name": "classify", "params": {"top_k": 2}},
        "budget": budget_report(model).model_dump(),
    }
    doc.update(over)
    return doc


@pytest.fixture()
def keys(tmp_path: Path):
    ring = tmp_path / "ring"
    ring.mkdir()
    generate(tmp_path / "k.key")
    (tmp_path / "k.pub").rename(ring / "k.pub")
    return load_private(tmp_path / "k.key"), Keyring.load(ring)


@pytest.fixture()
def package(tmp_path: Path, keys) -> Path:
    key, _ = keys
    model = tiny_classifier()
    out = tmp_path / "tiny.ivsm"
    write_package(out, fields(model), {"model.onnx": model}, key)
    return out


def rewrite(src: Path, dst: Path, change) -> Path:
    """Copy a package member by member, letting `change(name, data)` alter each."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
    return dst


def test_round_trip_verifies_and_runs(package: Path, keys):
    from ivs.model import load_model

    pkg = read_package(package, keys[1])
    assert pkg.signed_by in keys[1].keys
    assert pkg.manifest.members["model.onnx"]
    model = load_model(package, keyring=keys[1], runtime="onnxruntime")
    frame = np.zeros((16, 16, 3), np.uint8)
    frame[..., 2] = 255  # blue only: pooled = [0, 0, 1] -> logits = row 2 of w = [8, 9, 10, 11]
    det = model(frame)
    assert det.class_id.tolist() == [3]
    assert det.data["top_k_class_id"].tolist() == [[3, 2]]


def test_manifest_edited_after_signing_is_refused(package: Path, keys, tmp_path: Path):
    def edit(name, data):
        if name == "manifest.json":
            doc = json.loads(data)
            doc["labels"][0] = "evil"
            return json.dumps(doc).encode()
        return data

    bad = rewrite(package, tmp_path / "bad.ivsm", edit)
    with pytest.raises(PackageError, match="manifest signature does not verify"):
        read_package(bad, keys[1])


def test_flipped_weight_byte_is_refused(package: Path, keys, tmp_path: Path):
    def flip(name, data):
        if name == "model.onnx":
            b = bytearray(data)
            b[len(b) // 2] ^= 0x01
            return bytes(b)
        return data

    bad = rewrite(package, tmp_path / "bad.ivsm", flip)
    with pytest.raises(PackageError, match=r"member model.onnx has sha256 .* the member was changed"):
        read_package(bad, keys[1])


def test_unknown_key_is_refused(package: Path, tmp_path: Path):
    other = tmp_path / "other"
    other.mkdir()
    generate(other / "o.key")
    (other / "o.key").unlink()
    with pytest.raises(PackageError, match="signed by unknown key"):
        read_package(package, Keyring.load(other))


def test_unsigned_is_refused_unless_allowed(tmp_path: Path, keys):
    model = tiny_classifier()
    out = tmp_path / "unsigned.ivsm"
    write_package(out, fields(model), {"model.onnx": model}, None)
    with pytest.raises(PackageError, match="not signed"):
        read_package(out, keys[1])
    assert read_package(out, keys[1], allow_unsigned=True).signed_by is None


def test_truncated_file_is_refused(package: Path, keys, tmp_path: Path):
    bad = tmp_path / "cut.ivsm"
    bad.write_bytes(package.read_bytes()[: package.stat().st_size // 2])
    with pytest.raises(PackageError, match="truncated or not a package"):
        read_package(bad, keys[1])


def test_member_path_escaping_is_refused(package: Path, keys, tmp_path: Path):
    bad = tmp_path / "escape.ivsm"
    bad.write_bytes(package.read_bytes())
    with zipfile.ZipFile(bad, "a") as zf:
        zf.writestr("../../etc/evil", b"x")
    with pytest.raises(PackageError, match="escapes the package"):
        read_package(bad, keys[1])


def test_non_json_and_oversized_manifest_are_refused(package: Path, keys, tmp_path: Path):
    bad = rewrite(package, tmp_path / "nj.ivsm", lambda n, d: b"not json {" if n == "manifest.json" else d)
    with pytest.raises(PackageError, match="not valid JSON"):
        read_package(bad, keys[1], allow_unsigned=True)
    big = rewrite(package, tmp_path / "big.ivsm", lambda n, d: b" " * (5 * 2**20) if n == "manifest.json" else d)
    with pytest.raises(PackageError, match="manifest.json is .* bytes, expected at most"):
        read_package(big, keys[1])


def test_unknown_decoder_is_refused(tmp_path: Path, keys):
    model = tiny_classifier()
    out = tmp_path / "dec.ivsm"
    write_package(out, fields(model, decoder={"name": "nosuch", "params": {}}), {"model.onnx": model}, keys[0])
    with pytest.raises(PackageError, match="decoder 'nosuch' does not exist: expected one of"):
        read_package(out, keys[1])


def test_zoo_packages_verify_with_the_shipped_key():
    from ivs.package.zoo import names, resolve

    assert {"classifier", "person"} <= set(names())
    for name in names():
        pkg = read_package(resolve(name))
        assert pkg.signed_by is not None
        assert pkg.manifest.model.precision == "int8"
        assert pkg.manifest.budget is not None and pkg.manifest.budget.fits
