"""Part e of `ivs bench`: hub ingest, events per second sustained, into SQLite and PostgreSQL.

Three paths, each into a fresh SQLite file and a fresh database on a throw-away PostgreSQL
(`ivs.localnet.LocalPostgres`: same machine, fsync off) when its server programs are installed:

    Store.ingest   batches of `INGEST_BATCH` events straight into the store (no network);
    HTTP           the same batches POSTed to /api/v1/ingest (`create_app` under uvicorn on a
                   free port, one keep-alive client posting one batch after another);
    MQTT           `MQTT_PUBLISHERS` publishers (one per sensor, QoS 1, in this process) ->
                   a Mosquitto on a free port -> 1 or 2 hub workers (`ivs hub serve --mqtt`, each
                   a process of its own, one shared subscription); timed from the first publish
                   until the database holds every event. One MQTT message per event, and
                   batched: `MQTT_BATCH` events per message on ivs/S/batch, what a sensor with
                   `batch_linger_ms` sends (`ivs.sinks.mqtt.batch_payload`).

Everything runs on this one machine: the publishers, the broker, the hub workers and the
database share its cores, so the MQTT rows are a floor for what a hub worker does with a
machine of its own. A row that cannot run says why in `absent`.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ivs.bench.results import Ingest, IngestRow
from ivs.localnet import LocalMosquitto, LocalPostgres, ServerThread, free_port, mosquitto_path, postgres_bin

INGEST_TARGET_EPS = 50_000.0
"""The hub ingest target on SQLite, events per second."""

INGEST_BATCH = 1_000
"""Events per `Store.ingest` call and per HTTP POST."""

MQTT_PUBLISHERS = 3
"""Publishing sensors in the MQTT rows, one client each."""

MQTT_INFLIGHT = 1_000
"""Mosquitto's `max_inflight_messages` for the MQTT rows (its default, 20 unacknowledged QoS 1
messages per subscriber, makes the broker wait on each worker's acknowledgements)."""

PUBLISHER_INFLIGHT = 100
"""Unacknowledged QoS 1 messages per publisher: paho-mqtt publishes fastest near 100 here (at
1,000 its bookkeeping per acknowledgement costs more than the wait at 20)."""

MQTT_BATCH = 100
"""Events per MQTT message in the batched rows: a sensor lingering 100 ms at 1,000 events/s."""

MQTT_WORKER_BATCH = 5_000
"""Messages per `Store.ingest` call in a hub worker at most (`MqttIngest`'s default batch_size)."""

SQLITE = "sqlite (file)"
POSTGRES = "postgresql (local server, fsync off)"


