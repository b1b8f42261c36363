"""MQTT with a user name and password, and over TLS, against a real Mosquitto."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ivs.consumer import Consumer
from ivs.events import Stop
from ivs.mqtt_client import MqttSettings
from ivs.outbox import Outbox
from ivs.sinks.mqtt import MqttSink
from tests.broker import Mosquitto
from tests.waiting import wait_for


def stop_event(seq: int) -> Stop:
    return Stop(frame=seq, time=1.0, t_capture_ns=seq, t_source=0.1, app="cell", objects=1, labels=["person"],
                boxes=[(1.0, 2.0, 3.0, 4.0)], sensor_id="sec1", seq=seq)  # fmt: skip


def test_password_protected_broker(tmp_path: Path):
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "cam", "s3cret"], check=True, capture_output=True)
    pw.chmod(0o600)
    broker = Mosquitto(tmp_path / "b", f"password_file {pw}\n")
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.start()
    try:
        got: list = []
        consumer = Consumer("127.0.0.1", broker.port, got.append, username="cam", password="s3cret")
        wrong = MqttSink(
            "sec1", Outbox(tmp_path / "w.sqlite"), MqttSettings(port=broker.port, username="cam", password="nope")
        )
        right = MqttSink(
            "sec1", Outbox(tmp_path / "r.sqlite"), MqttSettings(port=broker.port, username="cam", password="s3cret")
        )
        assert wait_for(right.connected.is_set) and wait_for(consumer.connected.is_set)
        wrong.write(stop_event(1))
        right.write(stop_event(2))
        assert wait_for(lambda: len(got) == 1)  # the right password's message: the path is live
        assert wait_for(lambda: wrong.refusals >= 1, what="the broker to refuse the wrong password")
        assert [m.seq for m in got] == [2]  # the wrong password never got in
        assert not wrong.connected.is_set() and wrong.outbox.depth() == 1  # kept, not lost
        for s in (wrong, right):
            s.close(timeout=1)
        consumer.close()
    finally:
        broker.stop()


def make_ca_and_server(d: Path) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ivs test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = d / "ca.pem", d / "server.pem", d / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return paths


def test_tls_broker(tmp_path: Path):
    ca, cert, key = make_ca_and_server(tmp_path)
    broker = Mosquitto(tmp_path / "b", f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    broker.start()
    try:
        sink = MqttSink("sec1", Outbox(tmp_path / "o.sqlite"), MqttSettings(port=broker.port, tls_ca=str(ca)))
        assert wait_for(sink.connected.is_set)
        sink.write(stop_event(1))
        assert sink.flush(10)  # PUBACK came back over TLS
        plain = MqttSink("sec2", Outbox(tmp_path / "p.sqlite"), MqttSettings(port=broker.port))
        # a plain-text client cannot talk to the TLS listener: its attempt fails, it never connects
        assert wait_for(lambda: plain.connect_failures + plain.refusals >= 1, what="the plain attempt to fail")
        assert not plain.connected.is_set() and plain.connects == 0
        plain.close(timeout=0.5)
        sink.close(timeout=1)
    finally:
        broker.stop()
