"""Logins, who am I, the audit log and the health check over HTTP; the audit middleware.

    GET  /healthz                  anyone: the hub answers (and its database does)
    POST /api/v1/login             {"user", "password"} -> a session cookie for the dashboard (reads only)
    POST /api/v1/logout            ends the session
    GET  /api/v1/me                who the caller is, and their role
    GET  /api/v1/audit             what was done on the hub: who, what, when, from where (admin)
    GET  /api/v1/login-lockouts    user names and addresses that must wait before a login (admin)
    DELETE /api/v1/login-lockouts?user=NAME | ?address=IP   lift one (admin)

Every change an authenticated caller asks for (any method but GET, HEAD and OPTIONS under
/api/v1/, a device's own posts aside) and every login attempt that was checked or malformed is
written to the audit log with its caller and status, whether it was allowed or not. Anonymous
requests refused before they did anything are not: they would let anyone pad the table. Logins
are guarded against floods and guessing by `ivs.hub.login_guard`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ivs.hub.auth import ADMIN_RESPONSES, SESSION_COOKIE, VIEWER_RESPONSES, Caller, require_admin, require_viewer
from ivs.hub.login_guard import LoginGuard
from ivs.hub.store import Store, TextRefused, User

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


@router.post(
    "/api/v1/login",
    responses={
        401: {"description": "no such user, a wrong password, or disabled"},
        429: {"description": "too many failed attempts for this user or from this address: retry after Retry-After"},
        503: {"description": "too many logins being checked at once: retry after Retry-After"},
    },
)
async def login(request: Request, body: LoginIn, response: Response) -> dict[str, str]:
    """A dashboard login: a session cookie (HttpOnly, SameSite=Strict) for reading, 12 hours."""
    store: Store = request.app.state.store
    guard: LoginGuard = request.app.state.login_guard
    address = request.client.host if request.client is not None else None
    request.state.caller = Caller("user", body.user[:128], None)
    wait = guard.retry_after(body.user, address)
    if wait > 0:
        request.state.audit = False  # refused unchecked: not written, so a flood cannot pad the log
        raise HTTPException(429, detail=f"too many failed logins for this user or from this address: retry in "
                            f"{wait:.0f} s", headers={"Retry-After": str(max(1, round(wait)))})  # fmt: skip
    try:
        await asyncio.wait_for(guard.checks.acquire(), guard.queue_s)
    except TimeoutError:
        request.state.audit = False
        raise HTTPException(503, detail="too many logins are being checked: retry shortly",
                            headers={"Retry-After": "5"}) from None  # fmt: skip
    try:
        user: User | None = await run_in_threadpool(store.check_password, body.user, body.password)
    finally:
        guard.checks.release()
    if user is None:
        guard.failed(body.user, address)
        raise HTTPException(401, detail="unknown user or wrong password")
    guard.succeeded(body.user, address)
    request.state.caller = Caller("user", body.user[:128], user.role)
    token = await run_in_threadpool(store.start_session, user.name, SESSION_HOURS)
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


@router.get("/api/v1/login-lockouts", dependencies=[Depends(require_admin)], responses=ADMIN_RESPONSES)
def login_lockouts(request: Request) -> list[dict[str, Any]]:
    """User names and addresses that must wait before their next login attempt, and how long."""
    guard: LoginGuard = request.app.state.login_guard
    return [lo.__dict__ for lo in guard.lockouts()]


@router.delete(
    "/api/v1/login-lockouts",
    dependencies=[Depends(require_admin)],
    responses={
        **ADMIN_RESPONSES,
        400: {"description": "not exactly one of user and address"},
        404: {"description": "no failed logins for that user or address"},
    },
)
def lift_lockout(
    request: Request,
    user: Annotated[str | None, Query(max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")] = None,
    address: Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")] = None,
) -> dict[str, Any]:
    """Forget a user's (or an address's) failed logins: it may log in again at once."""
    if (user is None) == (address is None):
        raise HTTPException(400, detail="expected exactly one of ?user=NAME or ?address=IP")
    key = f"user:{user}" if user is not None else f"address:{address}"
    guard: LoginGuard = request.app.state.login_guard
    if not guard.lift(key):
        raise HTTPException(404, detail=f"no failed logins for {key}: expected one of GET /api/v1/login-lockouts")
    return {"lifted": key}


def add_audit(app: FastAPI) -> None:
    """Record every change an authenticated caller asks for, and every login attempt, in the
    audit log, allowed or refused."""

    @app.middleware("http")
    async def _audit(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        path = request.url.path
        if request.method in ("GET", "HEAD", "OPTIONS") or not path.startswith("/api/v1/"):
            return response
        if path.startswith(_NOT_AUDITED):
            return response
        who: Caller | None = getattr(request.state, "caller", None)
        if not getattr(request.state, "audit", True):
            return response
        if who is None and path != "/api/v1/login":  # anonymous and refused: nothing was done
            return response
        store: Store = request.app.state.store
        address = request.client.host if request.client is not None else None
        # A name as the caller typed it, made storable (a NUL or a lone surrogate escaped).
        label = (who.label if who is not None else "anonymous").encode("unicode_escape").decode("ascii")[:144]
        action = f"{request.method} {path}".encode("unicode_escape").decode("ascii")[:256]
        try:
            await run_in_threadpool(store.audit, label, who.role if who else None, action, response.status_code,
                                    address)  # fmt: skip
        except (SQLAlchemyError, TextRefused):
            log.exception("could not write the audit log for %s %s", request.method, path)
        return response
