"""The hub's dashboard in a real headless Chromium (Debian's, driven by Playwright): the hub under
uvicorn on SQLite, a device posting over HTTP, and the page updating live from the SSE stream.

Needs /usr/bin/chromium (scripts/install-browser.sh) and the `playwright` package; skips without
them. `IVS_DASHBOARD_SCREENSHOT=docs/img/dashboard.png` writes the docs' screenshot there.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import delete, insert, select

from ivs.events import Count, Event, Heatmap, Stop, ZoneEnter
from ivs.hub import dashboard
from ivs.hub.app import create_app
from ivs.hub.store import MessageRow, Store
from ivs.localnet import ServerThread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000


class Hub(ServerThread):
    """The hub's app under uvicorn in a thread, on a free 127.0.0.1 port."""

    def __init__(self, store: Store) -> None:
        self.store = store
        super().__init__(create_app(store, "admin", open_read=True), timeout_graceful_shutdown=3)

    def post(self, token: str, *events: Event) -> dict[str, object]:
        request = urllib.request.Request(
            f"{self.url}/api/v1/ingest",
            data=msgspec.json.encode(list(events)),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, object] = json.loads(response.read())
        assert result["accepted"] == len(events), result
        return result

    def stop(self, timeout: float = 10.0) -> bool:
        stopped = super().stop(timeout)
        assert stopped, "uvicorn did not stop"
        return stopped


@pytest.fixture()
def hub(db_url: str) -> Iterator[Hub]:
    """On SQLite and on PostgreSQL (`db_url`): the tests that use it run on both."""
    store = Store(db_url)
    h = Hub(store)
    yield h
    h.stop()
    store.close()


class Seq:
    """Events for one sensor, numbered from 1, at the current time."""

    def __init__(self, sensor: str, start: float | None = None) -> None:
        self.sensor = sensor
        self.seq = 0
        self.t = time.time() if start is None else start

    def _base(self, app: str, dt: float) -> dict[str, object]:
        self.seq += 1
        self.t += dt
        return {
            "sensor_id": self.sensor,
            "seq": self.seq,
            "frame": self.seq * 5,
            "time": self.t,
            "t_capture_ns": int(self.t * 1e9),
            "t_source": self.seq / 10,
            "app": app,
        }

    def zone_enter(self, track: int, occupancy: int, dt: float = 0.0) -> ZoneEnter:
        return ZoneEnter(
            **self._base("lobby-zone", dt),  # type: ignore[arg-type]
            track_id=track,
            label="person",
            anchor=(320.0, 400.0),
            occupancy=occupancy,
        )

    def count(self, track: int, direction: str, totals_in: int, totals_out: int, dt: float = 0.0) -> Count:
        return Count(
            **self._base("door", dt),  # type: ignore[arg-type]
            track_id=track,
            class_id=0,
            label="person",
            direction=direction,
            anchor_from=(300.0, 240.0),
            anchor_to=(300.0, 250.0),
            totals={"in": {"person": totals_in}, "out": {"person": totals_out}},
        )

    def heatmap(self, cols: int = 16, rows: int = 9, door: float = 0.8, dt: float = 0.0) -> Heatmap:
        counts = []
        for r in range(rows):
            for c in range(cols):
                # two warm spots: a walkway across the frame and a doorway on the right
                walk = math.exp(-(((r - rows * 0.62) / (rows * 0.16)) ** 2)) * 40
                doorway = math.exp(-(((c - cols * door) / 1.6) ** 2 + ((r - rows * 0.35) / 1.4) ** 2)) * 60
                counts.append(int(walk + doorway))
        return Heatmap(
            **self._base("floor", dt),  # type: ignore[arg-type]
            cols=cols,
            rows=rows,
            width=1280,
            height=720,
            counts=counts,
            frames=300,
        )

    def stop(self, dt: float = 0.0) -> Stop:
        return Stop(
            **self._base("press", dt),  # type: ignore[arg-type]
            objects=1,
            labels=["person"],
            boxes=[(100.0, 120.0, 180.0, 300.0)],
        )


DEPLOY_ERROR = (
    "package person 3.0.0 (30972c3f3d95) refused, the running model stays: member model.onnx has sha256"
    " ca734d2710e604f5..., the manifest says 1cc7e69cf24efc92...: the member was changed after packing"
)


