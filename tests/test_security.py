"""Security controls, each against the real thing: certificates from `ivs hub certs` checked by
cryptography's verifier and used by uvicorn and Mosquitto; per-device MQTT credentials and ACLs
from `ivs hub mqtt-auth` enforced by a real Mosquitto; the admin token on every admin endpoint."""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import ipaddress
import json
import shlex
import signal
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder
from cryptography.x509.verification import Store as TrustStore
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from ivs.cli import app as cli
from ivs.config import SensorConfig
from ivs.deploy import DeployAgent, DeployError, HubClient
from ivs.errors import ConfigError
from ivs.events import Stop
from ivs.hub.app import create_app
from ivs.hub.certs import make_certs
from ivs.hub.mqtt_auth import write_mqtt_auth
from ivs.hub.mqtt_ingest import MqttIngest
from ivs.hub.passwords import check_mosquitto_hash, mosquitto_hash
from ivs.hub.serve import check_tls_files
from ivs.hub.store import Store
from ivs.localnet import LocalMosquitto, ServerThread, free_port
from ivs.model import Model, load_model
from ivs.mqtt_client import MqttSettings, MqttSetupError
from ivs.outbox import Outbox
from ivs.package.zoo import resolve
from ivs.sinks.http import HttpSink
from ivs.sinks.mqtt import MqttSink
from tests.waiting import wait_for

ADMIN = "admin-secret-token"


def stop(sensor: str, seq: int) -> Stop:
    t = 1_700_000_000.0 + seq
    return Stop(sensor_id=sensor, seq=seq, frame=seq, time=t, t_capture_ns=int(t * 1e9), t_source=0.0, app="press",
                objects=1, labels=["person"], boxes=[(1.0, 2.0, 3.0, 4.0)])  # fmt: skip


