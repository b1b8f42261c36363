"""Bearer tokens on the hub's HTTP API: reading the header and the 401 that says what was expected.

Shared by the ingest and admin routes (app.py) and the deploy routes (deploy.py)."""

from __future__ import annotations

from fastapi import HTTPException


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None for any other header."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def unauthorized(detail: str) -> HTTPException:
    """A 401 with the challenge a client needs to know a bearer token is expected."""
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})
