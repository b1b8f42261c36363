"""Logins, who am I, the audit log and the health check over HTTP; the audit middleware.

    GET  /healthz                  anyone: the hub answers (and its database does)
    POST /api/v1/login             {"user", "password"} -> a session cookie for the dashboard (reads only)
    POST /api/v1/logout            ends the session
    GET  /api/v1/me                who the caller is, and their role
    GET  /api/v1/audit             what was done on the hub: who, what, when, from where (admin)

Every request that changes something (any method but GET, HEAD and OPTIONS under /api/v1/, a
device's own posts aside) and every login is written to the audit log with its caller and
status, whether it was allowed or not.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ivs.hub.auth import ADMIN_RESPONSES, SESSION_COOKIE, VIEWER_RESPONSES, Caller, require_admin, require_viewer
from ivs.hub.store import Store

log = logging.getLogger(__name__)

router = APIRouter(tags=["users"])
SESSION_HOURS = 12.0
_NOT_AUDITED = ("/api/v1/ingest", "/api/v1/device/")
"""A device's own traffic: its messages and reports are stored as such, not as actions."""


class LoginIn(BaseModel):
    user: str = Field(max_length=128)
    password: str = Field(max_length=1024)


@router.get("/healthz", tags=["health"])
def healthz(request: Request) -> dict[str, Any]:
    """The only endpoint that answers anyone: is the hub up, and can it reach its database."""
    store: Store = request.app.state.store
    try:
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        raise HTTPException(503, detail="the database is unavailable", headers={"Retry-After": "5"}) from None
    return {"ok": True}


@router.post("/api/v1/login", responses={401: {"description": "no such user, a wrong password, or disabled"}})
def login(request: Request, body: LoginIn, response: Response) -> dict[str, str]:
    """A dashboard login: a session cookie (HttpOnly, SameSite=Strict) for reading, 12 hours."""
    store: Store = request.app.state.store
    user = store.check_password(body.user, body.password)
    request.state.caller = Caller("user", body.user[:128], user.role if user else None)
    if user is None:
        raise HTTPException(401, detail="unknown user or wrong password")
    token = store.start_session(user.name, SESSION_HOURS)
    secure = request.url.scheme == "https"
    response.set_cookie(SESSION_COOKIE, token, max_age=int(SESSION_HOURS * 3600), httponly=True, samesite="strict",
                        secure=secure, path="/")  # fmt: skip
    return {"user": user.name, "role": user.role}


@router.post("/api/v1/logout")
def logout(request: Request, response: Response) -> dict[str, bool]:
    """End the dashboard session of this browser."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        request.app.state.store.end_session(token)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"logged_out": True}


@router.get("/api/v1/me", responses=VIEWER_RESPONSES)
def me(who: Annotated[Caller, Depends(require_viewer)]) -> dict[str, Any]:
    """Who the caller is: their name and role (the dashboard asks, to know whether to show its login)."""
    return {"name": who.name, "kind": who.kind, "role": who.role}


@router.get("/api/v1/audit", dependencies=[Depends(require_admin)], responses=ADMIN_RESPONSES)
def audit(
    request: Request,
    since: Annotated[float | None, Query(allow_inf_nan=False, description="entries at or after (epoch s)")] = None,
    who: Annotated[str | None, Query(max_length=160)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[dict[str, Any]]:
    """The audit log, newest first."""
    entries = request.app.state.store.audit_log(since=since, who=who, limit=limit)
    return [e.__dict__ for e in entries]


def add_audit(app: FastAPI) -> None:
    """Record every change (and every login) in the audit log, allowed or refused."""

    @app.middleware("http")
    async def _audit(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        path = request.url.path
        if request.method in ("GET", "HEAD", "OPTIONS") or not path.startswith("/api/v1/"):
            return response
        if path.startswith(_NOT_AUDITED):
            return response
        who: Caller | None = getattr(request.state, "caller", None)
        store: Store = request.app.state.store
        address = request.client.host if request.client is not None else None
        label = who.label if who is not None else "anonymous"
        try:
            await run_in_threadpool(store.audit, label, who.role if who else None, f"{request.method} {path}",
                                    response.status_code, address)  # fmt: skip
        except SQLAlchemyError:
            log.exception("could not write the audit log for %s %s", request.method, path)
        return response
