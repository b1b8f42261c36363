"""Bearer tokens on the hub's HTTP API: reading the header, who a token is, the one admin check
and the one device check every route uses (app.py, deploy.py), and the 401 that says what was
expected. The routes find the store and the admin token in `app.state` (`create_app` sets them).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Header, HTTPException, Request


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None for any other header."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def unauthorized(detail: str) -> HTTPException:
    """A 401 with the challenge a client needs to know a bearer token is expected."""
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def caller(request: Request, token: str) -> str | None:
    """ "admin", "device:<name>" for an active device's token, or None for an unknown token."""
    admin_token: str = request.app.state.admin_token
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return "admin"
    device = request.app.state.store.authenticate(token)
    return f"device:{device}" if device is not None else None


def _identify(request: Request, authorization: str | None, expected: str, unknown: str) -> str:
    """`caller` of the request's bearer token, or a 401 saying what was expected."""
    token = bearer(authorization)
    if token is None:
        raise unauthorized(f"expected `Authorization: Bearer <{expected}>`")
    who = caller(request, token)
    if who is None:
        raise unauthorized(unknown)
    return who


def require_caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """Who calls (see `caller`): the admin or an active device; a 401 for anyone else."""
    return _identify(request, authorization, "device token", "unknown or revoked token")


def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """The admin token, or a 401 (no or unknown token) or 403 (a device's token; no admin token set)."""
    if not request.app.state.admin_token:
        raise HTTPException(403, detail="management over HTTP is off: start the hub with an admin token")
    who = _identify(
        request, authorization, "admin token", "the token is neither this hub's admin token nor an active device's"
    )
    if who != "admin":
        raise HTTPException(
            403,
            detail=f"{who.removeprefix('device:')!r} is a device: a device token sees only its own desired state"
            " (GET /api/v1/device/desired); this needs the admin token",
        )


def require_device(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The calling device's name, from its bearer token, or a 401."""
    token = bearer(authorization)
    if token is None:
        raise unauthorized("expected `Authorization: Bearer <device token>`")
    name: str | None = request.app.state.store.authenticate(token)
    if name is None:
        raise unauthorized("unknown or revoked device token")
    return name


ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no admin token, or not this hub's"},
    403: {"description": "the token may not do this (a device's token, or the hub has no admin token)"},
}
"""OpenAPI `responses` of an endpoint behind `require_admin`."""
