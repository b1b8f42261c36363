"""Who may do what on the hub's HTTP API: users with roles, devices, and the admin token.

    viewer     reads: events, counts, sensors, the live stream, the dashboard, /metrics
    operator   and deploys: packages, desired states, rollouts, tags, commands, nodes' site files
    admin      and manages: devices, enrolment groups, users' tokens, the audit log

A caller is a user (an API token with a role, `ivs hub token create`, or a dashboard session
cookie), a device (its token: it sees only its own desired state and posts only its own
messages, never anything a user may), or the admin token from the environment (an admin). Only
`GET /healthz` answers anyone; `ivs hub serve --open-read` lets anyone read what a viewer may
(a demo). A session cookie counts only for reading (GET): every change needs an
`Authorization: Bearer` token, so another site cannot make a logged-in browser change anything
(no cross-site request forgery). The routes find the store and settings in `app.state`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Cookie, Header, HTTPException, Request

from ivs.hub.store import ROLES

SESSION_COOKIE = "ivs_session"
USER_TOKEN_PREFIX = "ivs_u_"


@dataclass(frozen=True)
class Caller:
    """Who calls: `kind` "admin" (the admin token), "user", "device" or "anonymous" (open read)."""

    kind: str
    name: str
    role: str | None
    """viewer, operator or admin (None: a device, or nobody)."""

    @property
    def label(self) -> str:
        """How the audit log names them."""
        return self.name if self.kind in ("user", "admin") else f"{self.kind}:{self.name}"


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None for any other header."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def unauthorized(detail: str) -> HTTPException:
    """A 401 with the challenge a client needs to know a bearer token is expected."""
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def identify(request: Request, authorization: str | None, session: str | None) -> Caller | None:
    """The caller of a request: from its bearer token (a 401 for one nobody has), or for a read,
    its session cookie; None when it has neither."""
    token = bearer(authorization)
    if token is not None:
        admin_token: str = request.app.state.admin_token
        if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
            return Caller("admin", "admin", "admin")
        store = request.app.state.store
        if token.startswith(USER_TOKEN_PREFIX):
            user = store.user_for_token(token)
            if user is None:
                raise unauthorized("unknown, revoked or expired user token")
            return Caller("user", user.name, user.role)
        device = store.authenticate(token)
        if device is None:
            raise unauthorized("unknown or revoked token")
        return Caller("device", device, None)
    if session and request.method in ("GET", "HEAD"):
        user = request.app.state.store.user_for_session(session)
        if user is not None:
            return Caller("user", user.name, user.role)
    return None


def _needs(minimum: str) -> Any:
    """A dependency: the caller, who must be a user (or the admin token) with at least this role."""

    def dependency(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        ivs_session: Annotated[str | None, Cookie()] = None,
    ) -> Caller:
        who = identify(request, authorization, ivs_session)
        if who is None:
            if minimum == "viewer" and request.app.state.open_read:
                return Caller("anonymous", "anonymous", None)
            raise unauthorized(
                f"expected `Authorization: Bearer <a user's API token, role {minimum} or more>`"
                + (" or a dashboard login" if minimum == "viewer" else "")
            )
        request.state.caller = who  # for the audit log, whether it may or not
        if who.kind == "device":
            raise HTTPException(
                403,
                detail=f"{who.name!r} is a device: a device token never acts as a user (it sees only its own "
                f"desired state, GET /api/v1/device/desired); this needs a user's token with role {minimum}",
            )
        assert who.role is not None
        if ROLES.index(who.role) < ROLES.index(minimum):
            raise HTTPException(403, detail=f"{who.name!r} is a {who.role}: this needs the role {minimum} or more")
        return who

    dependency.__name__ = dependency.__qualname__ = f"require_{minimum}"
    return dependency


require_viewer = _needs("viewer")
require_operator = _needs("operator")
require_admin = _needs("admin")


def require_caller(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> Caller:
    """An operator (or admin), or a device: what may download a package (a device only its own)."""
    who = identify(request, authorization, None)
    if who is None:
        raise unauthorized("expected `Authorization: Bearer <device token>` or an operator's token")
    request.state.caller = who
    if who.kind != "device" and (who.role is None or ROLES.index(who.role) < ROLES.index("operator")):
        raise HTTPException(403, detail=f"{who.name!r} is a {who.role}: this needs the role operator or more")
    return who


def require_device(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The calling device's name, from its bearer token, or a 401 (a user's token is no device's)."""
    token = bearer(authorization)
    if token is None:
        raise unauthorized("expected `Authorization: Bearer <device token>`")
    name: str | None = None if token.startswith(USER_TOKEN_PREFIX) else request.app.state.store.authenticate(token)
    if name is None:
        raise unauthorized("unknown or revoked device token")
    request.state.caller = Caller("device", name, None)
    return name


def _responses(role: str) -> dict[int | str, dict[str, Any]]:
    return {
        401: {"description": f"no token (or not a known one): expected a user's token, role {role} or more"},
        403: {"description": f"the token may not do this (a device's, or a user below {role})"},
    }


VIEWER_RESPONSES = _responses("viewer")
OPERATOR_RESPONSES = _responses("operator")
ADMIN_RESPONSES = _responses("admin")
"""OpenAPI `responses` of endpoints behind `require_viewer`, `require_operator`, `require_admin`."""