def ingest_events(count: int, sensor_id: str, seq_start: int = 1) -> list[Any]:
    """`count` events with unique seqs: Count and Stop alternately."""
    from ivs.events import Count, Stop

    t = time.time()
    out: list[Any] = []
    for i in range(count):
        seq = seq_start + i
        common: dict[str, Any] = {
            "sensor_id": sensor_id,
            "seq": seq,
            "frame": seq,
            "time": t + seq / 30,
            "t_capture_ns": 1_000_000_000 + seq * 33_333_333,
            "t_source": seq / 30,
        }
        if i % 2:
            out.append(Stop(**common, app="press", objects=1, labels=["person"], boxes=[(10.0, 20.0, 80.0, 200.0)]))
        else:
            out.append(
                Count(
                    **common,
                    app="door",
                    track_id=i,
                    class_id=0,
                    label="person",
                    direction="in",
                    anchor_from=(100.0, 200.0),
                    anchor_to=(100.0, 220.0),
                    totals={"in": {"person": i // 2 + 1}, "out": {}},
                )
            )
    return out


def _rate(
    path: str,
    database: str,
    accepted: int,
    expected: int,
    seconds: float,
    batch: int = INGEST_BATCH,
    *,
    publish_seconds: float | None = None,
    per_worker: list[int] | None = None,
) -> IngestRow:
    return IngestRow(
        path=path,
        database=database,
        events=expected,
        accepted=accepted,
        batch=batch,
        seconds=round(seconds, 3),
        events_per_s=round(expected / seconds) if seconds > 0 else None,
        publish_seconds=publish_seconds,
        per_worker=per_worker,
    )


def _absent(path: str, database: str, events: int, why: str) -> IngestRow:
    return IngestRow(
        path=path,
        database=database,
        events=events,
        accepted=0,
        batch=INGEST_BATCH,
        seconds=None,
        events_per_s=None,
        absent=why,
    )


STORE_PATH = "Store.ingest"
HTTP_PATH = "HTTP POST /api/v1/ingest (uvicorn, one client, sequential)"


def mqtt_path(workers: int, batch: int = 1) -> str:
    each = "one event per message" if batch == 1 else f"{batch} events per message"
    return (
        f"MQTT QoS 1, {each}: {MQTT_PUBLISHERS} publishers -> Mosquitto -> {workers} hub worker"
        f"{'s' if workers > 1 else ''} (`ivs hub serve --mqtt`, shared subscription)"
    )


def bench_ingest_store(events: int, url: str, database: str) -> IngestRow:
    """Batches straight into `Store.ingest`."""
    from ivs.hub.store import Store

    messages = ingest_events(events, "bench-store")
    store = Store(url)
    try:
        accepted = 0
        t0 = time.perf_counter()
        for start in range(0, len(messages), INGEST_BATCH):
            accepted += store.ingest(messages[start : start + INGEST_BATCH])[0]
        seconds = time.perf_counter() - t0
    finally:
        store.close()
    return _rate(STORE_PATH, database, accepted, events, seconds)


def bench_ingest_http(events: int, url: str, database: str) -> IngestRow:
    """Batches POSTed to the hub's API, one after another on one keep-alive connection."""
    import msgspec

    from ivs.hub.app import create_app
    from ivs.hub.store import Store

    sensor = "bench-http"
    messages = ingest_events(events, sensor)
    bodies = [msgspec.json.encode(messages[s : s + INGEST_BATCH]) for s in range(0, len(messages), INGEST_BATCH)]
    store = Store(url)
    server: ServerThread | None = None
    try:
        token = store.add_device(sensor)
        server = ServerThread(create_app(store, ""))
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        accepted = 0
        # One keep-alive connection, as a sensor's sink would keep one (standard library only).
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            t0 = time.perf_counter()
            for body in bodies:
                conn.request("POST", "/api/v1/ingest", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                if response.status != 200:
                    raise RuntimeError(f"hub answered {response.status}: {payload[:200]!r}")
                accepted += int(json.loads(payload)["accepted"])
            seconds = time.perf_counter() - t0
        finally:
            conn.close()
    finally:
        if server is not None:
            server.stop()
        store.close()
    return _rate(HTTP_PATH, database, accepted, events, seconds)


def _get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode()
        if response.status != 200:
            raise OSError(f"GET {path}: {response.status}")
        return body
    finally:
        conn.close()


def _accepted(metrics: str) -> int:
    found = re.search(r"^ivs_hub_messages_accepted_total (\S+)$", metrics, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def _wait(predicate: Callable[[], bool], timeout: float, what: str, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: a hub worker exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def bench_ingest_mqtt(events: int, url: str, database: str, workers: int, workdir: Path, batch: int = 1) -> IngestRow:
    """Publishers -> Mosquitto -> `workers` hub processes on one shared subscription -> the
    database; events per second from the first publish until every event is stored. `batch`:
    events per MQTT message (1: one message each on its event topic)."""
    import msgspec
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from ivs.events import kind_of
    from ivs.hub.store import Store
    from ivs.sinks.mqtt import batch_payload

    # The broker logs subscriptions: publishing starts once every worker is in the group (a
    # shared subscription keeps nothing for a group that is not there yet).
    broker = LocalMosquitto(
        workdir / "broker",
        f"max_inflight_messages {MQTT_INFLIGHT}\nlog_type error\nlog_type warning\nlog_type subscribe\n",
        persistence=False,
    )
    per_sensor = -(-events // MQTT_PUBLISHERS)
    sensors = [f"bench-mqtt-{i}" for i in range(MQTT_PUBLISHERS)]
    payloads: list[list[tuple[str, bytes]]] = []
    total = 0
    for sensor in sensors:
        messages = ingest_events(min(per_sensor, events - total), sensor)
        total += len(messages)
        if batch == 1:
            payloads.append([(f"ivs/{sensor}/events/{kind_of(m)}", msgspec.json.encode(m)) for m in messages])
        else:
            encoded = [msgspec.json.encode(m) for m in messages]
            chunks = [encoded[s : s + batch] for s in range(0, len(encoded), batch)]
            payloads.append([(f"ivs/{sensor}/batch", batch_payload(c, "json")) for c in chunks])
    procs: list[subprocess.Popen[bytes]] = []
    store = Store(url)  # creates the schema before the workers start, and counts what they store
    broker.start()
    try:
        ports = [free_port() for _ in range(workers)]
        _start_workers(url, broker, ports, workdir, procs)

        clients = []
        for sensor in sensors:
            client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"{sensor}-pub")
            client.max_inflight_messages_set(PUBLISHER_INFLIGHT)
            client.max_queued_messages_set(0)  # unbounded: publish() never refuses
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            clients.append(client)
        published: list[float] = []

        def publish(client: mqtt.Client, items: list[tuple[str, bytes]]) -> None:
            info = None
            for topic, payload in items:
                info = client.publish(topic, payload, qos=1)
            if info is not None:
                info.wait_for_publish(300)
            published.append(time.perf_counter())

        threads = [
            threading.Thread(target=publish, args=(c, p), name="ivs-bench-publisher")
            for c, p in zip(clients, payloads, strict=True)
        ]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        _wait(lambda: store.message_count() >= total, 600, f"{total} events stored", procs)
        seconds = time.perf_counter() - t0
        for t in threads:
            t.join(60)
        for client in clients:
            client.disconnect()
            client.loop_stop()
        per_worker = [_accepted(_get(port, "/metrics")) for port in ports]
        stored = store.message_count()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        store.close()
        broker.stop()
    return _rate(
        mqtt_path(workers, batch),
        database,
        stored,
        total,
        seconds,
        batch=MQTT_WORKER_BATCH,
        publish_seconds=round(max(published) - t0, 3) if published else None,
        per_worker=per_worker,
    )


def _start_workers(
    url: str, broker: LocalMosquitto, ports: list[int], workdir: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """`ivs hub serve` workers on one shared subscription (added to `procs` as they start, for the
    caller to stop whatever happens); returns once all serve and are subscribed."""
    mqtt_at = f"127.0.0.1:{broker.port}"
    serve = [
        sys.executable,
        "-m",
        "ivs",
        "hub",
        "serve",
        "--db",
        url,
        "--mqtt",
        mqtt_at,
        "--group",
        "bench",
        "--open-read",
    ]
    for n, port in enumerate(ports):
        with open(workdir / f"worker-{n}.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [*serve, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            )

    def serving() -> bool:
        try:
            return all(_get(port, "/metrics") for port in ports)
        except OSError:
            return False

    def subscribed() -> bool:
        text = (workdir / "broker" / "mosquitto.log").read_text(errors="replace")
        found = set(re.findall(r"^\d+: (\S+) 1 \$share/bench/ivs/\+/frames$", text, re.MULTILINE))
        return len(found) == len(ports)

    _wait(serving, 120, "the hub workers to serve", procs)
    _wait(subscribed, 60, "the hub workers to subscribe", procs)


def bench_ingest(events: int) -> Ingest:
    """Part e: every path into SQLite and PostgreSQL, each into a fresh database."""
    rows: list[IngestRow] = []
    with tempfile.TemporaryDirectory(prefix="ivs-bench-") as tmp:
        pg: LocalPostgres | None = None
        pg_absent = ""
        if postgres_bin() is None:
            pg_absent = "no PostgreSQL server programs (initdb, postgres) here: scripts/install-system-deps.sh"
        else:
            try:
                pg = LocalPostgres()
                pg.start()
            except (RuntimeError, OSError) as err:
                pg, pg_absent = None, f"the local PostgreSQL did not start: {err}"
        made = 0

        def fresh(database: str) -> str | None:
            """A new empty database of that kind, or None when PostgreSQL is absent."""
            nonlocal made
            made += 1
            if database == SQLITE:
                return f"sqlite:///{Path(tmp) / f'e{made}.sqlite'}"
            return pg.create_database(f"bench_e{made}") if pg is not None else None

        try:
            for path, run in ((STORE_PATH, bench_ingest_store), (HTTP_PATH, bench_ingest_http)):
                for database in (SQLITE, POSTGRES):
                    url = fresh(database)
                    rows.append(run(events, url, database) if url else _absent(path, database, events, pg_absent))
            mqtt_rows = [(SQLITE, 1, 1), (POSTGRES, 1, 1), (POSTGRES, 2, 1)]
            mqtt_rows += [(SQLITE, 1, MQTT_BATCH), (POSTGRES, 1, MQTT_BATCH), (POSTGRES, 2, MQTT_BATCH)]
            for database, workers, batch in mqtt_rows:
                path = mqtt_path(workers, batch)
                if mosquitto_path() is None:
                    rows.append(_absent(path, database, events, "mosquitto not found: scripts/install-system-deps.sh"))
                    continue
                url = fresh(database)
                if url is None:
                    rows.append(_absent(path, database, events, pg_absent))
                    continue
                workdir = Path(tmp) / f"mqtt-{made}"
                workdir.mkdir()
                rows.append(bench_ingest_mqtt(events, url, database, workers, workdir, batch))
        finally:
            if pg is not None:
                pg.stop()
    return Ingest(
        target_events_per_s=INGEST_TARGET_EPS,
        note="publishers, broker, hub workers and database share this machine's cores",
        rows=rows,
    )
