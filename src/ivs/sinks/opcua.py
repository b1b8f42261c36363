"""An OPC UA server on the sensor (asyncua): each app's state as variables a PLC or SCADA
subscribes to.

Under Objects, a folder named for the sensor holds one object per app that offers values
(`ivs.sinks.plant`: a safety zone's `stop`, a crowding app's `crowded`, a line's `in` and
`out`, a zone's `occupancy` and `entered`), each a read-only variable with a string node id
`ns=<ivs>;s=<sensor>.<app>.<field>` in the namespace `urn:ivs:sensor`. A change is written in the
server's loop as soon as the event that made it is written; a client subscribed with a
publishing interval of 0 gets the data change at once.

Who may connect:

- `username` + a password (from the environment): user/password logins only;
- `client_certs`: a folder of client certificates (DER or PEM) whose holders may log in with
  them (X.509 user tokens);
- `cert` + `key`: the server's certificate; then only Basic256Sha256 Sign&Encrypt channels are
  offered (a password then never crosses the network in clear). Certificate logins need it.

With none of these the server takes anonymous clients, and only on a loopback address: one a
network reaches must be told who may connect (ConfigError otherwise).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from pathlib import Path
from typing import Any

import msgspec

from ivs.errors import ConfigError
from ivs.sinks.plant import LoopThread, PlantState, Point

log = logging.getLogger(__name__)

NAMESPACE = "urn:ivs:sensor"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpcUaSink:
    """Serves `points` over OPC UA on host:port until `close`."""

    def __init__(
        self,
        sensor_id: str,
        points: list[Point],
        host: str = "127.0.0.1",
        port: int = 4840,
        *,
        username: str | None = None,
        password: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        client_certs: str | None = None,
    ) -> None:
        try:
            from asyncua import ua
            from asyncua.server.server import Server
        except ImportError:
            raise ConfigError("an opcua sink needs asyncua: expected `pip install 'ivs[plant]'`") from None
        if (username is None) != (password is None):
            raise ConfigError("opcua sink: username and a password come together: expected both or neither")
        if (cert is None) != (key is None):
            raise ConfigError("opcua sink: cert and key come together: expected both or neither")
        if client_certs is not None and cert is None:
            raise ConfigError("opcua sink: client_certs need the server's cert and key (encrypted channels)")
        if username is None and client_certs is None and not _loopback(host):
            raise ConfigError(
                f"opcua sink on {host}: a server the network reaches needs username + password_env or client_certs"
            )
        self.sensor_id, self.host, self.port = sensor_id, host, port
        self.url = f"opc.tcp://{host}:{port}/ivs/"
        self._ua = ua
        self._trusted = _load_certs(Path(client_certs)) if client_certs else []
        self._username, self._password = username, password
        self.state = PlantState(points, self._changed)
        self.nodeids: dict[tuple[str, str], Any] = {}
        self._loop = LoopThread("ivs-opcua")
        self._server = Server(user_manager=_Users(self) if (username or client_certs) else None)  # type: ignore[arg-type]

        async def start() -> None:
            server = self._server
            await server.init()
            server.set_endpoint(self.url)
            server.set_server_name(f"ivs sensor {sensor_id}")
            if cert is not None and key is not None:
                await server.load_certificate(cert)
                await server.load_private_key(key)
                server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            else:
                server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            tokens: list[type] = []
            if username is not None:
                tokens.append(ua.UserNameIdentityToken)
            if client_certs is not None:
                tokens.append(ua.X509IdentityToken)
            server.set_identity_tokens(tokens or [ua.AnonymousIdentityToken])
            idx = await server.register_namespace(NAMESPACE)
            folder = await server.nodes.objects.add_folder(f"ns={idx};s={sensor_id}", sensor_id)
            objects: dict[str, Any] = {}
            for p in points:
                if p.app not in objects:
                    objects[p.app] = await folder.add_object(f"ns={idx};s={sensor_id}.{p.app}", p.app)
                variant = ua.VariantType.Boolean if p.kind == "bool" else ua.VariantType.UInt32
                initial = False if p.kind == "bool" else 0
                node = await objects[p.app].add_variable(
                    f"ns={idx};s={sensor_id}.{p.app}.{p.field}", p.field, initial, variant
                )
                self.nodeids[(p.app, p.field)] = (node.nodeid, variant)
            await server.start()

        try:
            self._loop.run(start(), 30)
        except (OSError, RuntimeError, ValueError) as err:
            self._loop.stop()
            raise ConfigError(f"opcua sink: cannot serve on {host}:{port}: {err}") from None
        log.info("OPC UA on %s: %d variables under Objects/%s", self.url, len(points), sensor_id)

    def _changed(self, point: Point, value: int) -> None:
        """A value changed (the sensor's thread): written in the server's loop, not waited for."""
        nodeid, variant = self.nodeids[(point.app, point.field)]
        ua = self._ua
        data = ua.DataValue(ua.Variant(bool(value) if point.kind == "bool" else value, variant))
        self._loop.submit(self._server.write_attribute_value(nodeid, data))

    def write(self, record: msgspec.Struct) -> None:
        self.state.apply(record)

    def flush(self, timeout: float = 0.0) -> bool:
        return True

    def close(self) -> None:
        if self._loop.closed:
            return
        try:
            self._loop.run(self._server.stop(), 10)
        except (RuntimeError, TimeoutError, OSError):
            log.debug("opcua server stop", exc_info=True)
        self._loop.stop()


def _load_certs(folder: Path) -> list[bytes]:
    """The DER bytes of every certificate in a folder (.der, .pem, .crt)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    if not folder.is_dir():
        raise ConfigError(f"opcua sink: client_certs {folder}: expected a folder of client certificates")
    out = []
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        try:
            cert = (
                x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
            )
        except ValueError:
            log.warning("opcua sink: %s is not a certificate; skipped", path)
            continue
        out.append(cert.public_bytes(Encoding.DER))
    return out


class _Users:
    """asyncua's user manager: a password login must match (compared in constant time); a
    certificate login must present one of the trusted client certificates."""

    def __init__(self, sink: OpcUaSink) -> None:
        self.sink = sink

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        s = self.sink
        if username is not None and s._username is not None and s._password is not None:
            ok = hmac.compare_digest(username.encode(), s._username.encode()) & hmac.compare_digest(
                (password or "").encode(), s._password.encode()
            )
            return User(role=UserRole.User) if ok else None
        if certificate is not None and s._trusted:
            from cryptography.hazmat.primitives.serialization import Encoding

            der = certificate.public_bytes(Encoding.DER) if hasattr(certificate, "public_bytes") else bytes(certificate)
            return User(role=UserRole.User) if any(hmac.compare_digest(der, t) for t in s._trusted) else None
        return None
