"""End to end over real HTTP: the sensor's HTTP sink posting to the hub served by uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ivs.hub.app import create_app
from ivs.hub.store import Store
from ivs.localnet import ServerThread
from ivs.outbox import Outbox
from ivs.sinks.http import HttpSink
from tests.messages import stop


class Hub(ServerThread):
    def __init__(self, store: Store) -> None:
        self.store = store
        super().__init__(create_app(store, "admin", open_read=True))


@pytest.fixture()
def hub(db_url: str) -> Iterator[Hub]:
    """On SQLite and on PostgreSQL (`db_url`): the tests that use it run on both."""
    store = Store(db_url)
    h = Hub(store)
    yield h
    h.stop()
    store.close()


def test_the_http_sink_delivers_every_message_once(hub: Hub, tmp_path: Path) -> None:
    token = hub.store.add_device("cam-1")
    outbox = Outbox(tmp_path / "outbox.sqlite")
    sink = HttpSink("cam-1", outbox, f"{hub.url}/api/v1/ingest", token=token, batch_size=64, max_backoff_s=0.05)
    try:
        for seq in range(1, 301):
            sink.write(stop("cam-1", seq))
        assert sink.flush(30), f"outbox still holds {outbox.depth()}: {sink.last_error}"
    finally:
        sink.close()
    assert hub.store.message_count() == 300
    (sensor,) = hub.store.sensors()
    assert (sensor.sensor_id, sensor.last_seq, sensor.messages, sensor.online) == ("cam-1", 300, 300, True)
    # a second sink on a copy of the same messages (a resend after a crash): nothing stored twice
    again = Outbox(tmp_path / "again.sqlite")
    sink = HttpSink("cam-1", again, f"{hub.url}/api/v1/ingest", token=token, batch_size=64, max_backoff_s=0.05)
    try:
        for seq in range(250, 311):
            sink.write(stop("cam-1", seq))
        assert sink.flush(30), sink.last_error
    finally:
        sink.close()
        outbox.close()
        again.close()
    assert hub.store.message_count() == 310


def test_a_revoked_device_keeps_its_messages_in_its_outbox(hub: Hub, tmp_path: Path) -> None:
    token = hub.store.add_device("cam-1")
    hub.store.revoke_device("cam-1")
    outbox = Outbox(tmp_path / "outbox.sqlite")
    sink = HttpSink("cam-1", outbox, f"{hub.url}/api/v1/ingest", token=token, max_backoff_s=0.05)
    try:
        sink.write(stop("cam-1", 1))
        assert not sink.flush(1)
        assert sink.rejected >= 1 and "401" in str(sink.last_error)
    finally:
        sink.close(timeout=0.1)
        outbox.close()
    assert hub.store.message_count() == 0
