"""`ivs enrol`: a new device gets its identity from the hub with its enrolment group's secret."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ivs.cli.app import app, fail
from ivs.errors import IvsError


@app.command()
def enrol(
    hub: Annotated[str, typer.Option("--hub", envvar="IVS_HUB_URL", help="The hub's base URL (or IVS_HUB_URL).")],
    group: Annotated[str, typer.Option(help="The enrolment group (`ivs hub enrolment add`).")],
    name: Annotated[str, typer.Option(help="This device's name: the sensor id it will send as.")],
    out: Annotated[Path, typer.Option(help="Folder for the credentials (ivs.env, 0600).")] = Path("."),
    secret_env: Annotated[
        str, typer.Option(help="Environment variable holding the group's secret (never on the command line).")
    ] = "IVS_ENROL_SECRET",
    ca_file: Annotated[
        Path | None, typer.Option(envvar="IVS_HUB_CA_FILE", help="CA to verify an https hub (ca.pem).")
    ] = None,
) -> None:
    """Enrol this device: the hub registers it and answers its token, which is its HTTP bearer
    token and its MQTT password. Written to OUT/ivs.env as IVS_HUB_TOKEN and IVS_MQTT_PASSWORD
    (mode 0600), for a systemd EnvironmentFile or a container's --env-file."""
    from ivs.deploy import HubClient

    secret = os.environ.get(secret_env, "")
    if not secret:
        raise fail(f"{secret_env} is not set: expected the enrolment group's secret in the environment", 2)
    env_file = out / "ivs.env"
    if env_file.exists():
        raise fail(f"{env_file} exists: this device has credentials already (delete it to enrol again)", 2)
    try:
        client = HubClient(hub, "", ca_file=str(ca_file) if ca_file else None)
        answer = client.send("POST", "/api/v1/enrol", {"group": group, "device": name, "secret": secret})
    except IvsError as err:
        raise fail(f"enrolment refused: {err}", 1) from None
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"IVS_HUB_TOKEN={answer['token']}\nIVS_MQTT_PASSWORD={answer['token']}\n")
    typer.echo(
        f"device {answer['device']} enrolled through {group}: credentials in {env_file} (IVS_HUB_TOKEN for HTTP and"
        f" deploy, IVS_MQTT_PASSWORD with MQTT user {answer['mqtt_user']}: password_env in the mqtt sink)"
    )
