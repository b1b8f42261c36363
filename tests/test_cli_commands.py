"""Every `ivs` subcommand runs at least once in a test, and says what it did.

The commands not run here are run where their behaviour is tested (`COVERED_ELSEWHERE`), and
`test_every_subcommand_is_run_by_some_test` walks the CLI's command tree, so a new command
without a test fails the suite.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cv2
import msgspec
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from ivs import cli
from ivs.config import SensorConfig
from ivs.consumer import json_schema
from ivs.events import Heatmap
from ivs.hub.app import create_app
from ivs.hub.store import EnrolmentRefused, Store
from ivs.localnet import ServerThread
from ivs.package.reader import read_package
from ivs.package.signing import Keyring, key_id, load_private
from ivs.package.zoo import resolve

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "admin-secret"

RUN_HERE = {
    "version",
    "schema",
    "heatmap",
    "model inspect",
    "keys generate",
    "config schema",
    "hub device add",
    "hub device list",
    "hub device revoke",
    "hub enrolment add",
    "hub enrolment list",
    "hub enrolment revoke",
    "hub package upload",
    "hub package list",
}
COVERED_ELSEWHERE = {
    "run": "tests/test_cli.py",
    "bench": "tests/test_bench.py",
    "model list": "tests/test_cli.py",
    "model verify": "tests/test_cli.py",
    "model pack": "tests/test_pack.py",
    "model export-imx500": "tests/test_imx500.py",
    "config check": "tests/test_config.py",
    "node": "tests/test_node.py",
    "hub serve": "tests/test_faults.py",
    "hub certs": "tests/test_security.py",
    "hub mqtt-auth": "tests/test_security.py",
    "hub deploy": "tests/test_deploy.py",
    "hub deploy-status": "tests/test_deploy.py",
    "enrol": "tests/test_security.py",
    "hub tag": "tests/test_rollouts.py",
    "hub user add": "tests/test_users.py",
    "hub user list": "tests/test_users.py",
    "hub user disable": "tests/test_users.py",
    "hub token create": "tests/test_users.py",
    "hub token list": "tests/test_users.py",
    "hub token revoke": "tests/test_users.py",
    "hub node-deploy": "tests/test_fleet.py",
    "hub node-status": "tests/test_fleet.py",
    "hub rollout start": "tests/test_rollouts.py",
    "hub rollout list": "tests/test_rollouts.py",
    "hub rollout show": "tests/test_rollouts.py",
    "hub rollout pause": "tests/test_rollouts.py",
    "hub rollout resume": "tests/test_rollouts.py",
    "hub rollout abort": "tests/test_rollouts.py",
    "hub command": "tests/test_fleet.py",
    "hub prune": "tests/test_counts.py",
}

runner = CliRunner()


def ivs(*args: str, env: dict[str, str] | None = None) -> str:
    """Run one command in-process; its output (exit status 0 asserted)."""
    result = runner.invoke(cli.app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def leaves(command: Any, path: tuple[str, ...] = ()) -> Iterator[str]:
    """Each command's words, from the command tree (a group has `commands`; typer ships its own click)."""
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name, sub in subcommands.items():
            yield from leaves(sub, (*path, name))
    else:
        yield " ".join(path)


def test_every_subcommand_is_run_by_some_test() -> None:
    commands = set(leaves(typer.main.get_command(cli.app)))
    assert commands == RUN_HERE | set(COVERED_ELSEWHERE), "a command was added or removed: give it a test"
    for command, where in COVERED_ELSEWHERE.items():
        words = ", ".join(f'"{w}"' for w in command.split())
        assert words in (ROOT / where).read_text(), f"{where} runs `ivs {command}` ({words})"


def test_version_is_the_installed_packages() -> None:
    assert ivs("version").strip() == version("ivs")


def test_schema_prints_the_message_schema() -> None:
    assert json.loads(ivs("schema")) == json_schema()


def test_config_schema_describes_every_field_of_a_sensor_config() -> None:
    schema = json.loads(ivs("config", "schema"))
    assert schema == SensorConfig.model_json_schema()
    assert {"id", "source", "model", "apps", "sinks"} <= set(schema["properties"])
    assert all("description" in p for p in schema["$defs"]["SourceConfig"]["properties"].values())


def test_model_inspect_prints_the_packages_manifest() -> None:
    manifest = json.loads(ivs("model", "inspect", "classifier"))
    package = read_package(resolve("classifier"))
    assert manifest == package.manifest.model_dump(mode="json", exclude_none=True) | manifest
    assert (manifest["name"], manifest["task"], manifest["input"]["width"]) == ("classifier", "classification", 224)


