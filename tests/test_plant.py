"""Outputs a plant wires to, against real protocol clients: a pymodbus client polling the
sensor's Modbus TCP server and an asyncua client subscribed to its OPC UA server. A person
walking into a safety zone on vtest.avi sets the coil and the variable on the very frame of the
stop, and both clear on the frame of the clear, after the configured empty frames."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from pathlib import Path

import pytest
from asyncua import Client, ua
from pymodbus.client import ModbusTcpClient

from ivs.build import RunOptions, build_sensor
from ivs.config import parse
from ivs.errors import ConfigError
from ivs.localnet import free_port
from ivs.sinks.modbus import ModbusSink
from ivs.sinks.opcua import OpcUaSink
from ivs.sinks.plant import points_of

ZONE = [[420, 300], [520, 300], [520, 380], [420, 380]]
"""Where walkers on vtest.avi stand in frames 16-25 and 51-56 (feet; the stops clear at 30 and 61)."""


class Subscriber:
    """An asyncua client on its own loop, subscribed (publishing interval 0) to one variable."""

    def __init__(self, url: str, nodeid: str, user: str | None = None, password: str | None = None) -> None:
        self.changes: list[bool] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = Client(url)
        if user is not None:
            self.client.set_user(user)
            self.client.set_password(password or "")
        self.nodeid = nodeid
        try:
            self.run(self._start())
        except BaseException:
            self.stop()
            raise

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(20)

    async def _start(self) -> None:
        await self.client.connect()
        self.node = self.client.get_node(self.nodeid)
        sub = await self.client.create_subscription(0, self)
        await sub.subscribe_data_change(self.node)

    def datachange_notification(self, node, val, data) -> None:
        self.changes.append(val)

    def read(self):
        return self.run(self.node.read_value())

    def close(self) -> None:
        self.run(self.client.disconnect())
        self.stop()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def test_a_stop_sets_the_coil_and_the_variable_on_its_frame_and_both_clear_with_it(vtest: Path, tmp_path: Path):
    mb_port, ua_port = free_port(), free_port()
    out = tmp_path / "out.jsonl"
    cfg, problems, _ = parse(
        f"id: press-1\nsource: {{url: '{vtest}', fps: 0, max_frames: 70}}\n"
        "model: {name: person, runtime: onnxruntime}\n"
        f"apps:\n  - {{type: safety, name: press, polygon: {ZONE}, trigger: anchor, clear_frames: 5}}\n"
        "  - {type: line, name: door, p1: [384, 0], p2: [384, 576]}\n"
        f"sinks:\n  - {{type: jsonl, path: '{out}'}}\n  - {{type: modbus, port: {mb_port}}}\n"
        f"  - {{type: opcua, port: {ua_port}}}\n"
    )
    assert cfg is not None, problems
    coil: dict[int, bool] = {}
    variable: dict[int, bool] = {}
    modbus = ModbusTcpClient("127.0.0.1", port=mb_port)
    sub: Subscriber | None = None

    def poll(record, det) -> None:
        # after the frame's record and events reached every sink, before the next frame
        coil[record.frame] = modbus.read_coils(0, count=1).bits[0]
        variable[record.frame] = sub.read() if sub is not None else None

    built = build_sensor(cfg, RunOptions(watch=False, ledger_period_s=None, on_record=poll))
    try:
        assert modbus.connect()
        sub = Subscriber(f"opc.tcp://127.0.0.1:{ua_port}/ivs/", "ns=2;s=press-1.press.stop")
        # the map: coil 0 is the press's stop; registers 0-3 the door's in and out
        registers = modbus.read_holding_registers(0, count=4).registers
        built.sensor.run()
    finally:
        built.close()
        modbus.close()
        if sub is not None:
            sub.close()
    assert registers == [0, 0, 0, 0]
    events = [json.loads(line) for line in out.read_text().splitlines()]
    stops = [e["frame"] for e in events if e.get("kind") == "stop"]
    clears = [e["frame"] for e in events if e.get("kind") == "clear"]
    assert len(stops) == len(clears) == 2, (stops, clears)
    for stop, clear in zip(stops, clears, strict=True):
        assert stop == 0 or (coil[stop - 1] is False and variable[stop - 1] is False)
        assert coil[stop] is True and variable[stop] is True  # on the stop's own frame
        assert all(coil[f] and variable[f] for f in range(stop, clear))
        assert coil[clear] is False and variable[clear] is False
    # The initial value (asyncua may report it twice when the subscription's first publish and
    # the server's first notification cross, as under load), then each change once.
    initial = len(list(itertools.takewhile(lambda v: v is False, sub.changes)))
    assert initial >= 1 and sub.changes[initial:] == [True, False, True, False], sub.changes


def test_writes_are_refused_and_counts_read_back_as_uint32(tmp_path: Path):
    from ivs.events import Count

    port = free_port()
    sink = ModbusSink(points_of([("press", "safety"), ("door", "line"), ("shelf", "zone")]), port=port)
    client = ModbusTcpClient("127.0.0.1", port=port)
    try:
        assert client.connect()
        count = Count(
            sensor_id="s", seq=1, frame=1, time=0.0, t_capture_ns=0, t_source=0.0, app="door", track_id=1,
            class_id=0, label="person", direction="in", anchor_from=(0.0, 0.0), anchor_to=(1.0, 1.0),
            totals={"in": {"person": 70_000, "car": 3}, "out": {"person": 2}},
        )  # fmt: skip
        sink.write(count)
        regs = client.read_input_registers(0, count=8).registers
        assert (regs[0] << 16 | regs[1], regs[2] << 16 | regs[3]) == (70_003, 2)
        assert client.read_holding_registers(0, count=8).registers == regs
        assert client.write_coil(0, True).isError() and client.write_register(0, 5).isError()
        assert client.read_coils(0, count=1).bits[0] is False
        assert sink.map()[:2] == ["coil 0: press.stop", "registers 0-1: door.in (uint32, high word first)"]
    finally:
        client.close()
        sink.close()


def test_opcua_logins(tmp_path: Path):
    port = free_port()
    sink = OpcUaSink("cam", points_of([("press", "safety")]), port=port, username="plc", password="s3cret")
    url = f"opc.tcp://127.0.0.1:{port}/ivs/"
    try:
        ok = Subscriber(url, "ns=2;s=cam.press.stop", "plc", "s3cret")
        assert ok.read() is False
        ok.close()
        for user, password in (("plc", "wrong"), (None, None)):
            with pytest.raises(Exception, match="Bad|bad|denied|Denied|Identity|identity"):
                Subscriber(url, "ns=2;s=cam.press.stop", user, password)
    finally:
        sink.close()
    with pytest.raises(ConfigError, match="network reaches needs username"):
        OpcUaSink("cam", [], host="0.0.0.0", port=free_port())


def test_plant_sink_config_errors_name_their_line(tmp_path: Path):
    from tests.test_config import GOOD, check

    bad = GOOD + "sinks:\n  - type: opcua\n    username: plc\n  - {type: modbus, port: 70000}\n"
    r = check(tmp_path, bad)
    errors = [x for x in r.stderr.splitlines() if x.startswith("ivs: error:")]
    assert any("sensor.yaml:16:" in e and "username and password_env come together" in e for e in errors), errors
    assert any("sensor.yaml:18:" in e and "less than or equal to 65535" in e for e in errors), errors


def test_the_opcua_variable_types(tmp_path: Path):
    port = free_port()
    sink = OpcUaSink("cam", points_of([("door", "line")]), port=port)
    try:
        sub = Subscriber(f"opc.tcp://127.0.0.1:{port}/ivs/", "ns=2;s=cam.door.in")
        assert sub.run(sub.node.read_data_type_as_variant_type()) == ua.VariantType.UInt32
        sub.close()
    finally:
        sink.close()


def _cert(folder: Path, name: str, uri: str, server: bool) -> tuple[Path, Path]:
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = cert_gen.generate_private_key()
    use = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
    names = [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]
    cert = cert_gen.generate_self_signed_app_certificate(key, uri, {"commonName": name}, names, extended=use, days=2)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.der").write_bytes(cert.public_bytes(Encoding.DER))
    (folder / f"{name}.pem").write_bytes(cert_gen.dump_private_key_as_pem(key))
    return folder / f"{name}.der", folder / f"{name}.pem"


def test_opcua_certificate_logins_over_encrypted_channels(tmp_path: Path):
    client_uri = "urn:example.org:FreeOpcUa:opcua-asyncio"  # asyncua's client default
    server_cert, server_key = _cert(tmp_path / "server", "server", "urn:freeopcua:python:server", True)
    plc_cert, plc_key = _cert(tmp_path / "trusted", "plc", client_uri, False)
    other_cert, other_key = _cert(tmp_path / "others", "stranger", client_uri, False)
    plc_key.rename(tmp_path / "plc.pem")  # the trusted folder holds certificates only
    plc_key = tmp_path / "plc.pem"
    port = free_port()
    sink = OpcUaSink(
        "cam", points_of([("press", "safety")]), port=port, cert=str(server_cert), key=str(server_key),
        client_certs=str(tmp_path / "trusted"),
    )  # fmt: skip
    url = f"opc.tcp://127.0.0.1:{port}/ivs/"

    def read_as(cert: Path, key: Path):
        async def go():
            client = Client(url)
            await client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key},{server_cert}")
            await client.load_client_certificate(str(cert))  # ... and log in with it (an X.509 user token)
            await client.load_private_key(key)
            async with client:
                return await client.get_node("ns=2;s=cam.press.stop").read_value()

        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(go())
        finally:
            loop.close()

    try:
        assert read_as(plc_cert, plc_key) is False
        with pytest.raises(Exception):  # noqa: B017 - asyncua raises its own kinds for a refused identity
            read_as(other_cert, other_key)
        with pytest.raises(Exception):  # noqa: B017 - no encryption offered: a plain client finds no endpoint
            Subscriber(url, "ns=2;s=cam.press.stop")
    finally:
        sink.close()
