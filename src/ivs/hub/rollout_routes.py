"""Tags and staged rollouts over HTTP (operator); the logic is `ivs.hub.rollouts`.

PUT  /api/v1/devices/{name}/tags          {"site": "berlin", "role": null}: set, or remove with null
GET  /api/v1/tags                         every tagged device and its tags
POST /api/v1/rollouts                     {"name", "package", "target", "waves", "gate_s", "min_fps_ratio", "priority"}
GET  /api/v1/rollouts                     every rollout, its waves and each device's state
GET  /api/v1/rollouts/{name}
POST /api/v1/rollouts/{name}/pause|resume|abort
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, Field

from ivs.hub.auth import OPERATOR_RESPONSES, require_operator
from ivs.hub.rollouts import RolloutController, rollout_view
from ivs.hub.store import NAME_PATTERN, HubError, HubNotFound, Store
from ivs.hub.targets import TAG_KEY

router = APIRouter(tags=["rollouts"], dependencies=[Depends(require_operator)], responses=OPERATOR_RESPONSES)
_REFUSED: dict[int | str, dict[str, Any]] = {404: {"description": "no such device, package or rollout"},
                                              409: {"description": "refused: the reason says why"}}  # fmt: skip


class RolloutIn(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description="the rollout's name")
    package: str = Field(max_length=200, description="sha256, NAME@VERSION or NAME of an uploaded package")
    target: str = Field(max_length=1024, description="a condition on tags, e.g. `site = berlin and role = entrance`")
    waves: str = Field("1,10%,100%", max_length=256, description="cumulative wave sizes: counts or shares")
    gate_s: float = Field(30.0, gt=0, le=86400, description="seconds each wave's devices must stay healthy")
    min_fps_ratio: float = Field(0.8, ge=0, le=1, description="healthy: at least this share of the fps before")
    priority: int = Field(0, ge=-1000, le=1000, description="a device in two rollouts belongs to the higher")


def _controller(request: Request) -> RolloutController:
    controller: RolloutController = request.app.state.rollouts
    return controller


@router.put("/api/v1/devices/{name}/tags", responses=_REFUSED)
def set_tags(
    request: Request, name: Annotated[str, Path(pattern=NAME_PATTERN)], tags: dict[str, str | None]
) -> dict[str, str]:
    """Set (or, with null, remove) tags of a device; its tags after."""
    store: Store = request.app.state.store
    if name not in {d.name for d in store.devices()}:
        raise HTTPException(404, detail=f"no device named {name!r}: expected one of `GET /api/v1/devices`")
    for key, value in tags.items():
        if TAG_KEY.fullmatch(key) is None or (value is not None and not 0 < len(value) <= 256):
            raise HTTPException(
                409, detail=f"tag {key!r}: expected a key of letters, digits, '.', '_', '-' and a value"
            )
    return store.set_tags(name, tags)


@router.get("/api/v1/tags")
def list_tags(request: Request) -> dict[str, dict[str, str]]:
    """Every tagged device and its tags."""
    tags: dict[str, dict[str, str]] = request.app.state.store.tags()
    return tags


@router.post("/api/v1/rollouts", status_code=201, responses=_REFUSED)
def start_rollout(request: Request, body: RolloutIn) -> dict[str, Any]:
    """Start a staged rollout: its first wave gets the package now."""
    try:
        r = _controller(request).create(**body.model_dump())
    except HubNotFound as err:
        raise HTTPException(404, detail=str(err)) from None
    except HubError as err:
        raise HTTPException(409, detail=str(err)) from None
    return rollout_view(request.app.state.store, r)


@router.get("/api/v1/rollouts")
def list_rollouts(request: Request) -> list[dict[str, Any]]:
    """Every rollout: its state, waves and each device's state."""
    store: Store = request.app.state.store
    return [rollout_view(store, r) for r in store.rollouts()]


@router.get("/api/v1/rollouts/{name}", responses=_REFUSED)
def get_rollout(request: Request, name: Annotated[str, Path(pattern=NAME_PATTERN)]) -> dict[str, Any]:
    store: Store = request.app.state.store
    try:
        return rollout_view(store, store.rollout(name))
    except HubNotFound as err:
        raise HTTPException(404, detail=str(err)) from None


@router.post("/api/v1/rollouts/{name}/{action}", responses=_REFUSED)
def act_on_rollout(
    request: Request,
    name: Annotated[str, Path(pattern=NAME_PATTERN)],
    action: Literal["pause", "resume", "abort"],
) -> dict[str, Any]:
    """Pause (no further waves), resume, or abort (stop and roll back) a rollout."""
    controller = _controller(request)
    try:
        r = getattr(controller, action)(name)
    except HubNotFound as err:
        raise HTTPException(404, detail=str(err)) from None
    except HubError as err:
        raise HTTPException(409, detail=str(err)) from None
    return rollout_view(request.app.state.store, r)
