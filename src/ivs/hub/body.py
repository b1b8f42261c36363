"""Reading a request body within a size bound (ingest batches, package uploads): a declared
Content-Length over it is refused before anything is read, and a body without one is cut off as
soon as it passes it, so the hub never holds more than the bound in memory."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException, Request


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
