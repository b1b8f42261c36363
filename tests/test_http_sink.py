"""HTTP sink against a real HTTP server on 127.0.0.1: batching, outages, refusals, restarts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import pytest

from ivs.consumer import Dedup, Message, decode_message
from ivs.errors import ConfigError
from ivs.events import Stop
from ivs.outbox import Outbox
from ivs.sinks.http import HttpSink
from tests.waiting import wait_for

TOKEN = "s3cret"


def stop_event(n: int, sensor: str = "s1", app: str = "cell") -> Stop:
    return Stop(
        frame=n,
        time=1_700_000_000.0 + n,
        t_capture_ns=n * 1_000_000,
        t_source=n / 25,
        app=app,
        objects=1,
        labels=["person"],
        boxes=[(1.0, 2.0, 3.0, 4.0)],
        sensor_id=sensor,
        seq=n,
    )


def decode_batch(body: bytes) -> list[Message]:
    return [decode_message(bytes(raw)) for raw in msgspec.json.decode(body, type=list[msgspec.Raw])]


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None
    """What the server answered; None: it dropped the connection after reading the request."""


@dataclass
class Script:
    """How the server answers: scripted answers first (an int status or "drop"), then 200;
    400 for any body holding `refuse`."""

    answers: list[int | str] = field(default_factory=list)
    refuse: bytes | None = None
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delivered(self) -> list[Message]:
        """Every message in a batch the server took in (answered 2xx, or dropped the
        connection after reading: the sink cannot tell it arrived), in arrival order."""
        with self.lock:
            bodies = [r.body for r in self.requests if r.status is None or 200 <= r.status < 300]
        return [m for body in bodies for m in decode_batch(body)]


class Server:
    def __init__(self, script: Script, port: int = 0) -> None:
        self.script = script

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with script.lock:
                    answer: int | str = script.answers.pop(0) if script.answers else 200
                    if script.refuse is not None and script.refuse in body:
                        answer = 400
                    status = answer if isinstance(answer, int) else None
                    script.requests.append(Request(self.path, dict(self.headers.items()), body, status))
                if answer == "drop":
                    self.close_connection = True
                    return
                assert isinstance(answer, int)
                text = b"ok" if answer < 300 else b"marker refused" if answer == 400 else b"busy"
                self.send_response(answer)
                if answer in (429, 503):
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = False  # server_close() joins the handler threads
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/ingest"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.thread.join()
        self.httpd.server_close()


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def server(script: Script) -> Iterator[Server]:
    srv = Server(script)
    yield srv
    srv.stop()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "http.sqlite")
    yield box
    box.close()


def fast_sink(outbox: Outbox, url: str, **kw) -> HttpSink:
    kw.setdefault("max_backoff_s", 0.05)
    kw.setdefault("timeout_s", 5)
    return HttpSink("s1", outbox, url, token=TOKEN, **kw)


def test_batches_in_order_with_token(server: Server, script: Script, outbox: Outbox):
    sink = fast_sink(outbox, server.url, batch_size=50, batch_wait_s=0.3)
    try:
        for n in range(1, 201):
            sink.write(stop_event(n))
        assert sink.flush(20), f"outbox still holds {outbox.depth()}"
    finally:
        sink.close(1)
    assert outbox.depth() == 0
    assert all(r.status == 200 for r in script.requests)
    for r in script.requests:
        assert r.path == "/ingest"
        assert r.headers["Authorization"] == f"Bearer {TOKEN}"
        assert r.headers["X-Ivs-Sensor"] == "s1"
        assert r.headers["Content-Type"] == "application/json"
    sizes = [len(decode_batch(r.body)) for r in script.requests]
    assert max(sizes) > 1 and max(sizes) <= 50, sizes
    got = script.delivered()
    assert [m.seq for m in got] == list(range(1, 201))
    assert got[0] == stop_event(1)
    assert sink.posted == len(script.requests) and sink.acked == 200
    assert sink.retries == sink.rejected == sink.dropped == 0
    assert sink.bytes_sent == sum(len(r.body) for r in script.requests)


def test_retries_through_503_and_a_dropped_connection(server: Server, script: Script, outbox: Outbox):
    script.answers = [503, 503, 503, "drop"]
    sink = fast_sink(outbox, server.url, batch_size=20, batch_wait_s=0.05)
    try:
        for n in range(1, 61):
            sink.write(stop_event(n))
        assert sink.flush(20), f"outbox still holds {outbox.depth()}"
    finally:
        sink.close(1)
    assert [r.status for r in script.requests[:4]] == [503, 503, 503, None]
    assert sink.retries >= 4
    assert sink.last_error is not None and "no answer" in sink.last_error
    dedup = Dedup()
    fresh = [m for m in script.delivered() if dedup.first_time(m.sensor_id, m.seq)]
    assert [m.seq for m in fresh] == list(range(1, 61))
    assert len(script.delivered()) > 60  # the dropped batch arrived twice
    assert outbox.depth() == 0


def test_only_the_refused_message_is_dropped(server: Server, script: Script, outbox: Outbox):
    script.refuse = b'"app":"poison"'
    sink = fast_sink(outbox, server.url, batch_size=32, batch_wait_s=0.5)
    try:
        for n in range(1, 41):
            sink.write(stop_event(n, app="poison" if n == 13 else "cell"))
        assert sink.flush(20), f"outbox still holds {outbox.depth()}"
    finally:
        sink.close(1)
    assert [m.seq for m in script.delivered()] == [n for n in range(1, 41) if n != 13]
    assert sink.dropped == 1
    assert sink.rejected >= 2  # the whole batch, then halves of it, then the message alone
    assert sink.last_drop is not None and "seq 13" in sink.last_drop and "marker refused" in sink.last_drop
    assert sink.last_error == sink.last_drop
    assert outbox.depth() == 0


def test_unauthorised_is_kept_not_dropped(server: Server, script: Script, outbox: Outbox):
    script.answers = [401, 403, 401]
    sink = fast_sink(outbox, server.url, batch_size=10, batch_wait_s=0)
    try:
        for n in range(1, 6):
            sink.write(stop_event(n))
        assert sink.flush(20)
    finally:
        sink.close(1)
    assert sink.rejected == 3 and sink.dropped == 0
    assert [m.seq for m in script.delivered()] == [1, 2, 3, 4, 5]


def test_undelivered_messages_survive_a_restart(script: Script, tmp_path: Path):
    down = Server(script)
    port, url = down.port, down.url
    down.stop()  # nothing listens on the port any more: connection refused
    path = tmp_path / "restart.sqlite"
    box = Outbox(path)
    sink = fast_sink(box, url, batch_wait_s=0)
    for n in range(1, 11):
        sink.write(stop_event(n))
    wait_for(lambda: sink.retries >= 1, what="a failed attempt")
    sink.close(0.3)
    assert box.depth() == 10
    assert sink.acked == 0
    box.close()

    up = Server(script, port=port)
    box = Outbox(path)
    sink = fast_sink(box, url)
    try:
        assert sink.flush(20)
        sink.write(stop_event(11))
        assert sink.flush(20)
    finally:
        sink.close(1)
        up.stop()
    assert [m.seq for m in script.delivered()] == list(range(1, 12))
    assert box.depth() == 0
    box.close()


def test_settings_are_checked(outbox: Outbox):
    with pytest.raises(ConfigError, match="url"):
        HttpSink("s1", outbox, "ftp://example.org/")
    with pytest.raises(ConfigError, match="encoding"):
        HttpSink("s1", outbox, "http://127.0.0.1:1/", encoding="msgpack")
    with pytest.raises(ConfigError, match="batch_size"):
        HttpSink("s1", outbox, "http://127.0.0.1:1/", batch_size=0)
