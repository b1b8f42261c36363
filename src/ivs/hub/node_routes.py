"""A node's site file, deployed from the hub (the node's twin: desired site, reported health).

    PUT  /api/v1/devices/{name}/node-config     {"config": "<site YAML>"} -> its next revision (operator)
    GET  /api/v1/devices/{name}/node            desired revision vs the node's last report (operator)
    GET  /api/v1/device/node-config             the calling node's desired site file (its device token)
    POST /api/v1/device/node-report             the calling node reports the revision applied and its sensors

A hub with MQTT publishes each new revision on `ivs/NODE/desired` (retained), which a node
with `node.hub.mqtt` acts on at once. The hub checks the file as `ivs config check` does
without opening cameras (the schema, what sensors may not share, `node.id` = the device's
name); the node applies it with a reload: the sensors it adds start, those it removes stop,
those it changes restart, the others run on.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, Field

from ivs.hub.auth import OPERATOR_RESPONSES, require_device, require_operator
from ivs.hub.body import MAX_SITE_BYTES
from ivs.hub.store import NAME_PATTERN, Store
from ivs.node_config import parse_node

router = APIRouter(tags=["nodes"])
MAX_SITE_CHARS = 1024 * 1024


class NodeConfigIn(BaseModel):
    config: str = Field(max_length=MAX_SITE_CHARS, description="the site file (YAML), as `ivs node --config` reads it")


class NodeReportIn(BaseModel):
    revision: int = Field(ge=0, le=2**63 - 1, description="the desired revision acted on (0: none yet)")
    status: Literal["ok", "failed"]
    error: str | None = Field(None, max_length=8000, description="why it was not applied")
    sensors: list[dict[str, Any]] = Field(default_factory=list, max_length=1000, description="each sensor's health")


def _known(store: Store, name: str) -> None:
    if name not in {d.name for d in store.devices()}:
        raise HTTPException(404, detail=f"no device named {name!r}: expected one of `GET /api/v1/devices`")


@router.put(
    "/api/v1/devices/{name}/node-config",
    max_body_size=MAX_SITE_BYTES,
    dependencies=[Depends(require_operator)],
    responses={
        **OPERATOR_RESPONSES,
        404: {"description": "no such device"},
        422: {"description": "not a valid site file"},
    },
)
def set_node_config(
    request: Request, name: Annotated[str, Path(pattern=NAME_PATTERN)], body: NodeConfigIn
) -> dict[str, Any]:
    """Make a site file the node's desired state: it applies it at its next poll."""
    store: Store = request.app.state.store
    _known(store, name)
    config, problems, _ = parse_node(body.config)
    if config is None:
        shown = "; ".join(p.format("config") for p in problems[:5])
        raise HTTPException(422, detail=f"not a valid site file: {shown}")
    if config.node.id != name:
        raise HTTPException(
            422, detail=f"the site's node.id is {config.node.id!r}: expected the device's name {name!r}"
        )
    assigned = store.set_node_config(name, body.config)
    push = request.app.state.push_desired
    if push is not None:  # a hub with MQTT tells the node at once (`node.hub.mqtt`)
        push(name, assigned["revision"])
    return assigned


@router.get(
    "/api/v1/devices/{name}/node",
    dependencies=[Depends(require_operator)],
    responses={**OPERATOR_RESPONSES, 404: {"description": "no such device"}},
)
def node_state(request: Request, name: Annotated[str, Path(pattern=NAME_PATTERN)]) -> dict[str, Any]:
    """The node's desired revision, its last report (applied or why not) and its sensors' health."""
    store: Store = request.app.state.store
    _known(store, name)
    desired = store.node_config(name)
    report = store.node_report(name)
    in_sync = (
        desired is not None
        and report is not None
        and report["revision"] == desired["revision"]
        and report["status"] == "ok"
    )
    return {"device": name, "desired_revision": desired["revision"] if desired else 0, "reported": report,
            "in_sync": in_sync}  # fmt: skip


@router.get("/api/v1/device/node-config", responses={401: {"description": "no, or an unknown, device token"}})
def my_node_config(request: Request, me: Annotated[str, Depends(require_device)]) -> dict[str, Any]:
    """The calling node's desired site file (revision 0 and no config: none assigned)."""
    return request.app.state.store.node_config(me) or {"revision": 0, "config": None, "assigned": None}


@router.post(
    "/api/v1/device/node-report",
    responses={
        401: {"description": "no, or an unknown, device token"},
        409: {"description": "a revision never assigned"},
    },
)
def node_report(request: Request, me: Annotated[str, Depends(require_device)], body: NodeReportIn) -> dict[str, Any]:
    """The calling node reports the revision it applied (or why not) and its sensors' health."""
    store: Store = request.app.state.store
    desired = store.node_config(me)
    latest = desired["revision"] if desired else 0
    if body.revision > latest:
        raise HTTPException(
            409, detail=f"revision {body.revision} was never assigned to {me!r}: expected at most {latest}"
        )
    store.report_node(me, body.revision, body.status, body.error, body.sensors)
    return {"device": me, "revision": body.revision, "status": body.status}