def test_keys_generate_writes_a_private_key_only_its_owner_reads_and_its_public_half(tmp_path: Path) -> None:
    out = ivs("keys", "generate", str(tmp_path / "site.key"))
    assert "site.key" in out and "site.pub" in out
    private = load_private(tmp_path / "site.key")
    assert (tmp_path / "site.key").stat().st_mode & 0o077 == 0, "no one else may read the private key"
    ring = Keyring.load(tmp_path)
    assert key_id(private.public_key()) in ring.keys


def test_heatmap_renders_the_summed_grids_to_a_png(tmp_path: Path) -> None:
    def grid(counts: list[int], frame: int) -> bytes:
        return msgspec.json.encode(Heatmap(frame=frame, time=1.0, t_capture_ns=1, t_source=0.1, app="floor", cols=2,
                                           rows=2, width=64, height=48, counts=counts, frames=10))  # fmt: skip

    events = tmp_path / "events.jsonl"
    events.write_bytes(grid([9, 0, 0, 1], 1) + b"\n" + grid([3, 0, 0, 0], 2) + b"\n")
    out = ivs("heatmap", str(events), "-o", str(tmp_path / "heat.png"))
    assert "2 heatmap" in out
    png = cv2.imread(str(tmp_path / "heat.png"), cv2.IMREAD_COLOR)
    assert png.shape == (48, 64, 3)
    hot, cold_a, cold_b, warm = png[:24, :32], png[:24, 32:], png[24:, :32], png[24:, 32:]
    assert all(len(np.unique(q.reshape(-1, 3), axis=0)) == 1 for q in (hot, cold_a, cold_b, warm)), "one colour a cell"
    assert np.array_equal(cold_a, cold_b) and not np.array_equal(hot, cold_a) and not np.array_equal(warm, cold_a)
    assert hot[0, 0, 2] > 100 and cold_a[0, 0, 0] > 100, "JET: the busiest cell red, the empty ones blue (BGR)"


def test_hub_enrolment_add_list_and_revoke(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    added = ivs("hub", "enrolment", "add", "site-a", "--db", db)
    secret = added.split("secret ", 1)[1].split()[0]
    store = Store(db)
    try:
        assert store.enrol("site-a", secret, "cam-9")
        listed = [json.loads(line) for line in ivs("hub", "enrolment", "list", "--db", db).splitlines()]
        assert [(g["name"], g["devices"], g["revoked"]) for g in listed] == [("site-a", 1, None)]
        assert secret not in json.dumps(listed), "a group's secret is shown once, never listed"
        assert "site-a revoked" in ivs("hub", "enrolment", "revoke", "site-a", "--db", db)
        with pytest.raises(EnrolmentRefused, match="does not take this secret"):
            store.enrol("site-a", secret, "cam-10")
    finally:
        store.close()


def test_hub_device_add_list_and_revoke(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    added = [ivs("hub", "device", "add", name, "--db", db) for name in ("cam-1", "cam-2")]
    tokens = [line.split("token ", 1)[1].split()[0] for line in added]
    listed = [json.loads(line) for line in ivs("hub", "device", "list", "--db", db).splitlines()]
    assert [(d["name"], d["revoked"]) for d in listed] == [("cam-1", None), ("cam-2", None)]
    assert not any(t in json.dumps(listed) for t in tokens), "tokens are shown once, never listed"
    assert "cam-1" in ivs("hub", "device", "revoke", "cam-1", "--db", db)
    listed = [json.loads(line) for line in ivs("hub", "device", "list", "--db", db).splitlines()]
    assert [d["name"] for d in listed] == ["cam-1", "cam-2"]
    assert listed[0]["revoked"] >= listed[0]["created"] and listed[1]["revoked"] is None, "when it was revoked"
    store = Store(db)
    try:
        assert store.authenticate(tokens[0]) is None and store.authenticate(tokens[1]) == "cam-2"
    finally:
        store.close()
    unknown = runner.invoke(cli.app, ["hub", "device", "revoke", "cam-9", "--db", db])
    assert unknown.exit_code != 0 and "cam-9" in unknown.output


@pytest.fixture()
def hub(tmp_path: Path) -> Iterator[str]:
    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    server = ServerThread(create_app(store, ADMIN), timeout_graceful_shutdown=3)
    yield server.url
    assert server.stop(), "uvicorn did not stop"
    store.close()


def test_hub_package_upload_and_list(hub: str) -> None:
    env = {"IVS_HUB_URL": hub, "IVS_HUB_ADMIN_TOKEN": ADMIN}
    path = resolve("classifier")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"classifier 1.0.0 sha256 {digest}" in ivs("hub", "package", "upload", str(path), env=env)
    listed = [json.loads(line) for line in ivs("hub", "package", "list", env=env).splitlines()]
    assert [(p["name"], p["version"], p["sha256"]) for p in listed] == [("classifier", "1.0.0", digest)]
    refused = runner.invoke(cli.app, ["hub", "package", "list"], env=env | {"IVS_HUB_ADMIN_TOKEN": "wrong"})
    assert refused.exit_code == 1 and "401" in refused.output
