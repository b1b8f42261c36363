"""Hot swap: a new package replaces the running model without stopping the source."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
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
from tests.waiting import wait_for


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
        wait_for(lambda: swapped, timeout=20, what="the replaced package to load")
        assert [m.manifest.version for m in swapped] == ["2.0.0"]

        data = bytearray(live.read_bytes())
        data[len(data) // 2] ^= 0xFF
        tmp.write_bytes(bytes(data))
        os.replace(tmp, live)
        wait_for(lambda: errors, timeout=20, what="the tampered package to be refused")
        assert len(swapped) == 1
        assert errors and "new package refused, the running model stays" in errors[0]
    finally:
        watcher.close()
        for m in swapped:
            m.close()


def records(path: Path) -> list[dict]:
    """The complete records written so far (the last line may be half written)."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(x) for x in lines[:-1]]


@pytest.mark.slow
def test_cli_hot_swaps_while_streaming(signed, tmp_path: Path):
    packages, ring = signed
    live = tmp_path / "model.ivsm"
    shutil.copy(packages["1.0.0"], live)
    out, log = tmp_path / "m.jsonl", tmp_path / "sensor.log"
    err = log.open("w")
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
        stderr=err,
    )

    def stderr() -> str:
        return log.read_text()

    try:
        wait_for(lambda: len(records(out)) >= 20, timeout=60, what="records from 1.0.0", procs=[proc])
        tmp = tmp_path / "incoming.ivsm"
        shutil.copy(packages["2.0.0"], tmp)
        os.replace(tmp, live)
        wait_for(
            lambda: sum(x["model"]["version"] == "2.0.0" for x in records(out)) >= 20,
            timeout=60,
            what="records from 2.0.0",
            procs=[proc],
        )
        tmp.write_bytes(b"this is not a package")
        os.replace(tmp, live)
        wait_for(lambda: "new package refused" in stderr(), timeout=30, what="the bad package refused", procs=[proc])
        # The refusal did not stop the stream: records keep coming, still from 2.0.0.
        n = len(records(out))
        wait_for(lambda: len(records(out)) >= n + 20, timeout=60, what="records after the refusal", procs=[proc])
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        err.close()
    assert proc.returncode == 0, stderr()
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["frame"] for r in written] == list(range(len(written)))
    versions = [r["model"]["version"] for r in written]
    switch = versions.index("2.0.0")
    assert set(versions[:switch]) == {"1.0.0"} and set(versions[switch:]) == {"2.0.0"}
    assert "model swap: classifier 2.0.0" in stderr()
    assert "new package refused, the running model stays" in stderr()
