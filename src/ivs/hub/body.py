"""Request bodies within a size bound.

Every request's body is bounded before anything parses it or asks who sent it (an anonymous
200 MB login body once took the hub to 1.2 GiB): FastAPI's `max_body_size`, `MAX_JSON_BYTES` for
the app and `MAX_SITE_BYTES` for the site file, answers 413 for a declared Content-Length over
it, or as soon as a body without one passes it. The ingest, package and evidence uploads read
their raw bodies themselves with `read_body`, within the bounds the hub is configured with
(their routes take `OWN_BOUND`: no bound of FastAPI's before theirs)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException, Request

MAX_JSON_BYTES = 1024 * 1024
"""Any request body but the uploads': logins, enrolments, desired states, reports, tags."""
MAX_SITE_BYTES = 8 * 1024 * 1024
"""A node's site file as JSON: up to 1 Mi characters, each at most 6 bytes escaped, and the rest."""
OWN_BOUND = 2**62
"""The `max_body_size` of a route that bounds its body itself (`read_body`)."""


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
