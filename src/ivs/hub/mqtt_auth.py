"""Per-device MQTT credentials and ACLs for Mosquitto, generated from the hub's devices:
`ivs hub mqtt-auth`.

Design: a device's MQTT password is its hub bearer token (user name = device name = the
sensor_id it publishes as), so one secret, issued by `ivs hub device add` and ended by
`ivs hub device revoke`, covers both transports. The hub keeps only hashes of it: the sha256 it
checks HTTP requests against, and, in the `mqtt_credentials` table, the Mosquitto hash (PBKDF2,
below) computed at `device add`, the one moment the token is in hand. From those hashes this
module writes, into one folder:

    passwd          Mosquitto password file: every active device, and the hub's own user (0600)
    acl             Mosquitto ACL file: a device may publish (and subscribe) only under
                    `ivs/<name>/#` (plus its Home Assistant discovery topics); the hub user may
                    read `ivs/#`, shared subscriptions included, and publish nothing (0600)
    hub.password    the hub user's password, made once and kept across runs (0600): give it to
                    `ivs hub serve --mqtt-password-file`
    mosquitto.conf  a snippet to include in Mosquitto's configuration: no anonymous clients, the
                    two files above, a TLS listener for the devices (certificates from
                    `ivs hub certs`) and a listener for the hub: plain MQTT on loopback for a
                    hub on the same machine, or TLS (`hub_tls`) for one elsewhere

The hub logs in with its password on either of its ways in: its own listener, or the devices'
TLS listener (`ivs hub serve --mqtt-ca ca.pem`; with `client_certs` that listener wants a
certificate, so the hub then needs one too: `ivs hub certs --device ivs-hub`, its CN is the
hub user). `hub_tls` gives the hub a TLS listener that takes its password without a
certificate, whatever the devices' listener asks.

Run it again after every `device add` / `device revoke` and reload Mosquitto (SIGHUP): it
rereads both files and drops clients whose credentials are gone. A hub started with
`--mqtt-auth DIR --mqtt-broker-pid FILE` does both itself after each enrolment and revocation
over HTTP (`BrokerSync`).

The password hash is Mosquitto's own `$7$` format (PBKDF2-HMAC-SHA512, what `mosquitto_passwd`
writes since Mosquitto 2.0), computed here with hashlib so the hub needs no Mosquitto tools.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ivs.errors import ConfigError
from ivs.hub.passwords import mosquitto_hash
from ivs.hub.store.schema import check_name

if TYPE_CHECKING:
    from ivs.hub.store import Store

log = logging.getLogger(__name__)

HUB_USER = "ivs-hub"


def _slug(name: str) -> str:
    from ivs.sinks.homeassistant import slug

    return slug(name)


@dataclass
class MqttAuth:
    """What `write_mqtt_auth` wrote."""

    passwd: Path
    acl: Path
    hub_password: Path
    conf: Path
    devices: list[str] = field(default_factory=list)
    """Active devices given MQTT access."""
    hub_args: list[str] = field(default_factory=list)
    """`ivs hub serve` options that connect the hub through its listener (BROKER where the
    listener is on every address: the broker's name, as its certificate has it)."""
    warnings: list[str] = field(default_factory=list)


def _parse_listen(what: str, value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} {value!r}: expected HOST:PORT, e.g. 0.0.0.0:8883")
    return host, int(port)


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write through a temporary file and a rename: Mosquitto, reloading at any moment, reads
    either the old file or the new one, never half of one; created with `mode` from the start."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def acl_text(devices: list[str], *, hub_user: str = HUB_USER, ha_prefix: str = "homeassistant") -> str:
    """The Mosquitto ACL: each device its own subtree; the hub user reads every sensor and
    writes only what it sends them: their desired state and commands."""
    lines = [
        "# written by `ivs hub mqtt-auth`: regenerate it, do not edit it",
        "# No rules before the first `user`: anonymous clients get nothing (and are refused anyway).",
        "",
        f"user {hub_user}",
        "topic read ivs/#",
        "topic write ivs/+/desired",
        "topic write ivs/+/commands",
    ]
    for name in devices:
        lines += ["", f"user {name}", f"topic readwrite ivs/{name}/#"]
        if ha_prefix:
            lines.append(f"topic write {ha_prefix}/+/{_slug(name)}/#")
    return "\n".join(lines) + "\n"


def conf_text(
    out: Path,
    *,
    certs: Path | None,
    listen: str,
    hub_listen: str | None,
    client_certs: bool,
    hub_tls: bool = False,
) -> str:
    """The mosquitto.conf snippet for the files in `out`."""
    host, port = _parse_listen("--listen", listen)
    lines = [
        "# written by `ivs hub mqtt-auth`: include it in Mosquitto's configuration",
        "# (e.g. /etc/mosquitto/conf.d/ivs.conf); it expects per_listener_settings false, the default.",
        "allow_anonymous false",
        f"password_file {out.resolve() / 'passwd'}",
        f"acl_file {out.resolve() / 'acl'}",
        "",
        "# the sensors",
        f"listener {port} {host}",
    ]
    tls: list[str] = []
    if certs is not None:
        c = certs.resolve()
        tls = [f"cafile {c / 'ca.pem'}", f"certfile {c / 'server.pem'}", f"keyfile {c / 'server.key'}"]
        tls += ["tls_version tlsv1.2"]
        lines += tls
        if client_certs:
            lines += [
                "# devices log in with their certificate from `ivs hub certs --device NAME` (its CN is the user",
                "# name the ACL applies to) instead of a password",
                "require_certificate true",
                "use_identity_as_username true",
            ]
    else:
        lines += ["# WARNING: no TLS: passwords and messages cross the network in clear (give --certs DIR)"]
    if hub_listen:
        h, p = _parse_listen("--hub-listen", hub_listen)
        if hub_tls:
            lines += ["", "# the hub: TLS, with its password (no client certificate)", f"listener {p} {h}", *tls]
        else:
            lines += ["", "# the hub on this machine: plain MQTT, still with its password", f"listener {p} {h}"]
    return "\n".join(lines) + "\n"


def write_mqtt_auth(
    store: Store,
    out: Path,
    *,
    hub_user: str = HUB_USER,
    certs: Path | None = None,
    listen: str = "0.0.0.0:8883",
    hub_listen: str | None = "127.0.0.1:1883",
    client_certs: bool = False,
    ha_prefix: str = "homeassistant",
    hub_tls: bool = False,
) -> MqttAuth:
    """Write passwd, acl, hub.password (once) and mosquitto.conf into `out` from the devices in
    `store`. Raises ConfigError for a bad option, a hub user that is also a device's name, or a
    `certs` folder without ca.pem, server.pem and server.key."""
    from ivs.hub.store import check_name

    why = check_name(hub_user)
    if why is not None:
        raise ConfigError(f"hub user: {why}")
    if certs is not None:
        missing = [n for n in ("ca.pem", "server.pem", "server.key") if not (certs / n).is_file()]
        if missing:
            raise ConfigError(f"--certs {certs}: no {', '.join(missing)}: expected a folder made by `ivs hub certs`")
    elif client_certs or hub_tls:
        raise ConfigError(f"{'--client-certs' if client_certs else '--hub-tls'} needs TLS: expected --certs DIR too")
    if hub_tls and not hub_listen:
        raise ConfigError("--hub-tls without a hub listener: expected --hub-listen HOST:PORT (e.g. 0.0.0.0:8884)")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: expected a folder (it is created if missing)")
    credentials = store.mqtt_credentials()
    if hub_user in credentials:
        raise ConfigError(f"hub user {hub_user!r} is also a device's name: expected another --hub-user")
    conf = conf_text(out, certs=certs, listen=listen, hub_listen=hub_listen, client_certs=client_certs, hub_tls=hub_tls)

    out.mkdir(parents=True, exist_ok=True)
    result = MqttAuth(out / "passwd", out / "acl", out / "hub.password", out / "mosquitto.conf")
    if not result.hub_password.exists():
        _write_private(result.hub_password, secrets.token_urlsafe(32) + "\n")
    _passwd_and_acl(credentials, result, hub_user, ha_prefix)
    _write_private(result.conf, conf, 0o644)
    result.hub_args = _hub_args(result, hub_user, certs, listen, hub_listen, hub_tls=hub_tls, client_certs=client_certs)
    return result


def _passwd_and_acl(credentials: dict[str, str | None], result: MqttAuth, hub_user: str, ha_prefix: str) -> None:
    """Write the password file and ACL of `result` for these devices (hub.password exists)."""
    hub_password = result.hub_password.read_text().strip()
    if not hub_password:
        raise ConfigError(f"{result.hub_password} is empty: expected the hub's MQTT password (delete it for a new one)")
    passwd = [f"{hub_user}:{mosquitto_hash(hub_password)}"]
    for name, hashed in sorted(credentials.items()):
        why = check_name(name)
        if why is not None:  # never written: a stray newline or space here once emptied the ACL
            result.warnings.append(f"device {name!r} left out of the broker's files: {why}")
            log.error("device %r left out of the broker's files: %s", name, why)
            continue
        if hashed is None:
            result.warnings.append(
                f"device {name!r} has no MQTT credential (registered before ivs kept one): "
                "`ivs hub device revoke` and `add` it again to give it one"
            )
            continue
        passwd.append(f"{name}:{hashed}")
        result.devices.append(name)
    if ha_prefix:
        by_slug: dict[str, list[str]] = {}
        for name in result.devices:
            by_slug.setdefault(_slug(name), []).append(name)
        for same in (names for names in by_slug.values() if len(names) > 1):
            result.warnings.append(
                f"devices {', '.join(same)} share a Home Assistant id: each may overwrite the others' discovery topics"
            )
    acl = acl_text(result.devices, hub_user=hub_user, ha_prefix=ha_prefix)
    check_acl(acl, [hub_user, *result.devices])
    _write_private(result.passwd, "\n".join(passwd) + "\n")
    _write_private(result.acl, acl)


_ACL_LINE = re.compile(r"user (\S+)|topic (?:read|write|readwrite) \S+|#.*|")


def check_acl(text: str, users: list[str]) -> None:
    """Refuse (ConfigError) an ACL Mosquitto might read otherwise than meant: a line that is not
    a comment, `user NAME` or `topic ACCESS TOPIC`, or a user that is not one of `users`.
    Mosquitto refuses a malformed ACL on start (the broker exits) and, on a reload, keeps running
    with no ACL at all: so nothing unchecked is ever written, and the broker is not signalled."""
    allowed = set(users)
    for number, line in enumerate(text.split("\n"), 1):
        m = _ACL_LINE.fullmatch(line)
        if m is None or (m.group(1) is not None and m.group(1) not in allowed):
            raise ConfigError(f"the broker's ACL line {number} would be {line!r}: expected `user NAME` or `topic ...`")


class BrokerSync:
    """Keeps Mosquitto's password file and ACL in `out` (written first by `ivs hub mqtt-auth`)
    in step with the hub's devices: `sync()` rewrites both from the store and reloads the broker
    (SIGHUP to the pid in `pid_file`). The hub calls it after each enrolment and revocation, so a
    new device reaches MQTT at once and a revoked one is refused there at once."""

    def __init__(
        self,
        store: Store,
        out: Path,
        *,
        hub_user: str = HUB_USER,
        ha_prefix: str = "homeassistant",
        pid_file: Path | None = None,
    ) -> None:
        if not (out / "hub.password").is_file():
            raise ConfigError(f"--mqtt-auth {out}: no hub.password there: expected a folder `ivs hub mqtt-auth` wrote")
        if pid_file is not None and not pid_file.is_file():
            raise ConfigError(f"--mqtt-broker-pid {pid_file}: no such file: expected Mosquitto's pid file")
        self.store, self.out, self.hub_user, self.ha_prefix, self.pid_file = store, out, hub_user, ha_prefix, pid_file
        self._lock = threading.Lock()
        self.syncs = 0

    def __call__(self) -> None:
        with self._lock:
            result = MqttAuth(
                self.out / "passwd", self.out / "acl", self.out / "hub.password", self.out / "mosquitto.conf"
            )
            _passwd_and_acl(self.store.mqtt_credentials(), result, self.hub_user, self.ha_prefix)
            self.syncs += 1
            if self.pid_file is not None:
                try:
                    os.kill(int(self.pid_file.read_text().split()[0]), signal.SIGHUP)
                except (OSError, ValueError, IndexError) as err:
                    log.error("could not reload the MQTT broker (pid file %s): %s", self.pid_file, err)


def _hub_args(
    result: MqttAuth,
    hub_user: str,
    certs: Path | None,
    listen: str,
    hub_listen: str | None,
    *,
    hub_tls: bool,
    client_certs: bool,
) -> list[str]:
    host, port = _parse_listen("--listen", hub_listen or listen)
    if host in ("0.0.0.0", "::"):
        host = "BROKER"
    args = ["--mqtt", f"{host}:{port}", "--mqtt-user", hub_user, "--mqtt-password-file", str(result.hub_password)]
    if certs is not None and (hub_tls or not hub_listen):
        args += ["--mqtt-ca", str(certs / "ca.pem")]
        if client_certs and not hub_listen:  # the devices' listener: the hub needs a certificate too
            cert = certs / "devices" / f"{hub_user}.pem"
            args += ["--mqtt-cert", str(cert), "--mqtt-key", str(cert.with_suffix(".key"))]
            if not cert.is_file():
                result.warnings.append(
                    f"no {cert}: the devices' listener wants a client certificate, and so the hub needs one:"
                    f" `ivs hub certs --out {certs} --no-server --device {hub_user}` (or give it --hub-listen)"
                )
    return args
