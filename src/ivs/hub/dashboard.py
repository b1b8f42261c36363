"""The hub's dashboard: one self-contained HTML page and the Server-Sent Events stream it reads.

    GET /, /dashboard     the page (src/ivs/hub/web/dashboard.html: inline CSS and JS, no CDN)
    GET /api/v1/stream    text/event-stream of what the hub stores, as it is stored

The stream starts with a snapshot, then polls the store every `POLL_S` seconds:

    event: sensors   data: [SensorOut + deploy, ...]   on connect, and whenever the list changes
    event: message   data: <a stored event>   id: <its row id>; oldest first

The snapshot is the recent events for the feed, the recent `count` events for the charts and
the latest `heatmap` of each sensor and app; then every event stored after it (frame records
are not streamed: they change the sensors table only). A client that reconnects sends
`Last-Event-ID` (EventSource does) and resumes after that row instead of a new snapshot. A
comment line keeps idle connections alive every `KEEPALIVE_S` seconds; the stream ends when the
client goes away.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, StreamingResponse
from sqlalchemy import func, select

from ivs.hub.auth import VIEWER_RESPONSES, require_viewer
from ivs.hub.deploy import dashboard_fields
from ivs.hub.rollouts import rollout_view
from ivs.hub.store import MessageRow, Store

POLL_S = 0.5
"""How often the stream looks for new messages."""
KEEPALIVE_S = 10.0
"""A comment line after this long without anything else sent."""
SENSORS_EVERY_S = 2.0
"""How often the sensors list is checked when no message arrived (MQTT availability changes it)."""
FEED_SNAPSHOT = 100
"""Recent events sent on connect, for the feed."""
COUNT_SNAPSHOT = 1000
"""Recent `count` events sent on connect, for the charts."""
BATCH = 500
"""The most messages one poll sends; the next poll sends the rest."""
LOOKBACK = 1000
"""How many row ids behind the highest one seen a poll looks again (see `_Cursor`)."""

router = APIRouter()


@cache
def _page() -> bytes:
    return resources.files("ivs.hub").joinpath("web/dashboard.html").read_bytes()


@cache
def _policy() -> str:
    """The page's Content-Security-Policy: its own inline script and style, by their hashes,
    and nothing else (no other script, no inline handler, no other origin, no framing)."""
    page = _page().decode()
    hashes = {}
    for tag in ("script", "style"):
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        hashes[tag] = " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks
        )
    return (f"default-src 'self'; script-src {hashes['script']}; style-src {hashes['style']}; "
            "img-src 'self' data: blob:; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")  # fmt: skip


@router.get("/", include_in_schema=False)
@router.get("/dashboard", tags=["dashboard"], response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    """The dashboard: sensors, a live event feed, count charts and heatmaps (one HTML page)."""
    return HTMLResponse(_page(), headers={"Cache-Control": "no-cache", "Content-Security-Policy": _policy()})


def _sensors(store: Store, offline_after_s: float | None = None) -> list[dict[str, Any]]:
    deploys = store.deploy_states()
    return [
        {
            "sensor_id": s.sensor_id,
            "online": s.online,
            "last_seen": s.last_seen,
            "last_seq": s.last_seq,
            "messages": s.messages,
            "model": s.model,
            "version": s.version,
            **dashboard_fields(*deploys.get(s.sensor_id, (None, None))),
        }
        for s in store.sensors(offline_after_s)
    ]


def _rollouts(store: Store) -> list[dict[str, Any]]:
    """Every rollout with its waves and each device's state (newest first)."""
    return [rollout_view(store, r) for r in reversed(store.rollouts())]


def _snapshot(store: Store) -> tuple[int, list[tuple[int, str]]]:
    """(the highest row id now, [(row id, payload)] of the recent events to start from)."""
    events = MessageRow.kind != "frame"
    with store.engine.connect() as conn:
        top = int(conn.scalar(select(func.max(MessageRow.id))) or 0)
        ids: set[int] = set(
            conn.scalars(select(MessageRow.id).where(events).order_by(MessageRow.id.desc()).limit(FEED_SNAPSHOT))
        )
        ids.update(
            conn.scalars(
                select(MessageRow.id)
                .where(MessageRow.kind == "count")
                .order_by(MessageRow.id.desc())
                .limit(COUNT_SNAPSHOT)
            )
        )
        ids.update(
            conn.scalars(
                select(func.max(MessageRow.id))
                .where(MessageRow.kind == "heatmap")
                .group_by(MessageRow.sensor_id, MessageRow.app)
            )
        )
        rows = conn.execute(
            select(MessageRow.id, MessageRow.payload)
            .where(MessageRow.id.in_(sorted(ids)), MessageRow.id <= top)
            .order_by(MessageRow.id)
        ).all()
    return top, [(int(i), str(p)) for i, p in rows]