# certificates


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certs_makes_a_ca_a_server_and_device_certificates_that_verify(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    r = CliRunner().invoke(
        cli, ["hub", "certs", "--out", str(out), "--hosts", "127.0.0.1,hub.lan", "--device", "cam-a"]
    )
    assert r.exit_code == 0, r.output
    for key in ("ca.key", "server.key", "devices/cam-a.key"):
        assert (out / key).stat().st_mode & 0o777 == 0o600, key
    ca, server, device = load(out / "ca.pem"), load(out / "server.pem"), load(out / "devices" / "cam-a.pem")
    now = dt.datetime.now(dt.UTC)
    policy = PolicyBuilder().store(TrustStore([ca])).time(now)
    for name in (x509.DNSName("hub.lan"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        chain = policy.build_server_verifier(name).verify(server, [])
        assert chain[-1] == ca
    with pytest.raises(x509.verification.VerificationError):
        policy.build_server_verifier(x509.DNSName("other.lan")).verify(server, [])  # not one of --hosts
    client = policy.build_client_verifier().verify(device, [])
    assert client.chain[-1] == ca
    assert device.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "cam-a"
    # a certificate from another CA does not verify against this one
    make_certs(tmp_path / "other")
    with pytest.raises(x509.verification.VerificationError):
        policy.build_server_verifier(x509.DNSName("localhost")).verify(load(tmp_path / "other" / "server.pem"), [])


def test_certs_refuses_to_overwrite_without_force_and_reuses_the_ca(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    make_certs(out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=r"server\.pem, .*server\.key exist: expected --force"):
        make_certs(out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing touched
    added = make_certs(out, server=False, devices=["cam-b"])  # a device later, from the same CA
    assert added.ca_reused and (out / "devices" / "cam-b.pem").exists()
    assert load(out / "devices" / "cam-b.pem").issuer == load(out / "ca.pem").subject
    make_certs(out, force=True)
    assert (out / "ca.pem").read_bytes() == before["ca.pem"]  # the CA is kept: sensors keep trusting it
    assert (out / "server.pem").read_bytes() != before["server.pem"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hosts": ["hub lan"]}, "host 'hub lan': expected an IP address or a DNS name"),
        ({"hosts": []}, "no hosts for the server certificate"),
        ({"devices": ["cam/1"]}, "device invalid name 'cam/1': expected 1 to 128 characters"),
        ({"devices": ["a", "a"]}, "a name is given twice"),
        ({"days": 0}, "days 0: expected 1 to 825"),
    ],
)
def test_certs_bad_input_says_what_was_expected(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        make_certs(tmp_path / "pki", **kwargs)
    assert not (tmp_path / "pki").exists()  # refused before writing anything


def test_certs_refuses_half_a_ca(tmp_path: Path) -> None:
    make_certs(tmp_path)
    (tmp_path / "ca.key").unlink()
    with pytest.raises(ConfigError, match="only one of ca.pem and ca.key"):
        make_certs(tmp_path, server=False, devices=["cam-a"])


# HTTPS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    make_certs(out, devices=["cam-a", "cam-b"])
    make_certs(out / "other")
    return out


def test_https_ingest_with_the_hub_ca_and_a_clear_error_without_it(pki: Path, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    hub = ServerThread(
        create_app(store, ADMIN), ssl_certfile=str(pki / "server.pem"), ssl_keyfile=str(pki / "server.key")
    )
    url = f"https://127.0.0.1:{hub.port}/api/v1/ingest"
    sinks: list[HttpSink] = []
    try:
        token = store.add_device("cam-a")
        trusting = HttpSink("cam-a", Outbox(tmp_path / "t.sqlite"), url, token=token, ca_file=str(pki / "ca.pem"))
        sinks.append(trusting)
        for seq in (1, 2, 3):
            trusting.write(stop("cam-a", seq))
        assert trusting.flush(20), trusting.last_error
        assert store.message_count() == 3
        # the system's CAs, and another deployment's CA, do not vouch for this hub
        for name, ca in (("system", None), ("other", str(pki / "other" / "ca.pem"))):
            sink = HttpSink("cam-a", Outbox(tmp_path / f"{name}.sqlite"), url, token=token, ca_file=ca)
            sinks.append(sink)
            sink.write(stop("cam-a", 4))
            wait_for(lambda s=sink: s.retries >= 1, what=f"a failed POST ({name} CAs)")  # type: ignore[misc]
            assert "TLS: the server's certificate did not verify" in str(sink.last_error)
            assert "set ca_file to the hub's CA" in str(sink.last_error)
            assert sink.outbox.depth() == 1  # kept, to be sent once the sensor trusts the hub
        assert store.message_count() == 3
    finally:
        for sink in sinks:
            sink.close(timeout=0.5)
        hub.stop()
        store.close()


def test_tls_options_say_what_is_wrong(pki: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected both --tls-cert and --tls-key"):
        check_tls_files(str(pki / "server.pem"), None)
    with pytest.raises(ConfigError, match="no such file"):
        check_tls_files(str(tmp_path / "nope.pem"), str(pki / "server.key"))
    with pytest.raises(ConfigError, match="expected a PEM certificate and its key"):
        check_tls_files(str(pki / "server.pem"), str(pki / "devices" / "cam-a.key"))  # not the server's key
    check_tls_files(str(pki / "server.pem"), str(pki / "server.key"))
    with pytest.raises(ConfigError, match="expected a CA certificate file"):
        HttpSink("cam-a", Outbox(tmp_path / "o.sqlite"), "https://127.0.0.1:1/", ca_file=str(tmp_path / "none.pem"))
    with pytest.raises(ConfigError, match="expected an https:// url"):
        HttpSink("cam-a", Outbox(tmp_path / "p.sqlite"), "http://127.0.0.1:1/", ca_file=str(pki / "ca.pem"))


# MQTT: per-device credentials and ACLs


def test_the_mosquitto_hash_is_mosquitto_passwd_s_format() -> None:
    # a line `mosquitto_passwd -b -c f cam s3cret` wrote (Mosquitto 2.0.11)
    line = "$7$101$zdu2hUpnaYVWVFSU$FisrfFa2UvUrUswDMco4bZG9K1aXkq/dV2a4oUu4bvmlZb37z+6m+wcysF4FIN4grfWwqYHNtwSB3KJlCLpxew=="
    assert check_mosquitto_hash("s3cret", line)
    assert not check_mosquitto_hash("s3cres", line)
    salt = base64.b64decode("zdu2hUpnaYVWVFSU")  # that line's salt: the same password gives the same line
    assert mosquitto_hash("s3cret", salt=salt) == line
    assert mosquitto_hash("x") != mosquitto_hash("x")  # a fresh salt each time


@dataclass
class Deployment:
    store: Store
    tokens: dict[str, str]
    broker: LocalMosquitto
    tls_port: int
    auth: Path
    pki: Path

    def hub_password(self) -> str:
        return (self.auth / "hub.password").read_text().strip()


def start_broker(store: Store, pki: Path, workdir: Path, *, client_certs: bool = False) -> tuple[LocalMosquitto, int]:
    tls_port = free_port()
    result = write_mqtt_auth(
        store, workdir / "auth", certs=pki, listen=f"127.0.0.1:{tls_port}", hub_listen=None, client_certs=client_certs
    )
    # LocalMosquitto's own plain loopback listener plays the hub's listener (`--hub-listen`)
    broker = LocalMosquitto(workdir / "broker", result.conf.read_text(), persistence=False)
    broker.start()
    return broker, tls_port


@pytest.fixture()
def deployment(pki: Path, tmp_path: Path) -> Iterator[Deployment]:
    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    tokens = {name: store.add_device(name) for name in ("cam-a", "cam-b")}
    broker, tls_port = start_broker(store, pki, tmp_path)
    yield Deployment(store, tokens, broker, tls_port, tmp_path / "auth", pki)
    broker.stop()
    store.close()


class Client:
    """A raw paho client: CONNACK and what arrives, recorded."""

    def __init__(self, port: int, user: str | None, password: str | None, *, ca: Path | None = None,
                 cert: Path | None = None, key: Path | None = None) -> None:  # fmt: skip
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.connack: Any = None
        self.got: list[tuple[str, bytes]] = []
        self.client.on_connect = lambda c, u, f, reason, p: setattr(self, "connack", reason)
        self.client.on_message = lambda c, u, m: self.got.append((m.topic, bytes(m.payload)))
        self.subacks: dict[int, Any] = {}
        self.client.on_subscribe = lambda c, u, mid, reasons, p: self.subacks.__setitem__(mid, reasons)
        if user is not None:
            self.client.username_pw_set(user, password)
        if ca is not None:
            self.client.tls_set(
                ca_certs=str(ca), certfile=str(cert) if cert else None, keyfile=str(key) if key else None
            )
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        wait_for(lambda: self.connack is not None, 10, "a CONNACK")

    def subscribe(self, topic: str) -> None:
        """Subscribe and wait for the broker's SUBACK: from then on nothing published is missed."""
        _, mid = self.client.subscribe(topic, qos=1)
        reasons = wait_for(lambda: self.subacks.get(mid), 10, f"the SUBACK for {topic}")
        assert not any(r.is_failure for r in reasons), reasons

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        sock = self.client.socket()  # still open when the broker refused the CONNECT
        if sock is not None:
            sock.close()


def mosquitto_reloads(broker: LocalMosquitto) -> int:
    """How often the broker has reloaded its configuration (SIGHUP), from its log."""
    log = broker.workdir / "mosquitto.log"
    return log.read_text(errors="replace").count("Reloading config") if log.exists() else 0


def tls_handshake(port: int, ca: Path, cert: Path | None = None, key: Path | None = None) -> None:
    """A TLS handshake with the broker, trusting `ca` (and presenting `cert`), as paho does."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        if cert is None and tls.version() == "TLSv1.3":
            # TLS 1.3 reports a refused client certificate after the client's handshake is done:
            # the broker's alert arrives on the first read (a broker that accepted it sends nothing)
            tls.settimeout(1.0)
            try:
                if tls.recv(1) == b"":
                    raise ConnectionResetError("the broker closed the connection")
            except TimeoutError:
                return


def test_a_device_publishes_only_under_its_own_name(deployment: Deployment) -> None:
    d = deployment
    ingest = MqttIngest(d.store, "127.0.0.1", d.broker.port, username="ivs-hub", password=d.hub_password())
    watcher = Client(d.broker.port, "ivs-hub", d.hub_password())
    sink = MqttSink(
        "cam-a",
        Outbox(d.auth.parent / "a.sqlite"),
        MqttSettings(port=d.tls_port, username="cam-a", password=d.tokens["cam-a"], tls_ca=str(d.pki / "ca.pem")),
    )
    spoofer = Client(d.tls_port, "cam-a", d.tokens["cam-a"], ca=d.pki / "ca.pem")
    try:
        assert ingest.wait_connected(10) and watcher.connack == 0
        watcher.subscribe("ivs/#")
        sink.write(stop("cam-a", 1))  # the real sink, over TLS, with cam-a's token as its password
        assert sink.flush(10)
        wait_for(lambda: d.store.message_count() == 1, what="cam-a's own event stored")
        # cam-a's credentials publishing as cam-b: Mosquitto drops it (PUBACK, no delivery) ...
        spoofer.client.publish("ivs/cam-b/events/stop", msgspec.json.encode(stop("cam-b", 1)), qos=1).wait_for_publish(
            5
        )
        # ... and cam-b's sensor_id on cam-a's own topic: the hub's ingest refuses it
        spoofer.client.publish("ivs/cam-a/events/stop", msgspec.json.encode(stop("cam-b", 2)), qos=1).wait_for_publish(
            5
        )
        # the hub user reads everything and writes nothing
        watcher.client.publish("ivs/cam-a/events/stop", msgspec.json.encode(stop("cam-a", 9)), qos=1).wait_for_publish(
            5
        )
        spoofer.client.publish("ivs/cam-a/marker", b"last", qos=1).wait_for_publish(5)  # same client: arrives after
        wait_for(lambda: ("ivs/cam-a/marker", b"last") in watcher.got, what="the marker")
        wait_for(lambda: ingest.rejected["sensor_mismatch"] == 1, what="the mismatch rejected")
        topics = [t for t, _ in watcher.got]
        assert "ivs/cam-b/events/stop" not in topics
        assert topics.count("ivs/cam-a/events/stop") == 2  # the sink's event and the mismatched one; not the hub's
        assert [(s.sensor_id, s.last_seq) for s in d.store.sensors()] == [("cam-a", 1)]
        assert d.store.message_count() == 1
    finally:
        sink.close(timeout=1)
        for c in (spoofer, watcher):
            c.close()
        ingest.close()


def test_unknown_users_wrong_passwords_and_revoked_devices_are_refused(deployment: Deployment) -> None:
    d = deployment
    refused = [
        Client(d.tls_port, "cam-a", d.tokens["cam-b"], ca=d.pki / "ca.pem"),  # another device's token
        Client(d.tls_port, "nobody", d.tokens["cam-a"], ca=d.pki / "ca.pem"),
        Client(d.tls_port, None, None, ca=d.pki / "ca.pem"),  # anonymous
        Client(d.broker.port, "ivs-hub", "guess"),
    ]
    for c in refused:
        assert c.connack is not None and c.connack.is_failure and c.connack == "Not authorized", c.connack
        c.close()
    b = Client(d.tls_port, "cam-b", d.tokens["cam-b"], ca=d.pki / "ca.pem")
    assert b.connack == 0
    disconnected: list[Any] = []
    b.client.on_disconnect = lambda c, u, f, reason, p: disconnected.append(reason)
    # revoke, regenerate, reload: the broker drops the connected device and refuses it after
    d.store.revoke_device("cam-b")
    write_mqtt_auth(d.store, d.auth, certs=d.pki, listen=f"127.0.0.1:{d.tls_port}", hub_listen=None)
    assert d.broker.proc is not None
    d.broker.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: bool(disconnected), 10, "the revoked device disconnected")
    b.close()
    again = Client(d.tls_port, "cam-b", d.tokens["cam-b"], ca=d.pki / "ca.pem")
    assert again.connack == "Not authorized"
    again.close()
    a = Client(d.tls_port, "cam-a", d.tokens["cam-a"], ca=d.pki / "ca.pem")
    assert a.connack == 0  # the others stay
    a.close()


def test_mqtt_tls_needs_the_deployment_s_ca(deployment: Deployment) -> None:
    d = deployment
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        tls_handshake(d.tls_port, d.pki / "other" / "ca.pem")  # what paho does first, with another CA
    tls_handshake(d.tls_port, d.pki / "ca.pem")
    plain = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    plain.username_pw_set("cam-a", d.tokens["cam-a"])
    plain.connect("127.0.0.1", d.tls_port)  # TCP connects; the TLS listener never answers MQTT in clear
    closed: list[Any] = []
    plain.on_disconnect = lambda c, u, f, reason, p: closed.append(reason)
    plain.loop_start()
    wait_for(lambda: closed, 10, "the TLS listener to close the plain-text connection")
    assert not plain.is_connected()
    plain.disconnect()
    plain.loop_stop()


def test_devices_log_in_with_their_client_certificate(pki: Path, tmp_path: Path) -> None:
    store = Store("sqlite://")
    store.add_device("cam-a")
    store.add_device("cam-b")
    broker, tls_port = start_broker(store, pki, tmp_path, client_certs=True)
    try:
        hub = Client(broker.port, "ivs-hub", (tmp_path / "auth" / "hub.password").read_text().strip())
        hub.subscribe("ivs/#")
        cam = Client(tls_port, None, None, ca=pki / "ca.pem", cert=pki / "devices" / "cam-a.pem",
                     key=pki / "devices" / "cam-a.key")  # fmt: skip
        assert cam.connack == 0  # no password: the certificate's CN is the user name
        cam.client.publish("ivs/cam-b/events/stop", b"spoofed", qos=1).wait_for_publish(5)
        cam.client.publish("ivs/cam-a/events/stop", b"own", qos=1).wait_for_publish(5)
        wait_for(lambda: len(hub.got) == 1, what="cam-a's own message")
        assert hub.got == [("ivs/cam-a/events/stop", b"own")]
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE"):  # no client certificate
            tls_handshake(tls_port, pki / "ca.pem")
        # revoked: the certificate still connects (no CRL), but the ACL no longer lets it publish
        store.revoke_device("cam-a")
        write_mqtt_auth(store, tmp_path / "auth", certs=pki, listen=f"127.0.0.1:{tls_port}", hub_listen=None,
                        client_certs=True)  # fmt: skip
        assert broker.proc is not None
        reloads = mosquitto_reloads(broker)
        broker.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: mosquitto_reloads(broker) > reloads, 10, "Mosquitto to reload its ACL")
        # Mosquitto queues a message to its subscribers before it answers the PUBACK, so cam-b's
        # marker, published after that PUBACK, reaches the hub after anything cam-a got through
        cam.client.publish("ivs/cam-a/events/stop", b"after revoke", qos=1).wait_for_publish(5)
        other = Client(tls_port, None, None, ca=pki / "ca.pem", cert=pki / "devices" / "cam-b.pem",
                       key=pki / "devices" / "cam-b.key")  # fmt: skip
        other.client.publish("ivs/cam-b/marker", b"last", qos=1).wait_for_publish(5)
        wait_for(lambda: ("ivs/cam-b/marker", b"last") in hub.got, what="cam-b's marker")
        assert hub.got == [("ivs/cam-a/events/stop", b"own"), ("ivs/cam-b/marker", b"last")]
        other.close()
        cam.close()
        hub.close()
    finally:
        broker.stop()


def test_mqtt_auth_bad_input_says_what_was_expected(pki: Path, tmp_path: Path) -> None:
    store = Store("sqlite://")
    store.add_device("ivs-hub")
    with pytest.raises(ConfigError, match="hub user 'ivs-hub' is also a device's name"):
        write_mqtt_auth(store, tmp_path / "a")
    with pytest.raises(ConfigError, match=r"no ca.pem, server.pem, server.key: expected a folder made by"):
        write_mqtt_auth(store, tmp_path / "a", hub_user="hub", certs=tmp_path)
    with pytest.raises(ConfigError, match="--client-certs needs TLS"):
        write_mqtt_auth(store, tmp_path / "a", hub_user="hub", client_certs=True)
    with pytest.raises(ConfigError, match="--listen '8883': expected HOST:PORT"):
        write_mqtt_auth(store, tmp_path / "a", hub_user="hub", listen="8883")
    assert not (tmp_path / "a").exists()
    r = CliRunner().invoke(
        cli, ["hub", "mqtt-auth", "--out", str(tmp_path / "b"), "--db", "sqlite://", "--certs", str(pki)]
    )
    assert r.exit_code == 0, r.output
    for name in ("passwd", "acl", "hub.password"):
        assert (tmp_path / "b" / name).stat().st_mode & 0o777 == 0o600, name
    password = (tmp_path / "b" / "hub.password").read_text()
    CliRunner().invoke(cli, ["hub", "mqtt-auth", "--out", str(tmp_path / "b"), "--db", "sqlite://"])
    assert (tmp_path / "b" / "hub.password").read_text() == password  # kept across runs: the hub keeps working


# the admin token


def routes_depending_on(app: Any, name: str) -> set[tuple[str, str]]:
    """(method, path) of every route with a dependency called `name` (the app's and the deploy
    router's `require_admin`, or `require_device`; ivs.hub.auth): new endpoints are covered by themselves."""

    def depends(route: APIRoute, inherited: list[Any]) -> bool:
        calls = [dep.call for dep in route.dependant.dependencies] + [d.dependency for d in inherited]
        return any(getattr(call, "__name__", "") == name for call in calls)

    def walk(routes: list[Any], prefix: str, inherited: list[Any]) -> Iterator[tuple[str, str]]:
        for route in routes:
            if isinstance(route, APIRoute):
                if depends(route, inherited):
                    yield from ((m, prefix + route.path) for m in route.methods or ())
            elif hasattr(route, "original_router"):  # FastAPI >= 0.16x keeps included routers whole
                context = route.include_context
                yield from walk(route.original_router.routes, prefix + context.prefix, inherited + context.dependencies)

    return set(walk(app.routes, "", []))


def url_of(path: str) -> str:
    return path.replace("{name}", "cam-x").replace("{", "").replace("}", "")


def test_every_admin_endpoint_needs_the_admin_token_and_no_device_token_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store("sqlite://")
    device_token = store.add_device("cam-a")
    app = create_app(store, ADMIN)
    admin_paths = routes_depending_on(app, "require_admin")
    assert {
        ("POST", "/api/v1/devices"),
        ("GET", "/api/v1/devices"),
        ("DELETE", "/api/v1/devices/{name}"),
    } <= admin_paths
    device_paths = routes_depending_on(app, "require_device") | {("POST", "/api/v1/ingest")}
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    body = {"name": "cam-x"}
    with TestClient(app) as client:
        for method, path in sorted(admin_paths):
            url = url_of(path)
            for headers in ({}, {"Authorization": f"Basic {ADMIN}"}, {"Authorization": f"Bearer {ADMIN}x"}):
                r = client.request(method, url, headers=headers, json=body)
                assert r.status_code == 401, (method, url, headers, r.text)
            r = client.request(method, url, headers={"Authorization": f"Bearer {device_token}"}, json=body)
            assert r.status_code in (401, 403), (method, url, r.text)  # a device token is no admin token
            r = client.request(method, url, headers={"Authorization": f"Bearer {ADMIN}"}, json=body)
            assert r.status_code not in (401, 403), (method, url, r.text)
        for method, path in sorted(device_paths):  # ... and the admin token is no device token
            r = client.request(method, url_of(path), headers={"Authorization": f"Bearer {ADMIN}"}, json=[])
            assert r.status_code == 401, (method, path, r.text)
    assert (device_token.encode(), ADMIN.encode()) in compared  # compared in constant time
    store.close()


# the hub's MQTT ingest over TLS


def invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, args, env=env)


class SpiedIngest(MqttIngest):
    """The real ingest, remembered, so that a test can wait for its subscriptions."""

    made: list[MqttIngest] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        SpiedIngest.made.append(self)


@pytest.mark.parametrize("way", ["hub-tls-listener", "devices-listener-with-a-certificate"])
def test_the_hub_ingests_over_tls_with_its_credentials(
    way: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ivs hub certs` + `ivs hub mqtt-auth`, then `ivs hub serve` with the options mqtt-auth printed:
    the hub's ingest logs in over TLS and stores what a device publishes."""
    pki, auth, db = tmp_path / "pki", tmp_path / "auth", f"sqlite:///{tmp_path / 'hub.sqlite'}"
    r = invoke(["hub", "certs", "--out", str(pki), "--device", "cam-a", "--device", "ivs-hub"])
    assert r.exit_code == 0, r.output
    store = Store(db)
    token = store.add_device("cam-a")
    tls_port, hub_port = free_port(), free_port()
    args = [
        "hub",
        "mqtt-auth",
        "--out",
        str(auth),
        "--db",
        db,
        "--certs",
        str(pki),
        "--listen",
        f"127.0.0.1:{tls_port}",
    ]
    if way == "hub-tls-listener":  # devices log in with their token; the hub on a TLS listener of its own
        args += ["--hub-listen", f"127.0.0.1:{hub_port}", "--hub-tls"]
        device = MqttSettings(port=tls_port, username="cam-a", password=token, tls_ca=str(pki / "ca.pem"))
    else:  # everyone on the devices' listener, by certificate (the hub's CN is its user name)
        args += ["--hub-listen", "", "--client-certs"]
        d = pki / "devices"
        device = MqttSettings(port=tls_port, tls_ca=str(pki / "ca.pem"), tls_cert=str(d / "cam-a.pem"),
                              tls_key=str(d / "cam-a.key"))  # fmt: skip
    r = invoke(args)
    assert r.exit_code == 0, r.output
    printed = next(line for line in r.output.splitlines() if line.startswith("the hub: ivs hub serve "))
    hub_args = shlex.split(printed.removeprefix("the hub: ivs hub serve ").removesuffix(" ..."))
    assert "--mqtt-ca" in hub_args and ("--mqtt-cert" in hub_args) == (way != "hub-tls-listener")
    conf = (auth / "mosquitto.conf").read_text()
    assert "plain" not in conf and conf.count("cafile") == (2 if way == "hub-tls-listener" else 1)
    broker = LocalMosquitto(tmp_path / "broker", conf, persistence=False)
    broker.start()
    sink = MqttSink("cam-a", Outbox(tmp_path / "a.sqlite"), device)
    served: list[dict[str, Any]] = []

    def serving(app: Any, **kwargs: Any) -> None:  # in uvicorn's place: the HTTP side is tested elsewhere
        assert SpiedIngest.made[-1].wait_connected(10)
        sink.write(stop("cam-a", 1))
        assert sink.flush(10)
        wait_for(lambda: store.message_count() == 1, what="cam-a's event stored through the hub's TLS ingest")
        served.append(kwargs)

    monkeypatch.setattr("ivs.hub.serve.MqttIngest", SpiedIngest)
    monkeypatch.setattr("ivs.hub.serve.uvicorn.run", serving)
    try:
        r = invoke(["hub", "serve", "--db", db, *hub_args])
        assert r.exit_code == 0, r.output
        assert served and SpiedIngest.made[-1].last_error is None
        assert [(s.sensor_id, s.last_seq) for s in store.sensors()] == [("cam-a", 1)]
    finally:
        sink.close(timeout=1)
        broker.stop()
        store.close()


def test_the_hub_says_why_it_cannot_use_a_broker_over_tls(
    pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store("sqlite://")
    store.add_device("cam-a")
    store.add_device("cam-b")
    broker, tls_port = start_broker(store, pki, tmp_path, client_certs=True)  # the devices' listener wants certificates
    password = (tmp_path / "auth" / "hub.password").read_text().strip()
    ca, other = str(pki / "ca.pem"), str(pki / "other" / "ca.pem")
    try:
        for port, tls_ca, why in [
            (tls_port, other, r"TLS: the broker's certificate did not verify \(.*\): expected one signed by the CA"),
            (tls_port, ca, "TLS: the broker wants a client certificate"),
            (broker.port, ca, "expected a TLS listener there"),  # the plain loopback listener
        ]:
            with pytest.raises(MqttSetupError, match=why):  # a ConfigError too: `ivs hub serve` says it and stops
                MqttIngest(store, "127.0.0.1", port, username="ivs-hub", password=password, tls_ca=tls_ca)

        def never(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("the hub served with an MQTT ingest that cannot work")

        monkeypatch.setattr("ivs.hub.serve.uvicorn.run", never)
        serve = ["hub", "serve", "--db", "sqlite://", "--mqtt", f"127.0.0.1:{tls_port}"]
        r = invoke([*serve, "--mqtt-ca", other])
        assert r.exit_code == 1 and "the broker's certificate did not verify" in r.output, r.output
        r = invoke([*serve, "--mqtt-ca", str(tmp_path / "none.pem")])
        assert r.exit_code == 1 and "MQTT CA file" in r.output and "no such file" in r.output, r.output
        r = invoke([*serve, "--mqtt-cert", str(pki / "devices" / "cam-a.pem")])
        assert r.exit_code == 1 and "without --mqtt-ca" in r.output, r.output
        # nothing listening yet is no setup error: the ingest waits, and says what it waits for
        port = free_port()
        waiting = MqttIngest(store, "127.0.0.1", port, tls_ca=ca)
        try:
            wait_for(
                lambda: waiting.last_error == f"MQTT 127.0.0.1:{port} did not answer", 10, "the ingest's last_error"
            )
        finally:
            waiting.close()
    finally:
        broker.stop()
        store.close()


def test_mqtt_auth_hub_tls_options_say_what_was_expected(pki: Path, tmp_path: Path) -> None:
    store = Store("sqlite://")
    with pytest.raises(ConfigError, match="--hub-tls needs TLS: expected --certs DIR too"):
        write_mqtt_auth(store, tmp_path / "a", hub_tls=True)
    with pytest.raises(ConfigError, match="--hub-tls without a hub listener: expected --hub-listen"):
        write_mqtt_auth(store, tmp_path / "a", certs=pki, hub_listen=None, hub_tls=True)
    result = write_mqtt_auth(store, tmp_path / "b", certs=pki, hub_listen=None, client_certs=True)
    assert any("the hub needs one: `ivs hub certs --out" in w and "--device ivs-hub" in w for w in result.warnings)
    assert result.hub_args[:2] == ["--mqtt", "BROKER:8883"]  # the listener is on every address


# the deploy agent and the operator's commands against an https hub


def test_deploy_trusts_an_https_hub_through_ca_file(pki: Path, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    hub = ServerThread(
        create_app(store, ADMIN), ssl_certfile=str(pki / "server.pem"), ssl_keyfile=str(pki / "server.key")
    )
    url, ca = f"https://127.0.0.1:{hub.port}", str(pki / "ca.pem")
    models: list[Model] = [load_model("face", runtime="onnxruntime")]
    try:
        token = store.add_device("cam-a")
        env = {"IVS_HUB_URL": url, "IVS_HUB_ADMIN_TOKEN": ADMIN}
        r = invoke(["hub", "package", "upload", str(resolve("mask")), "--ca-file", ca], env=env)
        assert r.exit_code == 0, r.output
        r = invoke(["hub", "deploy", "cam-a", "--package", "mask"], env=env | {"IVS_HUB_CA_FILE": ca})
        assert r.exit_code == 0, r.output
        r = invoke(["hub", "deploy-status", "cam-a"], env=env)  # the system's CAs do not know this hub
        assert r.exit_code == 1 and "TLS: the hub's certificate did not verify" in r.output, r.output

        def agent(ca_file: str | None, folder: Path) -> DeployAgent:
            return DeployAgent(HubClient(url, token, ca_file=ca_file), folder, current=lambda: models[-1],
                               load=lambda p: load_model(p, runtime="onnxruntime"), swap=models.append)  # fmt: skip

        # another deployment's CA, and the system's CAs: refused, saying so; nothing downloaded or run
        for name, ca_file in (("other", str(pki / "other" / "ca.pem")), ("system", None)):
            with pytest.raises(DeployError, match=r"TLS: the hub's certificate did not verify .*set deploy.ca_file"):
                agent(ca_file, tmp_path / name).poll()
            assert not list((tmp_path / name).iterdir()) and len(models) == 1
        # the sensor config's deploy.ca_file: the agent polls, downloads, verifies and swaps over HTTPS
        cfg = SensorConfig.model_validate({"id": "cam-a", "source": {"url": "synthetic:64x48@5"}, "model": {"name": "face"},
                                           "deploy": {"hub": url, "ca_file": ca, "folder": str(tmp_path / "ok")}})  # fmt: skip
        assert cfg.deploy is not None and cfg.deploy.ca_file == ca
        report = agent(cfg.deploy.ca_file, Path(cfg.deploy.folder)).poll()
        assert report is not None and report["status"] == "ok", report
        assert report["model"]["name"] == "mask" and models[-1].manifest.name == "mask"
        r = invoke(["hub", "deploy-status", "cam-a", "--ca-file", ca], env=env)
        assert r.exit_code == 0 and json.loads(r.output)["in_sync"], r.output
        with pytest.raises(ConfigError, match="expected an https:// url"):
            HubClient("http://127.0.0.1:1", token, ca_file=ca)
        with pytest.raises(ConfigError, match="expected a CA certificate file"):
            HubClient(url, token, ca_file=str(tmp_path / "none.pem"))
    finally:
        for m in models:
            m.close()
        hub.stop()
        store.close()


def hub_keeping_the_broker_files(d: Deployment, tmp_path: Path) -> tuple[ServerThread, Any]:
    """A hub that rewrites the deployment's Mosquitto files after each enrolment and revocation
    and reloads the broker (`--mqtt-auth`, `--mqtt-broker-pid`), and its `BrokerSync`."""
    from ivs.hub.mqtt_auth import BrokerSync

    assert d.broker.proc is not None
    pid = tmp_path / "mosquitto.pid"
    pid.write_text(f"{d.broker.proc.pid}\n")
    sync = BrokerSync(d.store, d.auth, pid_file=pid)
    return ServerThread(create_app(d.store, ADMIN, devices_changed=sync)), sync


def test_a_device_enrols_with_its_groups_secret_and_once_revoked_is_refused_on_http_and_mqtt(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enrolment end to end with no `ivs hub device add`: `ivs enrol` with the group's secret gets
    the device its token; the hub rewrites Mosquitto's files and reloads it (`--mqtt-auth`), so
    the device publishes over TLS at once; revoked over the API, it is refused on both."""
    from tests.messages import body, count

    d = deployment
    hub, _ = hub_keeping_the_broker_files(d, tmp_path)
    try:
        secret = d.store.add_group("site-a")
        runner = CliRunner()

        def enrol(name: str, secret: str, out: Path) -> Any:
            monkeypatch.setenv("IVS_ENROL_SECRET", secret)
            return runner.invoke(
                cli, ["enrol", "--hub", hub.url, "--group", "site-a", "--name", name, "--out", str(out)]
            )

        wrong = enrol("cam-new", "not-the-secret", tmp_path / "w")
        assert wrong.exit_code == 1 and "enrolment group 'site-a' does not take this secret" in wrong.output
        reloads = mosquitto_reloads(d.broker)
        done = enrol("cam-new", secret, tmp_path / "creds")
        assert done.exit_code == 0, done.output
        env = dict(line.split("=", 1) for line in (tmp_path / "creds" / "ivs.env").read_text().splitlines())
        token = env["IVS_HUB_TOKEN"]
        assert env["IVS_MQTT_PASSWORD"] == token and (tmp_path / "creds" / "ivs.env").stat().st_mode & 0o077 == 0
        assert "cam-new" in {dev.name for dev in d.store.devices()}

        def ingest(seq: int) -> int:
            req = urllib.request.Request(f"{hub.url}/api/v1/ingest", data=body(count("cam-new", seq, 1.7e9 + seq)),
                                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})  # fmt: skip
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return int(r.status)
            except urllib.error.HTTPError as err:
                return int(err.code)

        assert ingest(1) == 200
        wait_for(lambda: mosquitto_reloads(d.broker) > reloads, 10, "the broker reloaded after the enrolment")
        cam = Client(d.tls_port, "cam-new", token, ca=d.pki / "ca.pem")
        assert cam.connack == 0
        disconnected: list[Any] = []
        cam.client.on_disconnect = lambda c, u, f, reason, p: disconnected.append(reason)
        assert enrol("cam-new", secret, tmp_path / "again").output.count("exists and is active") == 1

        # Revoked over the API: refused over HTTP, dropped and refused by the broker.
        req = urllib.request.Request(f"{hub.url}/api/v1/devices/cam-new", method="DELETE",
                                     headers={"Authorization": f"Bearer {ADMIN}"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        assert ingest(2) == 401
        wait_for(lambda: bool(disconnected), 10, "the revoked device dropped by the broker")
        cam.close()
        again = Client(d.tls_port, "cam-new", token, ca=d.pki / "ca.pem")
        assert again.connack == "Not authorized"
        again.close()
        revoked = enrol("cam-new", secret, tmp_path / "revoked")
        assert revoked.exit_code == 1 and "was revoked: an operator must add it again" in revoked.output
        d.store.revoke_group("site-a")
        closed = enrol("cam-other", secret, tmp_path / "closed")
        assert closed.exit_code == 1 and "does not take this secret" in closed.output
    finally:
        assert hub.stop()


BAD_NAMES = ["x\n", "cam-a\n", "x\r", "a b", "a/b", "a#", "a+", "a\x00", " cam", "cam\t"]
"""Names that Mosquitto's password file or ACL cannot hold as one word (a trailing newline once
passed `re.match(... $)` and left the broker with no ACL)."""


def test_names_the_broker_files_cannot_hold_are_refused_and_the_acl_stays_whole(
    deployment: Deployment, tmp_path: Path
) -> None:
    from ivs.hub.mqtt_auth import check_acl

    d = deployment
    assert d.broker.proc is not None
    hub, sync = hub_keeping_the_broker_files(d, tmp_path)
    secret = d.store.add_group("site-a")

    def post(path: str, body: dict[str, Any], token: str | None = None) -> int:
        headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
        req = urllib.request.Request(hub.url + path, data=json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    try:
        for bad in BAD_NAMES:
            assert post("/api/v1/enrol", {"group": "site-a", "device": bad, "secret": secret}) == 422, repr(bad)
            assert post("/api/v1/devices", {"name": bad}, ADMIN) == 422, repr(bad)
            added = CliRunner().invoke(cli, ["hub", "device", "add", bad, "--db", str(d.store.engine.url)])
            assert added.exit_code == 1 and "invalid name" in added.output, (repr(bad), added.output)
        assert {dev.name for dev in d.store.devices()} == {"cam-a", "cam-b"}
        assert sync.syncs == 0  # nothing refused reached the broker's files

        # A good enrolment rewrites the files and reloads the broker: its ACL checks clean.
        reloads = mosquitto_reloads(d.broker)
        assert post("/api/v1/enrol", {"group": "site-a", "device": "cam-c", "secret": secret}) == 201
        wait_for(lambda: mosquitto_reloads(d.broker) > reloads, 10, "the broker reloaded after the enrolment")
        acl = (d.auth / "acl").read_text()
        check_acl(acl, ["ivs-hub", "cam-a", "cam-b", "cam-c"])
        assert "user cam-c" in acl and d.broker.proc.poll() is None
    finally:
        assert hub.stop()

    # The broker still enforces it: cam-a neither publishes as cam-b nor reads cam-b's topics.
    watcher = Client(d.broker.port, "ivs-hub", d.hub_password())
    a = Client(d.tls_port, "cam-a", d.tokens["cam-a"], ca=d.pki / "ca.pem")
    b = Client(d.tls_port, "cam-b", d.tokens["cam-b"], ca=d.pki / "ca.pem")
    try:
        watcher.subscribe("ivs/#")
        a.client.subscribe("ivs/#", qos=1)
        a.client.publish("ivs/cam-b/events/stop", b"spoofed", qos=1).wait_for_publish(5)
        a.client.publish("ivs/cam-a/marker", b"a-done", qos=1).wait_for_publish(5)
        b.client.publish("ivs/cam-b/events/stop", b"cam-b's own", qos=1).wait_for_publish(5)
        b.client.publish("ivs/cam-b/marker", b"b-done", qos=1).wait_for_publish(5)
        wait_for(lambda: ("ivs/cam-b/marker", b"b-done") in watcher.got, 10, "cam-b's marker at the hub")
        wait_for(lambda: ("ivs/cam-a/marker", b"a-done") in watcher.got, 10, "cam-a's marker at the hub")
        wait_for(lambda: ("ivs/cam-a/marker", b"a-done") in a.got, 10, "cam-a's own marker back")
        assert ("ivs/cam-b/events/stop", b"spoofed") not in watcher.got
        assert ("ivs/cam-b/events/stop", b"cam-b's own") in watcher.got
        assert not [t for t, _ in a.got if t.startswith("ivs/cam-b/")]  # cam-b's messages never reached cam-a
    finally:
        for c in (watcher, a, b):
            c.close()


def test_the_broker_files_writer_leaves_out_a_bad_name_already_stored(pki: Path, tmp_path: Path) -> None:
    """A name stored before names were checked whole is left out of the files with a warning;
    every other device keeps its ACL."""
    from sqlalchemy.orm import Session

    from ivs.hub.passwords import mosquitto_hash
    from ivs.hub.store.schema import Device, MqttCredential

    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    try:
        store.add_device("cam-a")
        with Session(store.engine) as s, s.begin():  # as an older hub could have stored it
            s.add(Device(name="cam-x\n", token_hash="0" * 64, created=1.0))
            s.add(MqttCredential(name="cam-x\n", password_hash=mosquitto_hash("x")))
        result = write_mqtt_auth(store, tmp_path / "auth", certs=pki, listen="127.0.0.1:8883", hub_listen=None)
        assert result.devices == ["cam-a"]
        assert any("'cam-x\\n' left out of the broker's files" in w for w in result.warnings)
        assert "cam-x" not in result.acl.read_text() and "cam-x" not in result.passwd.read_text()
    finally:
        store.close()
