"""`ivs hub ...`: serve the hub, certificates, Mosquitto's auth files, devices, packages, deploys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from ivs.cli.app import (
    device_app,
    enrolment_app,
    err_console,
    fail,
    hub_app,
    package_app,
)
from ivs.cli.retention import (
    KEEP_AUDIT,
    KEEP_EVIDENCE,
    KEEP_MESSAGES,
    KEEP_ROLLUPS,
    MAX_EVIDENCE,
    MAX_MESSAGES,
    evidence_retention,
    retention_of,
)
from ivs.errors import IvsError

HUB_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "psycopg", "argon2")
"""What the hub needs beyond a sensor: the `hub` extra (`pip install 'ivs[hub]'`)."""


@hub_app.callback()
def _hub_installed() -> None:
    import importlib.util

    missing = [m for m in HUB_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise fail(
            f"the hub's packages are not installed ({', '.join(missing)}): a sensor or node needs only `ivs`; "
            "expected `pip install 'ivs[hub]'` on the hub's machine",
            2,
        )


@hub_app.command("serve")
def hub_serve(
    db: Annotated[str, typer.Option(help="SQLAlchemy URL: sqlite:///hub.db or postgresql://user@host/db.")] = (
        "sqlite:///ivs-hub.db"
    ),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    mqtt: Annotated[str | None, typer.Option(help="Also ingest from this broker, HOST:PORT.")] = None,
    group: Annotated[str, typer.Option(help="Shared-subscription group: hubs in one group split the stream.")] = (
        "ivs-hub"
    ),
    mqtt_user: Annotated[str | None, typer.Option(help="MQTT user name (ivs-hub with `ivs hub mqtt-auth`).")] = None,
    mqtt_password_file: Annotated[
        Path | None, typer.Option(help="File holding the MQTT password (hub.password from `ivs hub mqtt-auth`).")
    ] = None,
    mqtt_ca: Annotated[
        Path | None, typer.Option(help="Connect to the broker over TLS, verified with this CA (ca.pem).")
    ] = None,
    mqtt_cert: Annotated[
        Path | None, typer.Option(help="Client certificate, for a listener that wants one (`ivs hub certs --device`).")
    ] = None,
    mqtt_key: Annotated[Path | None, typer.Option(help="... and its key.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Serve HTTPS with this certificate (server.pem).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="... and this key (server.key, from `ivs hub certs`).")] = None,
    mqtt_auth: Annotated[
        Path | None,
        typer.Option(
            help="Keep Mosquitto's passwd and acl in this folder (`ivs hub mqtt-auth`) in step with enrolments."
        ),
    ] = None,
    mqtt_broker_pid: Annotated[
        Path | None, typer.Option(help="Mosquitto's pid file: reload it (SIGHUP) after the files change.")
    ] = None,
    offline_after: Annotated[
        float, typer.Option(help="Show a sensor offline when nothing came from it for this long (seconds); 0: never.")
    ] = 90.0,
    open_read: Annotated[
        bool, typer.Option(help="Let anyone read what a viewer may (events, counts, sensors, dashboard): a demo.")
    ] = False,
    keep_messages_days: Annotated[float | None, typer.Option(help=KEEP_MESSAGES)] = None,
    keep_rollups_days: Annotated[float | None, typer.Option(help=KEEP_ROLLUPS)] = None,
    keep_audit_days: Annotated[float | None, typer.Option(help=KEEP_AUDIT)] = None,
    max_messages: Annotated[int | None, typer.Option(help=MAX_MESSAGES)] = None,
    evidence_dir: Annotated[
        Path | None, typer.Option(help="Keep the snapshots and clips sensors upload here (default: refuse them).")
    ] = None,
    keep_evidence_days: Annotated[float | None, typer.Option(help=KEEP_EVIDENCE)] = None,
    max_evidence_mb: Annotated[float | None, typer.Option(help=MAX_EVIDENCE)] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(help="A reverse proxy whose X-Forwarded-For names the caller (an address; repeat for more)."),
    ] = None,
) -> None:
    """Serve the hub's HTTP API (ingest, queries, its OpenAPI document at /openapi.json, /metrics).

    With a --keep-* or --max-messages option, the hub prunes its database at start and every
    hour (`ivs hub prune` does it once).

    Users and their tokens: `ivs hub user add`, `ivs hub token create`. The admin token (an
    admin's rights) comes from the environment: IVS_HUB_ADMIN_TOKEN.
    """
    import os

    from ivs.hub.serve import serve

    retention = retention_of(keep_messages_days, keep_rollups_days, keep_audit_days, max_messages)
    mqtt_password = None
    if mqtt_password_file is not None:
        try:
            mqtt_password = mqtt_password_file.read_text().strip()
        except OSError as err:
            raise fail(
                f"--mqtt-password-file {mqtt_password_file}: {err.strerror}: expected a readable file", 2
            ) from None
        if mqtt_user is None:
            raise fail("--mqtt-password-file without --mqtt-user: expected both (e.g. --mqtt-user ivs-hub)", 2)

    mqtt_host, mqtt_port = None, 1883
    if mqtt is not None:
        h, _, p = mqtt.rpartition(":")
        if not h or not p.isdigit():
            raise fail(f"--mqtt {mqtt!r}: expected HOST:PORT, e.g. 127.0.0.1:1883", 2)
        mqtt_host, mqtt_port = h, int(p)
    try:
        serve(
            db, host=host, port=port, admin_token=os.environ.get("IVS_HUB_ADMIN_TOKEN", ""),
            mqtt_host=mqtt_host, mqtt_port=mqtt_port, mqtt_group=group,
            mqtt_username=mqtt_user, mqtt_password=mqtt_password,
            mqtt_tls_ca=str(mqtt_ca) if mqtt_ca else None, mqtt_tls_cert=str(mqtt_cert) if mqtt_cert else None,
            mqtt_tls_key=str(mqtt_key) if mqtt_key else None,
            tls_cert=str(tls_cert) if tls_cert else None, tls_key=str(tls_key) if tls_key else None,
            mqtt_auth=str(mqtt_auth) if mqtt_auth else None,
            mqtt_broker_pid=str(mqtt_broker_pid) if mqtt_broker_pid else None,
            offline_after_s=offline_after or None, open_read=open_read, retention=retention,
            evidence_dir=str(evidence_dir) if evidence_dir else None,
            evidence_retention=evidence_retention(evidence_dir, keep_evidence_days, max_evidence_mb),
            trusted_proxies=trusted_proxy,
        )  # fmt: skip
    except IvsError as err:
        raise fail(str(err), 1) from None


@device_app.command("add")
def hub_device_add(
    name: Annotated[str, typer.Argument(help="Device name: the sensor id it will post as.")],
    db: Annotated[str, typer.Option(help="The hub's database URL.")] = "sqlite:///ivs-hub.db",
) -> None:
    """Register a device and print its token (shown once; only its hash is stored)."""
    from ivs.hub.store import Store

    try:
        token = Store(db).add_device(name)
    except IvsError as err:
        raise fail(str(err), 1) from None
    typer.echo(f"device {name}: token {token}")
    typer.echo(
        "give it to the sensor as IVS_HUB_TOKEN (http sink token_env); it is also its MQTT password, user name"
        f" {name}, once `ivs hub mqtt-auth` has run; it is not shown again"
    )


@device_app.command("revoke")
def hub_device_revoke(
    name: Annotated[str, typer.Argument(help="Device name.")],
    db: Annotated[str, typer.Option(help="The hub's database URL.")] = "sqlite:///ivs-hub.db",
) -> None:
    """Revoke a device: its token is refused from now on."""
    from ivs.hub.store import Store

    try:
        ok = Store(db).revoke_device(name)
    except IvsError as err:
        raise fail(str(err), 1) from None
    if not ok:
        raise fail(f"no active device {name!r}: expected one of `ivs hub device list`", 1)
    typer.echo(f"device {name} revoked")


@device_app.command("list")
def hub_device_list(db: Annotated[str, typer.Option(help="The hub's database URL.")] = "sqlite:///ivs-hub.db") -> None:
    """List the registered devices (JSON lines: name, created, revoked; never tokens)."""
    import dataclasses

    from ivs.hub.store import Store

    try:
        for device in Store(db).devices():
            typer.echo(json.dumps(dataclasses.asdict(device)))
    except IvsError as err:
        raise fail(str(err), 1) from None


@hub_app.command("certs")
def hub_certs(
    out: Annotated[Path, typer.Option(help="Folder for ca.pem/.key, server.pem/.key, devices/NAME.pem/.key.")],
    hosts: Annotated[
        str, typer.Option(help="Names and addresses of the hub and broker, comma-separated (the server certificate).")
    ] = "127.0.0.1,localhost",
    device: Annotated[
        list[str] | None, typer.Option(help="Also a client certificate for this device (repeatable).")
    ] = None,
    server: Annotated[bool, typer.Option(help="Write the server certificate (--no-server: only devices).")] = True,
    days: Annotated[int, typer.Option(help="Validity of the server and device certificates.")] = 825,
    force: Annotated[bool, typer.Option(help="Replace certificates and keys that exist.")] = False,
) -> None:
    """Make a CA (or reuse the one in --out) and certificates for TLS: the hub's and broker's, and devices'."""
    from ivs.hub.certs import make_certs

    try:
        written = make_certs(
            out, hosts=[h.strip() for h in hosts.split(",") if h.strip()], devices=device or [], server=server,
            force=force, days=days,
        )  # fmt: skip
    except IvsError as err:
        raise fail(str(err), 1) from None
    typer.echo(f"{'using the CA' if written.ca_reused else 'new CA'} {written.ca_cert}: give it to every sensor")
    for path in written.files:
        typer.echo(f"wrote {path}" + (" (private: mode 600)" if path.suffix == ".key" else ""))


@hub_app.command("mqtt-auth")
def hub_mqtt_auth(
    out: Annotated[Path, typer.Option(help="Folder for passwd, acl, hub.password and mosquitto.conf.")],
    db: Annotated[str, typer.Option(help="The hub's database URL.")] = "sqlite:///ivs-hub.db",
    certs: Annotated[
        Path | None, typer.Option(help="Folder from `ivs hub certs`: the sensors' listener uses TLS.")
    ] = None,
    listen: Annotated[str, typer.Option(help="The sensors' listener, HOST:PORT.")] = "0.0.0.0:8883",
    hub_listen: Annotated[
        str, typer.Option(help="The hub's own listener, HOST:PORT ('' for none: the hub uses the devices' listener).")
    ] = "127.0.0.1:1883",
    hub_tls: Annotated[
        bool, typer.Option(help="The hub's listener uses TLS too (with --certs; the hub logs in with its password).")
    ] = False,
    hub_user: Annotated[str, typer.Option(help="The hub's MQTT user name.")] = "ivs-hub",
    client_certs: Annotated[
        bool, typer.Option(help="Devices log in with their certificate (`ivs hub certs --device`), not a password.")
    ] = False,
    ha_prefix: Annotated[
        str, typer.Option(help="Home Assistant discovery prefix devices may publish under ('' for none).")
    ] = "homeassistant",
) -> None:
    """Write Mosquitto's password file, ACL and config from the hub's devices: each device may publish
    only under ivs/<its name>/. Run again after `device add`/`revoke`, then reload Mosquitto (SIGHUP)."""
    import shlex

    from ivs.hub.mqtt_auth import write_mqtt_auth
    from ivs.hub.store import Store

    try:
        result = write_mqtt_auth(
            Store(db), out, hub_user=hub_user, certs=certs, listen=listen, hub_listen=hub_listen or None,
            client_certs=client_certs, ha_prefix=ha_prefix, hub_tls=hub_tls,
        )  # fmt: skip
    except IvsError as err:
        raise fail(str(err), 1) from None
    for warning in result.warnings:
        err_console.print(Text(f"ivs: warning: {warning}", style="yellow"), soft_wrap=True)
    typer.echo(f"{len(result.devices)} devices: {', '.join(result.devices) or '-'}")
    typer.echo(f"wrote {result.passwd}, {result.acl}, {result.conf}; the hub's password is in {result.hub_password}")
    typer.echo("include mosquitto.conf in Mosquitto's configuration, then reload it (SIGHUP)")
    typer.echo(f"the hub: ivs hub serve {shlex.join(result.hub_args)} ...")


HubUrl = Annotated[str, typer.Option("--hub", envvar="IVS_HUB_URL", help="The hub's base URL (or IVS_HUB_URL).")]
AdminToken = Annotated[
    str | None, typer.Option(envvar="IVS_HUB_ADMIN_TOKEN", help="The hub's admin token (or IVS_HUB_ADMIN_TOKEN).")
]
HubCa = Annotated[
    Path | None,
    typer.Option("--ca-file", envvar="IVS_HUB_CA_FILE", help="CA to verify an https hub (ca.pem, `ivs hub certs`)."),
]


def _hub_client(hub: str, admin_token: str | None, ca_file: Path | None = None) -> Any:
    from ivs.deploy import HubClient

    if not admin_token:
        raise fail("expected the hub's admin token: --admin-token or IVS_HUB_ADMIN_TOKEN", 2)
    try:
        return HubClient(hub, admin_token, ca_file=str(ca_file) if ca_file else None)
    except IvsError as err:
        raise fail(str(err), 2) from None


@package_app.command("upload")
def hub_package_upload(
    package: Annotated[Path, typer.Argument(help="The .ivsm file (`ivs model pack` writes one).")],
    hub: HubUrl = "http://127.0.0.1:8080",
    admin_token: AdminToken = None,
    ca_file: HubCa = None,
) -> None:
    """Upload a model package to the hub; prints its sha256 (what `ivs hub deploy` can name)."""
    client = _hub_client(hub, admin_token, ca_file)
    try:
        data = package.read_bytes()
    except OSError as err:
        raise fail(f"{package}: cannot read it ({err.strerror}): expected an .ivsm file", 2) from None
    try:
        p = client.request("POST", "/api/v1/packages", data, "application/octet-stream")
    except IvsError as err:
        raise fail(str(err), 1) from None
    typer.echo(f"{p['name']} {p['version']} sha256 {p['sha256']} ({p['size']} bytes) on {hub}")
    if p["problem"]:
        err_console.print(Text(f"ivs: warning: sensors will refuse it: {p['problem']}", style="yellow"), soft_wrap=True)


@package_app.command("list")
def hub_package_list(
    hub: HubUrl = "http://127.0.0.1:8080", admin_token: AdminToken = None, ca_file: HubCa = None
) -> None:
    """List the packages on the hub, newest first (JSON lines)."""
    client = _hub_client(hub, admin_token, ca_file)
    try:
        for p in client.get("/api/v1/packages"):
            typer.echo(json.dumps(p))
    except IvsError as err:
        raise fail(str(err), 1) from None


@hub_app.command("deploy")
def hub_deploy(
    device: Annotated[str, typer.Argument(help="The device (sensor id) to deploy to.")],
    package: Annotated[
        str, typer.Option(help="The package: its sha256, NAME@VERSION, or NAME (the newest upload of that name).")
    ],
    config: Annotated[
        Path | None, typer.Option(help="A sensor config (YAML) to deploy with it; its id must be DEVICE.")
    ] = None,
    hub: HubUrl = "http://127.0.0.1:8080",
    admin_token: AdminToken = None,
    ca_file: HubCa = None,
) -> None:
    """Assign a package (and a config) to a device; it swaps at its next poll (`ivs hub deploy-status`)."""
    client = _hub_client(hub, admin_token, ca_file)
    body: dict[str, Any] = {"package": package}
    if config is not None:
        try:
            body["config"] = config.read_text()
        except OSError as err:
            raise fail(f"{config}: cannot read it ({err.strerror}): expected a sensor YAML file", 2) from None
    try:
        d = client.send("PUT", f"/api/v1/devices/{device}/desired", body)
    except IvsError as err:
        raise fail(str(err), 1) from None
    p = d["package"]
    with_config = " with its config" if d["config"] is not None else ""
    typer.echo(f"{device}: revision {d['revision']} -> {p['name']} {p['version']} ({p['sha256'][:12]}){with_config}")


@hub_app.command("deploy-status")
def hub_deploy_status(
    device: Annotated[str, typer.Argument(help="The device (sensor id).")],
    hub: HubUrl = "http://127.0.0.1:8080",
    admin_token: AdminToken = None,
    ca_file: HubCa = None,
) -> None:
    """Desired vs reported state of a device (JSON); exit 1 when its last deploy failed."""
    client = _hub_client(hub, admin_token, ca_file)
    try:
        state = client.get(f"/api/v1/devices/{device}/deploy")
    except IvsError as err:
        raise fail(str(err), 1) from None
    typer.echo(json.dumps(state, indent=2))
    if state["status"] == "failed":
        raise fail(f"{device}: the deploy failed: {state['reported']['error']}", 1)


@hub_app.command("command")
def hub_command(
    device: Annotated[str, typer.Argument(help="The device (sensor id).")],
    name: Annotated[str, typer.Argument(help="ping | reload | app | log | restart | evidence (docs/fleet.md).")],
    arg: Annotated[
        list[str] | None, typer.Option("--arg", help="KEY=VALUE, a JSON value or a string; repeat for more.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the device's answer.")] = 5.0,
    hub: HubUrl = "http://127.0.0.1:8080",
    admin_token: AdminToken = None,
    ca_file: HubCa = None,
) -> None:
    """Send a device a command over MQTT and print its answer (JSON); exit 1 when it could not
    do it, or did not answer in time."""
    args: dict[str, Any] = {}
    for item in arg or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise fail(f"--arg {item!r}: expected KEY=VALUE", 2)
        try:
            args[key] = json.loads(value)
        except ValueError:
            args[key] = value
    client = _hub_client(hub, admin_token, ca_file)
    try:
        answer = client.send("POST", f"/api/v1/devices/{device}/commands", {"name": name, "args": args,
                                                                             "timeout_s": timeout})  # fmt: skip
    except IvsError as err:
        raise fail(str(err), 1) from None
    typer.echo(json.dumps(answer, indent=2))
    if not answer.get("ok"):
        raise typer.Exit(1)


@enrolment_app.command("add")
def hub_enrolment_add(
    name: Annotated[str, typer.Argument(help="The group's name.")],
    db: Annotated[str, typer.Option(help="The hub's database URL.")] = "sqlite:///ivs-hub.db",
) -> None:
    """Make an enrolment group and print its secret (shown once; only its hash is kept)."""
    from ivs.hub.store import Store

    try:
        secret = Store(db).add_group(name)
    except IvsError as err:
        raise fail(str(err), 1) from None
    typer.echo(f"enrolment group {name}: secret {secret}")
    typer.echo(f"a new device enrols with IVS_ENROL_SECRET=<secret> ivs enrol --hub URL --group {name} --name NAME")


@enrolment_app.command("revoke")
def hub_enrolment_revoke(
    name: Annotated[str, typer.Argument(help="The group's name.")],
    db: Annotated[str, typer.Option(help="The hub's database URL.")] = "sqlite:///ivs-hub.db",
) -> None:
    """No more enrolments through a group (the devices it enrolled stay: revoke them one by one)."""
    from ivs.hub.store import Store

    try:
        ok = Store(db).revoke_group(name)
    except IvsError as err:
        raise fail(str(err), 1) from None
    if not ok:
        raise fail(f"no enrolment group {name!r}: expected one of `ivs hub enrolment list`", 1)
    typer.echo(f"enrolment group {name} revoked")


@enrolment_app.command("list")
def hub_enrolment_list(
    db: Annotated[str, typer.Option(help="The hub's database URL.")] = "sqlite:///ivs-hub.db",
) -> None:
    """The enrolment groups (JSON lines: name, created, revoked, devices enrolled; never secrets)."""
    from ivs.hub.store import Store

    try:
        for group in Store(db).groups():
            typer.echo(json.dumps(group))
    except IvsError as err:
        raise fail(str(err), 1) from None