def _history(hub: Hub) -> None:
    """Messages stored before the page opens: what the stream's snapshot sends."""
    token = hub.store.add_device("lobby-2")
    lobby = Seq("lobby-2", time.time() - 600)
    ins = outs = 0
    events: list[Event] = []
    for i in range(24):
        if i % 3 == 2:
            outs += 1
            events.append(lobby.count(100 + i, "out", ins, outs, dt=20 + (i * 7) % 13))
        else:
            ins += 1
            events.append(lobby.count(100 + i, "in", ins, outs, dt=15 + (i * 5) % 11))
    events.append(lobby.heatmap(door=0.2, dt=5))
    hub.post(token, *events)
    hub.store.set_sensor("dock-7", online=False, model="person", version="1")
    # a deploy lobby-2 refused: the hub shows desired vs reported and why
    v2, _ = hub.store.add_package(b"package 2", name="person", version="2.0.0")
    v3, _ = hub.store.add_package(b"package 3", name="person", version="3.0.0")
    hub.store.assign("lobby-2", v2.sha256)
    hub.store.report_deploy("lobby-2", revision=1, status="ok", model="person", version="2.0.0", sha256=v2.sha256)
    hub.store.assign("lobby-2", v3.sha256)
    hub.store.report_deploy(
        "lobby-2", revision=2, status="failed", error=DEPLOY_ERROR, model="person", version="2.0.0", sha256=v2.sha256
    )


def _stream_lines(
    hub: Hub, stop_when: str, *, headers: dict[str, str] | None = None, opened: Callable[[], None] | None = None
) -> list[str]:
    """The stream's lines up to the end of the event holding `stop_when`; `opened` is called
    once the first line arrived (the stream is live from then on)."""
    request = urllib.request.Request(f"{hub.url}/api/v1/stream", headers=headers or {})
    lines: list[str] = []
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        while stop_when not in lines or lines[-1] != "":  # to the end of that event
            line = response.readline()
            assert line, f"the stream ended before {stop_when!r}: {lines}"
            lines.append(line.decode().rstrip("\n"))
            if opened is not None and len(lines) == 1:
                opened()
    return lines


def test_the_page_and_the_stream_over_http(hub: Hub) -> None:
    for path in ("/", "/dashboard"):
        with urllib.request.urlopen(f"{hub.url}{path}", timeout=10) as response:
            page = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/html")
        assert "EventSource" in page and "<script src" not in page and "http://" not in page.replace(SVG_NS, "")
    token = hub.store.add_device("cam-1")
    cam = Seq("cam-1")
    hub.post(token, cam.stop(), cam.count(1, "in", 1, 0))
    # a new client: the sensors list, then the snapshot (oldest first, with row ids)
    lines = _stream_lines(hub, "id: 2")
    sensors = json.loads(lines[lines.index("event: sensors") + 1].removeprefix("data: "))
    assert [(s["sensor_id"], s["online"], s["last_seq"], s["messages"]) for s in sensors] == [("cam-1", True, 2, 2)]
    first = lines.index("id: 1")
    assert lines[first - 1] == "event: message"
    assert json.loads(lines[first + 1].removeprefix("data: "))["kind"] == "stop"
    # resuming after row 2 (EventSource's Last-Event-ID): no snapshot, only what comes next,
    # here a message stored once the stream is open (sent live, not from the snapshot)
    lines = _stream_lines(
        hub, "id: 3", headers={"Last-Event-ID": "2"}, opened=lambda: hub.post(token, cam.count(2, "in", 2, 0))
    )
    assert "id: 1" not in lines and "id: 2" not in lines
    message = json.loads(lines[lines.index("id: 3") + 1].removeprefix("data: "))
    assert (message["kind"], message["seq"], message["totals"]["in"]) == ("count", 3, {"person": 2})


SVG_NS = "http://www.w3.org/2000/svg"


def test_idle_streams_get_keep_alive_comments(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard, "KEEPALIVE_S", 0.6)
    lines = _stream_lines(hub, ": keep-alive")
    assert "event: sensors" in lines and "event: message" not in lines


