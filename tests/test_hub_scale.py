"""The hub at scale on a real PostgreSQL (ivs.localnet.LocalPostgres, started by the fixtures):
the Store behaves the same on SQLite and PostgreSQL, concurrent writers store each message once,
and two `ivs hub serve` workers on one Mosquitto shared subscription store every message that
three real `ivs run` sensors send, exactly once."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from fastapi.testclient import TestClient

from ivs.consumer import Message
from ivs.errors import ConfigError
from ivs.hub.app import create_app
from ivs.hub.store import HubError, Store
from ivs.localnet import LocalMosquitto, free_port
from ivs.outbox import Outbox
from tests.messages import T0, count, frame, stop
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


def seqs(store: Store, sensor: str) -> list[int]:
    return [json.loads(p)["seq"] for p in store.events(sensor=sensor, after_seq=0, limit=100_000)]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The same Store on each backend: a SQLite file, and a fresh database on the session's PostgreSQL."""
    url = (
        f"sqlite:///{tmp_path / 'hub.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    )
    s = Store(url)
    yield s
    s.close()


# ------------------------------------------------------------------------- the Store on both backends


def test_ingest_is_idempotent_and_counts_duplicates(store: Store) -> None:
    batch: list[Message] = [count("cam-a", s, T0 + s) for s in range(1, 6)]
    batch.append(count("cam-a", 3, T0 + 3))  # repeated within the batch
    assert store.ingest(batch, mark_online=True) == (5, 1)
    assert store.ingest(batch) == (0, 6)  # all of it again
    mixed: list[Message] = [count("cam-a", 5, T0 + 5), stop("cam-b", 7, T0 + 7), count("cam-a", 6, T0 + 6)]
    assert store.ingest(mixed) == (2, 1)
    assert store.message_count() == 7
    assert seqs(store, "cam-a") == [1, 2, 3, 4, 5, 6]
    assert seqs(store, "cam-b") == [7]
    sensors = {s.sensor_id: s for s in store.sensors()}
    assert sensors["cam-a"].last_seq == 6 and sensors["cam-a"].messages == 6 and sensors["cam-a"].online
    assert sensors["cam-b"].last_seq == 7 and not sensors["cam-b"].online  # only the HTTP ingest marks online
    # an older message arriving late does not move last_seq back
    assert store.ingest([count("cam-b", 2, T0 + 2)]) == (1, 0)
    assert {s.sensor_id: s.last_seq for s in store.sensors()} == {"cam-a": 6, "cam-b": 7}


def test_payloads_come_back_as_sent(store: Store) -> None:
    # Quotes, backslashes, tabs, newlines and non-ASCII in the JSON text: PostgreSQL's COPY
    # path has escaping rules of its own that must not change a byte.
    label = 'a "quoted"\\ label\twith\nnewline, é, 猫, 🚶'
    sent: list[Message] = [
        count("cam-a", 1, T0, label=label),
        stop("cam-a", 2, T0 + 1, label=label),
        frame("cam-a", 3, T0 + 2),
    ]
    assert store.ingest(sent) == (3, 0)
    stored = store.events(sensor="cam-a", after_seq=0)
    assert [json.loads(p) for p in stored] == [json.loads(msgspec.json.encode(m)) for m in sent]
    assert [json.loads(p)["schema"] for p in stored] == ["ivs.event/1", "ivs.event/1", "ivs.frame/1"]


def test_a_message_that_cannot_be_stored_fails_the_batch_and_stores_nothing(store: Store) -> None:
    bad: list[Message] = [count("cam-a", 1, T0), count("cam-a", 0, T0 + 1)]
    with pytest.raises(ValueError, match=r"'cam-a'/0 cannot be stored: seq 0: expected 1 to 2\*\*63-1"):
        store.ingest(bad)
    assert store.message_count() == 0


def test_queries(store: Store) -> None:
    store.ingest(
        [
            count("cam-a", 1, T0 + 10),
            count("cam-a", 2, T0 + 20, direction="out"),
            count("cam-a", 3, T0 + 70, label="car"),
            stop("cam-a", 4, T0 + 80),
            frame("cam-a", 5, T0 + 90),
            count("cam-b", 1, T0 + 30),
        ]
    )
    assert [json.loads(p)["seq"] for p in store.events(kind="count", sensor="cam-a")] == [1, 2, 3]
    in_window = store.events(since=T0 + 20, until=T0 + 71)
    assert [json.loads(p)["sensor_id"] for p in in_window] == ["cam-a", "cam-b", "cam-a"]
    assert [json.loads(p)["seq"] for p in store.events(app="press")] == [4]
    assert [json.loads(p)["seq"] for p in store.events(kind="frame")] == [5]
    assert [json.loads(p)["seq"] for p in store.events(sensor="cam-a", after_seq=2, limit=2)] == [3, 4]
    assert store.counts(interval=60, sensor="cam-a") == [
        {"start": T0, "end": T0 + 60, "counts": {"in": {"person": 1}, "out": {"person": 1}}},
        {"start": T0 + 60, "end": T0 + 120, "counts": {"in": {"car": 1}}},
    ]
    assert [(s.sensor_id, s.messages) for s in store.sensors()] == [("cam-a", 5), ("cam-b", 1)]


def test_devices_and_sensor_state(store: Store) -> None:
    token = store.add_device("cam-a")
    assert store.authenticate(token) == "cam-a"
    with pytest.raises(HubError, match="exists and is active"):
        store.add_device("cam-a")
    assert store.revoke_device("cam-a") and store.authenticate(token) is None
    again = store.add_device("cam-a")
    assert again != token and store.authenticate(again) == "cam-a"
    assert [d.name for d in store.devices()] == ["cam-a"]

    store.set_sensor("cam-z", online=True, model="person", version="1.0.0")
    store.set_sensor("cam-z", online=False, seen=False)
    (z,) = store.sensors()
    assert (z.online, z.model, z.version, z.last_seq, z.messages) == (False, "person", "1.0.0", 0, 0)
    assert store.online_count() == 0


def test_the_http_api_on_postgresql(postgres_url: str) -> None:
    store = Store(postgres_url)
    try:
        token = store.add_device("cam-a")
        client = TestClient(create_app(store, "", open_read=True))
        auth = {"Authorization": f"Bearer {token}"}
        body = msgspec.json.encode([count("cam-a", s, T0 + s) for s in range(1, 11)])
        first = client.post("/api/v1/ingest", content=body, headers=auth)
        assert first.status_code == 200 and first.json() == {"accepted": 10, "duplicates": 0, "rejected": []}
        again = client.post("/api/v1/ingest", content=body, headers=auth)
        assert again.json() == {"accepted": 0, "duplicates": 10, "rejected": []}
        assert [e["seq"] for e in client.get("/api/v1/events", params={"sensor": "cam-a"}).json()] == list(range(1, 11))
        (sensor,) = client.get("/api/v1/sensors").json()
        assert sensor["sensor_id"] == "cam-a" and sensor["online"]
        assert (sensor["messages"], sensor["last_seq"]) == (10, 10)
        assert "ivs_hub_messages_accepted_total 10.0" in client.get("/metrics").text
    finally:
        store.close()


def test_postgresql_urls_use_psycopg_3(postgres_url: str) -> None:
    store = Store(postgres_url)
    try:
        assert postgres_url.startswith("postgresql://")
        assert store.engine.url.drivername == "postgresql+psycopg"
    finally:
        store.close()
    explicit = Store(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    explicit.close()
    with pytest.raises(ConfigError, match=r"driver 'psycopg2' is not supported: expected postgresql://"):
        Store(postgres_url.replace("postgresql://", "postgresql+psycopg2://"))
    with pytest.raises(ConfigError, match="expected sqlite:///path or postgresql://"):
        Store("mysql://root@127.0.0.1/hub")


def test_concurrent_writers_on_postgresql_store_each_message_once(postgres_url: str) -> None:
    """Two Stores (two engines, as two hub processes would have) started together on a new
    database, then ingesting overlapping batches at the same time: every message is stored
    once and counted as accepted by exactly one of them."""
    stores: list[Store] = []
    opened = threading.Barrier(3)

    def open_store() -> None:
        opened.wait(10)
        stores.append(Store(postgres_url))  # both create the schema at once: it must not race

    openers = [threading.Thread(target=open_store) for _ in range(3)]
    for t in openers:
        t.start()
    for t in openers:
        t.join(30)
    assert len(stores) == 3
    try:
        messages: list[Message] = [count("cam-a", s, T0 + s) for s in range(1, 3001)]
        totals: list[tuple[int, int]] = []
        errors: list[BaseException] = []
        start = threading.Barrier(3)

        def write(store: Store) -> None:
            try:
                start.wait(10)
                accepted = duplicates = 0
                for i in range(0, len(messages), 500):  # overlapping: each writer sends everything
                    a, d = store.ingest(messages[i : i + 500])
                    accepted, duplicates = accepted + a, duplicates + d
                totals.append((accepted, duplicates))
            except BaseException as err:
                errors.append(err)

        writers = [threading.Thread(target=write, args=(s,)) for s in stores]
        for t in writers:
            t.start()
        for t in writers:
            t.join(60)
        assert not errors, errors
        assert sum(a for a, _ in totals) == 3000
        assert sum(d for _, d in totals) == 2 * 3000
        assert stores[0].message_count() == 3000
        assert seqs(stores[0], "cam-a") == list(range(1, 3001))
        assert stores[0].schema_version() >= 1
    finally:
        for s in stores:
            s.close()


# ----------------------------------------------------- MUST SHOW: two hub workers, three sensors

SENSORS = ("cam-a", "cam-b", "cam-c")
FRAMES = 90


def _get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    if found is None:
        raise AssertionError(f"{name} not in /metrics")
    return float(found.group(1))


def _sensor_config(path: Path, sensor: str, broker_port: int, work: Path) -> None:
    path.write_text(
        f"""id: {sensor}
source:
  url: synthetic:320x240@30:{FRAMES}
  fps: 0
model:
  name: person
  threads: 1
frames: true
apps:
  - type: heatmap
    name: floor
    period_s: 0.5
sinks:
  - type: jsonl
    path: {work / f"{sensor}.jsonl"}
  - type: mqtt
    host: 127.0.0.1
    port: {broker_port}
    outbox: {work / f"{sensor}-outbox.sqlite"}
"""
    )


@pytest.mark.slow
def test_two_hub_workers_on_one_postgresql_store_every_message_of_three_sensors_once(
    tmp_path: Path, postgres_url: str
) -> None:
    # The broker logs subscriptions: how the test knows both workers are in the group before
    # any sensor publishes (a shared subscription keeps nothing for a group not yet there).
    broker = LocalMosquitto(
        tmp_path / "broker",
        "log_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type subscribe\n",
        persistence=False,
    )
    broker.start()
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def spawn(args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = tmp_path / log_name
        logs.append(log)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ivs", *args], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        procs.append(proc)
        return proc

    try:
        ports = [free_port(), free_port()]
        mqtt = f"127.0.0.1:{broker.port}"
        serve = ["hub", "serve", "--db", postgres_url, "--mqtt", mqtt, "--group", "hub", "--open-read", "--port"]
        workers = [spawn([*serve, str(port)], f"worker-{n}.log") for n, port in enumerate(ports)]

        def up(port: int) -> bool:
            try:
                return _get(port, "/metrics")[0] == 200
            except OSError:
                return False

        def subscribed() -> bool:
            text = (tmp_path / "broker" / "mosquitto.log").read_text(errors="replace")
            return len(set(re.findall(r"^\d+: (\S+) 1 \$share/hub/ivs/\+/frames$", text, re.MULTILINE))) == 2

        wait_for(lambda: all(up(p) for p in ports), 60, "both hub workers to serve", workers)
        wait_for(subscribed, 30, "both hub workers to join the shared subscription", workers)

        for sensor in SENSORS:
            _sensor_config(tmp_path / f"{sensor}.yaml", sensor, broker.port, tmp_path)
        sensors = [spawn(["run", "--config", str(tmp_path / f"{s}.yaml"), "--quiet"], f"{s}.log") for s in SENSORS]
        for proc in sensors:
            assert proc.wait(timeout=240) == 0, (tmp_path / f"{SENSORS[sensors.index(proc)]}.log").read_text()[-3000:]

        # What each sensor says it sent: its JSON lines; and its outbox, which must be empty
        # (every message acknowledged by the broker).
        sent: dict[tuple[str, int], dict[str, object]] = {}
        for sensor in SENSORS:
            lines = (tmp_path / f"{sensor}.jsonl").read_text().splitlines()
            kinds = {json.loads(line).get("kind", "frame") for line in lines}
            assert {"frame", "heatmap"} <= kinds, kinds
            for line in lines:
                message = json.loads(line)
                sent[(message["sensor_id"], message["seq"])] = message
            assert len(lines) >= FRAMES
            outbox = Outbox(tmp_path / f"{sensor}-outbox.sqlite")
            try:
                assert outbox.depth() == 0, f"{sensor} kept {outbox.depth()} messages unacknowledged"
            finally:
                outbox.close()

        store = Store(postgres_url)
        try:
            # A second copy of a message cannot be stored ((sensor_id, seq) is unique), so there
            # is no duplicate to wait for: equal counts mean each message stored once.
            wait_for(lambda: store.message_count() >= len(sent), 60, f"{len(sent)} messages stored", workers)
            assert store.message_count() == len(sent)
            for sensor in SENSORS:
                mine = sorted(seq for s, seq in sent if s == sensor)
                assert mine == list(range(1, len(mine) + 1)), f"{sensor} numbers its messages 1, 2, ..."
                stored = [json.loads(p) for p in store.events(sensor=sensor, after_seq=0, limit=100_000)]
                assert [m["seq"] for m in stored] == mine, f"{sensor}: every message stored once, none lost"
                assert stored == [sent[(sensor, seq)] for seq in mine], f"{sensor}: stored as sent"
            # last_seq from the messages; "offline" from each sensor's availability topic on exit
            last = {s.sensor_id: (s.last_seq, s.online) for s in store.sensors()}
            assert last == {s: (max(seq for x, seq in sent if x == s), False) for s in SENSORS}
        finally:
            store.close()

        # Both workers took part, and between them accepted each message once.
        metrics = [_get(port, "/metrics")[1] for port in ports]
        accepted = [_metric(m, "ivs_hub_messages_accepted_total") for m in metrics]
        assert all(a > 0 for a in accepted), f"a worker stored nothing: {accepted}"
        assert sum(accepted) == len(sent)
        assert sum(_metric(m, "ivs_hub_messages_duplicates_total") for m in metrics) == 0
    except BaseException:
        for log in logs:
            if log.exists():
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}")
        raise
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        broker.stop()
