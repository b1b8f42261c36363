"""Hot swap: a new package replaces the running model without stopping the source."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ivs.hotswap import PackageWatcher
from ivs.model import load_model
from ivs.package.reader import read_package
from ivs.package.signing import Keyring, generate, load_private
from ivs.package.writer import write_package
from ivs.package.zoo import resolve
from ivs.sensor import Sensor
from ivs.sources.synthetic import SyntheticSource


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """The classifier re-signed by a test key as versions 1.0.0 and 2.0.0, plus its keyring."""
    d = tmp_path_factory.mktemp("swap")
    (d / "ring").mkdir()
    generate(d / "k.key")
    shutil.move(d / "k.pub", d / "ring" / "k.pub")
    key = load_private(d / "k.key")
    src = read_package(resolve("classifier"))
    fields = src.manifest.model_dump(mode="json", exclude_none=True)
    out = {}
    for version in ("1.0.0", "2.0.0"):
        fields["version"] = version
        out[version] = d / f"classifier-{version}.ivsm"
        write_package(out[version], fields, src.members, key)
    return out, d / "ring"


def test_sensor_swaps_between_frames_and_loses_nothing(signed):
    packages, ring = signed
    keyring = Keyring.load(ring)
    v1 = load_model(packages["1.0.0"], keyring=keyring, runtime="onnxruntime")
    v2 = load_model(packages["2.0.0"], keyring=keyring, runtime="onnxruntime")
    records = []

    def on_record(record, det):
        records.append(record)
        if len(records) == 15:
            sensor.swap_model(v2)
        if len(records) == 40:
            sensor.stop()

    sensor = Sensor(SyntheticSource(160, 120), v1, [], fps=0, on_record=on_record)
    sensor.run()
    assert [r.frame for r in records] == list(range(len(records)))
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    versions = [r.model.version for r in records]
    assert versions == ["1.0.0"] * 15 + ["2.0.0"] * (len(records) - 15)
    assert sensor.swaps == 1


def test_watcher_loads_a_replaced_file_and_refuses_a_tampered_one(signed, tmp_path: Path):
    packages, ring = signed
    keyring = Keyring.load(ring)
    live = tmp_path / "model.ivsm"
    shutil.copy(packages["1.0.0"], live)
    swapped, errors = [], []
    watcher = PackageWatcher(
        live,
        lambda p: load_model(p, keyring=keyring, runtime="onnxruntime"),
        swapped.append,
        interval=0.05,
        on_error=errors.append,
    ).start()
    try:
        tmp = tmp_path / "incoming.ivsm"
        shutil.copy(packages["2.0.0"], tmp)
        os.replace(tmp, live)
        deadline = time.monotonic() + 20
        while not swapped and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [m.manifest.version for m in swapped] == ["2.0.0"]

        data = bytearray(live.read_bytes())
        data[len(data) // 2] ^= 0xFF
        tmp.write_bytes(bytes(data))
        os.replace(tmp, live)
        deadline = time.monotonic() + 20
        while not errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(swapped) == 1
        assert errors and "new package refused, the running model stays" in errors[0]
    finally:
        watcher.close()
        for m in swapped:
            m.close()


def wait_for(path: Path, predicate, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            records = [json.loads(x) for x in lines[:-1]]  # the last line may be half written
            if predicate(records):
                return records
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting on {path}")


@pytest.mark.slow
def test_cli_hot_swaps_while_streaming(signed, tmp_path: Path):
    packages, ring = signed
    live = tmp_path / "model.ivsm"
    shutil.copy(packages["1.0.0"], live)
    out = tmp_path / "m.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ivs",
            "run",
            "--source",
            "synthetic:160x120@30",
            "--model",
            str(live),
            "--keyring",
            str(ring),
            "--fps",
            "0",
            "--out",
            str(out),
            "-q",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(out, lambda r: len(r) >= 20)
        tmp = tmp_path / "incoming.ivsm"
        shutil.copy(packages["2.0.0"], tmp)
        os.replace(tmp, live)
        wait_for(out, lambda r: sum(x["model"]["version"] == "2.0.0" for x in r) >= 20)
        tmp.write_bytes(b"this is not a package")
        os.replace(tmp, live)
        time.sleep(2.0)
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(len(records)))
    versions = [r["model"]["version"] for r in records]
    switch = versions.index("2.0.0")
    assert set(versions[:switch]) == {"1.0.0"} and set(versions[switch:]) == {"2.0.0"}
    assert "model swap: classifier 2.0.0" in stderr
    assert "new package refused, the running model stays" in stderr