def test_the_stream_sends_rows_that_commit_out_of_id_order(tmp_path: Path) -> None:
    """PostgreSQL with several writers: a row with a lower id can commit after a higher one."""
    store = Store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    try:
        cam = Seq("cam-1")
        store.ingest([cam.stop(), cam.stop(), cam.stop()])
        with store.engine.begin() as conn:
            late = conn.execute(select(MessageRow.__table__).where(MessageRow.id == 2)).mappings().one()
            conn.execute(delete(MessageRow).where(MessageRow.id == 2))
        cursor = dashboard._Cursor(0)
        arrived, rows = cursor.poll(store)
        assert arrived and [i for i, _ in rows] == [1, 3]
        assert cursor.poll(store) == (False, [])
        with store.engine.begin() as conn:  # row 2 commits now
            conn.execute(insert(MessageRow).values(**late))
        arrived, rows = cursor.poll(store)
        assert arrived and [(i, json.loads(p)["seq"]) for i, p in rows] == [(2, 2)]
        assert cursor.poll(store) == (False, [])
    finally:
        store.close()


@pytest.mark.slow
def test_the_dashboard_updates_live_in_chromium(hub: Hub, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: run scripts/install-browser.sh")
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    _history(hub)
    token = hub.store.add_device("entrance-1")
    cam = Seq("entrance-1", time.time() - 30)
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(f"{hub.url}/", wait_until="domcontentloaded")
            expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
            # the snapshot: the sensors seen before, their counts and heatmap
            expect(page.locator('tr[data-sensor="lobby-2"] .badge.online')).to_be_visible(timeout=WAIT_MS)
            expect(page.locator('tr[data-sensor="dock-7"] .badge.offline')).to_be_visible(timeout=WAIT_MS)
            lobby = page.locator('tr[data-sensor="lobby-2"]')
            expect(lobby.locator("td.desired")).to_have_text("person 3.0.0")
            expect(lobby.locator("td.model")).to_have_text("person 2.0.0")
            expect(lobby.locator("td.deploy .badge.deploy-failed")).to_have_text("failed")
            expect(page.locator('tr[data-sensor-why="lobby-2"] td.why')).to_have_text(DEPLOY_ERROR)
            expect(page.locator('tr[data-sensor="dock-7"] td.deploy .badge.deploy-none')).to_be_visible()
            expect(page.locator('figure.chart[data-key="lobby-2/door"]')).to_have_attribute("data-in", "16")
            expect(page.locator('tr[data-sensor="entrance-1"]')).to_have_count(0)

            # (a) a new sensor posts: its row appears, online
            hub.post(token, cam.zone_enter(7, occupancy=1, dt=2))
            row = page.locator('tr[data-sensor="entrance-1"]')
            expect(row.locator(".badge.online")).to_be_visible(timeout=WAIT_MS)
            expect(row.locator("td.seq")).to_have_text("1", timeout=WAIT_MS)
            # (b) the event is in the feed, newest first
            entered = page.locator('#feed li[data-sensor="entrance-1"][data-kind="zone_enter"]')
            expect(entered).to_be_visible(timeout=WAIT_MS)
            expect(entered).to_contain_text("person #7 entered · occupancy 1")
            expect(page.locator("#feed li").first).to_have_attribute("data-sensor", "entrance-1")

            # (c) the count chart follows the running totals: 1, then 2
            hub.post(token, cam.count(7, "in", 1, 0, dt=6))
            chart = page.locator('figure.chart[data-key="entrance-1/door"]')
            expect(chart).to_have_attribute("data-in", "1", timeout=WAIT_MS)
            expect(chart.locator(".total-in")).to_have_text("1")
            hub.post(token, cam.count(8, "in", 2, 0, dt=9))
            expect(chart).to_have_attribute("data-in", "2", timeout=WAIT_MS)
            expect(chart).to_have_attribute("data-points", "2")
            expect(chart.locator(".total-in")).to_have_text("2")
            expect(chart.locator("path.line-in")).to_have_count(1)
            expect(row.locator("td.messages")).to_have_text("3", timeout=WAIT_MS)

            # (d) the heatmap: a grid of coloured cells
            hub.post(token, cam.heatmap(cols=16, rows=9, dt=3))
            heatmap = page.locator('figure.heatmap[data-key="entrance-1/floor"]')
            expect(heatmap.locator("rect.cell")).to_have_count(16 * 9, timeout=WAIT_MS)
            hot = heatmap.locator("rect.cell").nth(int(9 * 0.35) * 16 + int(16 * 0.8))
            assert hot.get_attribute("fill") not in (None, "#f3f4f6")
            expect(page.locator('#feed li[data-sensor="entrance-1"]')).to_have_count(4)
            assert not errors, errors

            shot = Path(os.environ.get("IVS_DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            assert 0 < shot.stat().st_size < 200_000, shot.stat().st_size
            page.close()
        finally:
            context.close()
