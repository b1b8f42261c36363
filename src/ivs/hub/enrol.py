"""Enrolment over HTTP: a new device gets its identity with its group's secret, no operator step.

    POST   /api/v1/enrol                         {"group", "device", "secret"} -> its token (no bearer)
    POST   /api/v1/enrolment-groups              {"name"} -> the group's secret, shown once (admin token)
    GET    /api/v1/enrolment-groups              the groups and how many devices each enrolled (admin)
    DELETE /api/v1/enrolment-groups/{name}       no more enrolments through it (admin)

The token is the device's HTTP bearer token and its MQTT password (user name: the device's
name). A hub started with `--mqtt-auth DIR` rewrites Mosquitto's password file and ACL there
after each enrolment and revocation and reloads the broker, so the device reaches MQTT at once
and a revoked one is refused there too (`app.state.devices_changed`).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, Field

from ivs.hub.auth import ADMIN_RESPONSES, require_admin
from ivs.hub.store import NAME_PATTERN, EnrolmentRefused, HubError, Store

log = logging.getLogger(__name__)

router = APIRouter(tags=["enrolment"])


class EnrolIn(BaseModel):
    group: str = Field(max_length=128, description="the enrolment group")
    device: str = Field(pattern=NAME_PATTERN, description="the name the device will have (its sensor id)")
    secret: str = Field(max_length=256, description="the group's secret")


class EnrolOut(BaseModel):
    device: str
    token: str = Field(description="the device's bearer token and MQTT password: shown this once")
    mqtt_user: str


class GroupIn(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description="the group's name")


@router.post(
    "/api/v1/enrol",
    status_code=201,
    responses={
        401: {"description": "unknown or revoked group, or a wrong secret"},
        403: {"description": "the device was revoked"},
        409: {"description": "a device of that name is active"},
        422: {"description": "not a device name"},
    },
)
def enrol(request: Request, body: EnrolIn) -> EnrolOut:
    """Enrol a new device through a group: its identity and credentials, for HTTP and MQTT."""
    store: Store = request.app.state.store
    address = request.client.host if request.client is not None else None
    try:
        token = store.enrol(body.group, body.secret, body.device, address)
    except EnrolmentRefused as err:
        raise HTTPException(err.status, detail=str(err)) from None
    except HubError as err:
        raise HTTPException(409, detail=str(err)) from None
    devices_changed(request)
    return EnrolOut(device=body.device, token=token, mqtt_user=body.device)


@router.post(
    "/api/v1/enrolment-groups",
    status_code=201,
    dependencies=[Depends(require_admin)],
    responses={**ADMIN_RESPONSES, 409: {"description": "an active group of that name exists"}},
)
def add_group(request: Request, body: GroupIn) -> dict[str, str]:
    """A new enrolment group and its secret: the only time the secret is shown."""
    try:
        secret = request.app.state.store.add_group(body.name)
    except HubError as err:
        raise HTTPException(409, detail=str(err)) from None
    return {"name": body.name, "secret": secret}


@router.get("/api/v1/enrolment-groups", dependencies=[Depends(require_admin)], responses=ADMIN_RESPONSES)
def list_groups(request: Request) -> list[dict[str, Any]]:
    """Every enrolment group: created, revoked, devices enrolled (never secrets)."""
    groups: list[dict[str, Any]] = request.app.state.store.groups()
    return groups


@router.delete(
    "/api/v1/enrolment-groups/{name}",
    dependencies=[Depends(require_admin)],
    responses={**ADMIN_RESPONSES, 404: {"description": "no group of that name"}},
)
def revoke_group(request: Request, name: Annotated[str, Path(pattern=NAME_PATTERN)]) -> dict[str, Any]:
    """No more enrolments through this group; the devices it enrolled keep their identity."""
    if not request.app.state.store.revoke_group(name):
        raise HTTPException(404, detail=f"no enrolment group named {name!r}")
    return {"name": name, "revoked": True}


def devices_changed(request: Request) -> None:
    """Tell the broker's auth files (when the hub keeps them) that the devices changed."""
    hook = request.app.state.devices_changed
    if hook is None:
        return
    try:
        hook()
    except Exception:  # the change is made; the broker keeps its last good files and is not reloaded
        log.exception("the broker's password file and ACL were not rewritten")
