"""Direct methods over HTTP: the operator asks, the hub relays over MQTT, the device answers.

    POST /api/v1/devices/{name}/commands   {"name": "ping", "args": {}, "timeout_s": 5}   (operator)

200 with the device's answer (`ok`, and `result` or `error`: the device could not do it, and
says why) and how long it took; 504 when the device did not answer within `timeout_s` (offline
or busy; the command is not kept for it); 409 on a hub started without MQTT (it has no way to
reach devices: a setting, not a failure). The commands and
what they do: `ivs.commands`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from ivs.hub.auth import OPERATOR_RESPONSES, require_operator
from ivs.hub.mqtt_ingest import CommandTimeout
from ivs.hub.store import NAME_PATTERN, Store

router = APIRouter(tags=["commands"], responses=OPERATOR_RESPONSES)


class CommandIn(BaseModel):
    name: Literal["ping", "reload", "app", "log", "restart", "evidence"] = Field(
        description="the command (ivs.commands)"
    )
    args: dict[str, Any] = Field(
        default_factory=dict, description='its arguments, e.g. {"name": "door", "enabled": false}'
    )
    timeout_s: float = Field(5.0, gt=0, le=60, description="how long to wait for the device's answer")


class CommandOut(BaseModel):
    device: str
    command: str
    ok: bool = Field(description="the device did it; false: see error")
    result: dict[str, Any] | None = None
    error: str | None = None
    ms: float = Field(description="from the request to the device's answer")


@router.post(
    "/api/v1/devices/{name}/commands",
    dependencies=[Depends(require_operator)],
    responses={
        404: {"description": "no such device"},
        409: {"description": "the hub runs without MQTT: it cannot reach devices"},
        504: {"description": "the device did not answer in time"},
    },
)
async def send_command(
    request: Request, name: Annotated[str, Path(pattern=NAME_PATTERN)], cmd: CommandIn
) -> CommandOut:
    """Send one command to a device and wait for its answer."""
    store: Store = request.app.state.store
    command = request.app.state.command
    if command is None:
        raise HTTPException(409, detail="this hub runs without MQTT (--mqtt): it cannot send commands to devices")
    if name not in {d.name for d in store.devices()}:
        raise HTTPException(404, detail=f"no device named {name!r}: expected one of `GET /api/v1/devices`")
    t0 = time.perf_counter()
    try:
        answer = await run_in_threadpool(command, name, cmd.name, cmd.args, cmd.timeout_s)
    except CommandTimeout as err:
        raise HTTPException(504, detail=str(err)) from None
    return CommandOut(device=name, command=cmd.name, ok=bool(answer.get("ok")), result=answer.get("result"),
                      error=answer.get("error"), ms=round((time.perf_counter() - t0) * 1e3, 1))  # fmt: skip