class _Cursor:
    """Which stored rows a stream has handled. Row ids are allocated when rows are inserted, not
    when they commit: with several writers (hub workers on PostgreSQL) a lower id can appear
    after a higher one. Each poll therefore looks `LOOKBACK` ids behind the highest seen and
    skips the ids it has handled already."""

    def __init__(self, floor: int) -> None:
        self.floor = floor
        """Never below this: the snapshot's top, or where the client resumes."""
        self.last = floor
        self.done: set[int] = set()

    def poll(self, store: Store) -> tuple[bool, list[tuple[int, str]]]:
        """(whether any row arrived, [(row id, payload)] of the new events): at most BATCH rows."""
        low = max(self.floor, self.last - LOOKBACK)
        with store.engine.connect() as conn:
            ids = conn.scalars(
                select(MessageRow.id).where(MessageRow.id > low).order_by(MessageRow.id).limit(LOOKBACK + BATCH)
            )
            new = [int(i) for i in ids if i not in self.done]
            if not new:
                return False, []
            rows = conn.execute(
                select(MessageRow.id, MessageRow.payload)
                .where(MessageRow.id.in_(new), MessageRow.kind != "frame")
                .order_by(MessageRow.id)
            ).all()
        self.done.update(new)
        self.last = max(self.last, new[-1])
        self.done = {i for i in self.done if i > self.last - LOOKBACK}
        return True, [(int(i), str(p)) for i, p in rows]


def _sse(event: str, data: str, id_: int | None = None) -> bytes:
    lines = [f"event: {event}"]
    if id_ is not None:
        lines.append(f"id: {id_}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return ("\n".join(lines) + "\n\n").encode()


async def _stream(request: Request, store: Store, resume: int | None) -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"
    if resume is None:
        top, rows = await run_in_threadpool(_snapshot, store)
    else:
        top, rows = resume, []
    cursor = _Cursor(top)
    sensors = json.dumps(
        await run_in_threadpool(_sensors, store, request.app.state.offline_after_s), separators=(",", ":")
    )
    yield _sse("sensors", sensors)
    rollouts = json.dumps(await run_in_threadpool(_rollouts, store), separators=(",", ":"))
    yield _sse("rollouts", rollouts)
    for id_, payload in rows:
        yield _sse("message", payload, id_)
    sent = checked = time.monotonic()
    while not await request.is_disconnected():
        await asyncio.sleep(POLL_S)
        arrived, rows = await run_in_threadpool(cursor.poll, store)
        now = time.monotonic()
        chunks: list[bytes] = []
        if arrived or now - checked >= SENSORS_EVERY_S:
            checked = now
            latest = json.dumps(
                await run_in_threadpool(_sensors, store, request.app.state.offline_after_s), separators=(",", ":")
            )
            if latest != sensors:
                sensors = latest
                chunks.append(_sse("sensors", sensors))
            latest = json.dumps(await run_in_threadpool(_rollouts, store), separators=(",", ":"))
            if latest != rollouts:
                rollouts = latest
                chunks.append(_sse("rollouts", rollouts))
        chunks.extend(_sse("message", payload, id_) for id_, payload in rows)
        if chunks:
            yield b"".join(chunks)
            sent = now
        elif now - sent >= KEEPALIVE_S:
            yield b": keep-alive\n\n"
            sent = now


@router.get(
    "/api/v1/stream",
    tags=["dashboard"],
    response_class=StreamingResponse,
    dependencies=[Depends(require_viewer)],
    responses=VIEWER_RESPONSES,
)
def stream(request: Request) -> StreamingResponse:
    """Server-Sent Events: `sensors` (the sensors list, when it changes), `rollouts` (the same for
    the staged rollouts) and `message` (every
    event stored, `id` = its row id; a snapshot of recent ones first unless `Last-Event-ID` says
    where to resume). Frame records are not streamed."""
    store: Store = request.app.state.store
    header = request.headers.get("last-event-id", "").strip()
    resume = int(header) if header.isdigit() and len(header) < 19 else None
    return StreamingResponse(
        _stream(request, store, resume),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
