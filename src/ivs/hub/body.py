"""Request bodies within a size bound.

`BodyLimit` bounds every request's body before anything parses it or asks who sent it: a
declared Content-Length over the route's bound is answered 413 at once, and a body without one
is cut off as soon as it passes it (an anonymous 200 MB login body once took the hub to 1.2 GiB).
Each route has one bound: the ingest, package and evidence uploads read their raw bodies
themselves with `read_body` within their own, larger bounds (after the caller's credentials are
checked); every other route `MAX_JSON_BYTES`, the site file `MAX_SITE_BYTES`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_JSON_BYTES = 1024 * 1024
"""Any request body but the uploads': logins, enrolments, desired states, reports, tags."""
MAX_SITE_BYTES = 8 * 1024 * 1024
"""A node's site file as JSON: up to 1 Mi characters, each at most 6 bytes escaped, and the rest."""


async def read_body(request: Request, max_bytes: int, what: str, too_large: Callable[[], None] = lambda: None) -> bytes:
    """The body's bytes, or a 413 saying `what` ("a body", "a package") was over `max_bytes`;
    `too_large` is called before it is raised (to count it)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        too_large()
        raise HTTPException(413, detail=f"{what} of {int(length)} bytes: expected at most {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            too_large()
            raise HTTPException(413, detail=f"{what} of more than {max_bytes} bytes: expected at most {max_bytes}")
        chunks.append(chunk)
    return b"".join(chunks)


class BodyLimit:
    """ASGI middleware: every request's body within its route's bound (`bounds`: (method, path
    regex, bytes), first match wins, None: the route bounds its own body; else `default`)."""

    def __init__(self, app: ASGIApp, bounds: list[tuple[str, str, int | None]], default: int = MAX_JSON_BYTES) -> None:
        self.app = app
        self.bounds = [(method, re.compile(path), limit) for method, path, limit in bounds]
        self.default = default

    def bound(self, method: str, path: str) -> int | None:
        for m, pattern, limit in self.bounds:
            if m == method and pattern.fullmatch(path):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.bound(scope["method"], scope["path"])
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, f"a body of {int(declared)} bytes: expected at most {limit} for this request")
            return
        size = 0

        async def bounded() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:  # FastAPI passes an HTTPException from here on as it is
                    raise HTTPException(413, detail=f"a body of more than {limit} bytes: expected at most {limit}")
            return message

        await self.app(scope, bounded, send)


async def _refuse(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                          (b"connection", b"close")]  # fmt: skip
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
