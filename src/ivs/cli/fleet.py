"""`ivs hub tag` and `ivs hub rollout ...`: tags and staged rollouts, through the hub's API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ivs.cli.app import fail, hub_app, rollout_app
from ivs.cli.hub import AdminToken, HubCa, HubUrl, _hub_client
from ivs.errors import IvsError


def _call(hub: str, token: str | None, ca: Any, method: str, path: str, doc: Any = None) -> Any:
    client = _hub_client(hub, token, ca)
    try:
        return client.get(path) if method == "GET" else client.send(method, path, doc)
    except IvsError as err:
        raise fail(str(err), 1) from None


@hub_app.command("tag")
def hub_tag(
    device: Annotated[str, typer.Argument(help="The device (sensor id).")],
    tags: Annotated[list[str], typer.Argument(help="KEY=VALUE to set, KEY= to remove.")],
    hub: HubUrl = "http://127.0.0.1:8080",
    admin_token: AdminToken = None,
    ca_file: HubCa = None,
) -> None:
    """Set or remove a device's tags; prints its tags after (JSON)."""
    doc: dict[str, str | None] = {}
    for item in tags:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise fail(f"{item!r}: expected KEY=VALUE (or KEY= to remove it)", 2)
        doc[key] = value or None
    typer.echo(json.dumps(_call(hub, admin_token, ca_file, "PUT", f"/api/v1/devices/{device}/tags", doc)))


@hub_app.command("node-deploy")
def hub_node_deploy(
    node: Annotated[str, typer.Argument(help="The node (its node.id, a device on the hub).")],
    config: Annotated[Path, typer.Option(help="The site file (YAML) to deploy; its node.id must be NODE.")],
    hub: HubUrl = "http://127.0.0.1:8080",
    admin_token: AdminToken = None,
    ca_file: HubCa = None,
) -> None:
    """Deploy a site file to a node (`ivs node` with node.hub): it applies it at its next poll."""
    try:
        text = config.read_text()
    except OSError as err:
        raise fail(f"{config}: cannot read it ({err.strerror}): expected a site YAML file", 2) from None
    d = _call(hub, admin_token, ca_file, "PUT", f"/api/v1/devices/{node}/node-config", {"config": text})
    typer.echo(f"{node}: site revision {d['revision']}")


@hub_app.command("node-status")
def hub_node_status(
    node: Annotated[str, typer.Argument(help="The node.")],
    hub: HubUrl = "http://127.0.0.1:8080",
    admin_token: AdminToken = None,
    ca_file: HubCa = None,
) -> None:
    """The node's desired site revision, its last report and its sensors' health (JSON); exit 1
    when the last revision was refused."""
    state = _call(hub, admin_token, ca_file, "GET", f"/api/v1/devices/{node}/node")
    typer.echo(json.dumps(state, indent=2))
    if state["reported"] is not None and state["reported"]["status"] == "failed":
        raise typer.Exit(1)


@rollout_app.command("start")
def rollout_start(
    name: Annotated[str, typer.Argument(help="The rollout's name.")],
    package: Annotated[str, typer.Option(help="sha256, NAME@VERSION or NAME of an uploaded package.")],
    target: Annotated[str, typer.Option(help="Condition on tags: 'site = berlin and role = entrance', or '*'.")],
    waves: Annotated[str, typer.Option(help="Cumulative wave sizes: counts or shares.")] = "1,10%,100%",
    gate_s: Annotated[float, typer.Option(help="Seconds each wave's devices must stay healthy.")] = 30.0,
    min_fps_ratio: Annotated[float, typer.Option(help="Healthy: at least this share of the fps before.")] = 0.8,
    priority: Annotated[int, typer.Option(help="A device in two rollouts belongs to the higher.")] = 0,
    hub: HubUrl = "http://127.0.0.1:8080",
    admin_token: AdminToken = None,
    ca_file: HubCa = None,
) -> None:
    """Start a staged rollout: wave 1 gets the package now; each next wave once the last is healthy."""
    doc = {"name": name, "package": package, "target": target, "waves": waves, "gate_s": gate_s,
           "min_fps_ratio": min_fps_ratio, "priority": priority}  # fmt: skip
    typer.echo(json.dumps(_call(hub, admin_token, ca_file, "POST", "/api/v1/rollouts", doc), indent=2))


@rollout_app.command("list")
def rollout_list(hub: HubUrl = "http://127.0.0.1:8080", admin_token: AdminToken = None, ca_file: HubCa = None) -> None:
    """Every rollout, one JSON line each: its state, wave and reason."""
    for r in _call(hub, admin_token, ca_file, "GET", "/api/v1/rollouts"):
        typer.echo(json.dumps({k: r[k] for k in ("name", "state", "wave", "target", "reason")}))


@rollout_app.command("show")
def rollout_show(
    name: Annotated[str, typer.Argument(help="The rollout.")],
    hub: HubUrl = "http://127.0.0.1:8080",
    admin_token: AdminToken = None,
    ca_file: HubCa = None,
) -> None:
    """A rollout's waves and each device's state (JSON)."""
    typer.echo(json.dumps(_call(hub, admin_token, ca_file, "GET", f"/api/v1/rollouts/{name}"), indent=2))


def _action(action: str) -> Any:
    def command(
        name: Annotated[str, typer.Argument(help="The rollout.")],
        hub: HubUrl = "http://127.0.0.1:8080",
        admin_token: AdminToken = None,
        ca_file: HubCa = None,
    ) -> None:
        r = _call(hub, admin_token, ca_file, "POST", f"/api/v1/rollouts/{name}/{action}", {})
        typer.echo(f"rollout {name}: {r['state']}" + (f" ({r['reason']})" if r["reason"] else ""))

    command.__doc__ = {
        "pause": "Hold a rollout where it is: no further waves.",
        "resume": "Let a paused rollout go on.",
        "abort": "Stop a rollout and roll its updated devices back.",
    }[action]
    return command


for _name in ("pause", "resume", "abort"):
    rollout_app.command(_name)(_action(_name))
