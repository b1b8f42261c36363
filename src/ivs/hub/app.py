"""The hub's HTTP API (FastAPI; its OpenAPI document at /openapi.json, for viewers and up).

    POST   /api/v1/ingest           a JSON array of messages, `Authorization: Bearer <device token>`
    GET    /api/v1/events           stored messages, filtered
    GET    /api/v1/counts           `count` events per time bucket, direction and label
    GET    /api/v1/sensors          every sensor seen
    POST   /api/v1/devices          register a device (admin token) -> its bearer token, once
    GET    /api/v1/devices          list devices (admin token)
    DELETE /api/v1/devices/{name}   revoke a device (admin token)
    ...    /api/v1/packages, /api/v1/devices/{name}/desired, /api/v1/device/...: deploy (ivs.hub.deploy)
    GET    /metrics                 Prometheus metrics

Ingest answers 200 with what it did, element by element: valid messages are stored (once per
`(sensor_id, seq)`: posting a batch again stores nothing twice), invalid ones are listed with
their index and reason. A body that is not a JSON array is 400; over `max_messages` elements or
`max_bytes` bytes, 413; no, an unknown or a revoked token, 401; a database failure, 503 with
`Retry-After` (the HTTP sink then keeps the batch and sends it again). Malformed requests get
4xx answers that say what was expected, never a 5xx. The device is whoever the token names: the
sink's `X-Ivs-Sensor` header is informational, and a message whose `sensor_id` is not the
device's name is rejected.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ivs.consumer import Message, decode_message
from ivs.hub.auth import VIEWER_RESPONSES, bearer, require_admin, require_viewer, unauthorized
from ivs.hub.body import MAX_JSON_BYTES, OWN_BOUND, read_body
from ivs.hub.commands import router as commands_router
from ivs.hub.dashboard import router as dashboard_router
from ivs.hub.deploy import MAX_UPLOAD_BYTES
from ivs.hub.deploy import router as deploy_router
from ivs.hub.enrol import devices_changed as _devices_changed
from ivs.hub.enrol import router as enrol_router
from ivs.hub.evidence import router as evidence_router
from ivs.hub.headers import SecurityHeaders
from ivs.hub.login_guard import LoginGuard
from ivs.hub.metrics import HubMetrics
from ivs.hub.node_routes import router as node_router
from ivs.hub.rollout_routes import router as rollout_router
from ivs.hub.rollouts import RolloutController
from ivs.hub.store import NAME_PATTERN, HubError, Store, TextRefused, check_message
from ivs.hub.users import add_audit
from ivs.hub.users import router as users_router

MAX_MESSAGES = 10_000
MAX_BYTES = 10 * 1024 * 1024
_REASON_CHARS = 500
_TEXT = r"^[^\x00-\x1f\x7f]*$"
"""Query strings: no control characters (PostgreSQL refuses NUL in text)."""

_array_decoder = msgspec.json.Decoder(list[msgspec.Raw])


class Rejection(BaseModel):
    """One element of an ingest batch that was not stored."""

    index: int = Field(description="0-based position of the element in the posted array")
    reason: str


class IngestResult(BaseModel):
    """What an ingest did with a batch."""

    accepted: int = Field(description="messages stored now")
    duplicates: int = Field(description="messages already stored (same sensor_id and seq): nothing changed")
    rejected: list[Rejection]


class SensorOut(BaseModel):
    """A sensor the hub has seen."""

    sensor_id: str
    online: bool = Field(
        description="its MQTT availability is not offline and the hub heard from it within --offline-after seconds"
    )
    last_seen: float | None = Field(description="when the hub last heard from it (hub clock, epoch seconds)")
    last_seq: int = Field(description="the highest seq stored")
    messages: int = Field(description="messages stored")
    model: str | None = Field(description="the model it reports (heartbeat, MQTT state or deploy report)")
    version: str | None


class CountBucket(BaseModel):
    """`count` events in [start, end), by direction ("in"/"out") and label."""

    start: float
    end: float
    counts: dict[str, dict[str, int]]


class DeviceCreate(BaseModel):
    """A device to register: its name is the sensor_id it will post as."""

    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, '_', '.', '-'; at most 128")


class DeviceCreated(BaseModel):
    """A new device and its bearer token: shown this once, stored only as a hash."""

    name: str
    token: str


class DeviceOut(BaseModel):
    """A registered device (never its token)."""

    name: str
    created: float
    revoked: float | None


class DeviceRevoked(BaseModel):
    name: str
    revoked: bool


class Refusal(BaseModel):
    """Why a request was refused: what was wrong and what was expected."""

    detail: str


def _refusals(codes: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the 4xx/5xx an operation answers, each with a `Refusal` body."""
    return {code: {"model": Refusal, "description": why} for code, why in codes.items()}


OFFLINE_AFTER_S = 90.0
"""Three missed heartbeats at the sensors' default `heartbeat_s` (30 s)."""

_ADMIN_REFUSALS = {
    401: "no admin token, or not this hub's",
    403: "a device's token, or management over HTTP is off (the hub has no admin token)",
}


router = APIRouter()
"""The ingest, query, device and metrics endpoints; they read the store, the metrics and the
limits from `app.state` (`create_app` sets them)."""


def create_app(
    store: Store,
    admin_token: str,
    *,
    metrics: HubMetrics | None = None,
    max_messages: int = MAX_MESSAGES,
    max_bytes: int = MAX_BYTES,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    push_desired: Callable[[str, int], None] | None = None,
    command: Callable[[str, str, dict[str, Any], float], dict[str, Any]] | None = None,
    devices_changed: Callable[[], None] | None = None,
    rollouts: RolloutController | None = None,
    offline_after_s: float | None = OFFLINE_AFTER_S,
    open_read: bool = False,
    evidence_dir: str | Path | None = None,
) -> FastAPI:
    """The hub's API over `store`. `admin_token` guards /api/v1/devices and the operator's deploy
    endpoints (empty: management over HTTP is off; use `Store.add_device`). `metrics` defaults to
    a new `HubMetrics` (its own registry); pass the one an `MqttIngest` in this process also counts in.
    `push_desired(device, revision)`: tell a device its new desired revision at once (the MQTT
    ingest's `push_desired`); None: devices find it at their next poll. `command(device, name, args,
    timeout_s)`: relay a direct method (the MQTT ingest's `command`); None: commands answer 409.
    `devices_changed()`: called after a device is enrolled or revoked over HTTP (the broker's
    password file and ACL rewritten and reloaded, `ivs.hub.mqtt_auth.BrokerSync`). `rollouts`: the
    staged rollouts' controller (default: one over `store` with `push_desired`, stepped by the
    API's calls only; `ivs hub serve` runs it on its own thread). `offline_after_s`: a sensor not
    heard from for this long (messages, heartbeats, MQTT state) is shown offline (None: only its
    last will says so). Users and roles: `ivs.hub.auth`; `open_read` lets anyone read what a viewer
    may (events, counts, sensors, the stream, /metrics: a demo), and nothing more. `evidence_dir`:
    where uploaded snapshots and clips are kept (None: the hub refuses evidence; `ivs.hub.evidence`)."""
    app = FastAPI(
        title="ivs hub",
        summary="Stores what ivs sensors send: events and frame records, exactly once per (sensor_id, seq).",
        version="1",
        # No Swagger or ReDoc page: they run a CDN's script on the hub's origin. The document
        # itself is served to viewers below, for any OpenAPI viewer or client generator.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        max_body_size=MAX_JSON_BYTES,  # before anything parses a body or asks who sent it
    )
    app.state.store = store
    app.state.admin_token = admin_token
    app.state.metrics = metrics if metrics is not None else HubMetrics(store)
    app.state.max_messages, app.state.max_bytes = max_messages, max_bytes
    app.state.max_upload_bytes = max_upload_bytes
    app.state.push_desired = push_desired
    app.state.command = command
    app.state.devices_changed = devices_changed
    app.state.offline_after_s = offline_after_s
    app.state.open_read = open_read
    app.state.evidence_dir = Path(evidence_dir) if evidence_dir is not None else None
    app.state.metrics.offline_after_s = offline_after_s
    app.state.rollouts = rollouts if rollouts is not None else RolloutController(store, push_desired)
    app.state.login_guard = LoginGuard()
    app.include_router(router)
    app.include_router(dashboard_router)
    app.include_router(deploy_router)
    app.include_router(commands_router)
    app.include_router(enrol_router)
    app.include_router(rollout_router)
    app.include_router(node_router)
    app.include_router(users_router)
    app.include_router(evidence_router)
    add_audit(app)
    app.add_middleware(SecurityHeaders)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _refused)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(TextRefused, _text_refused)  # type: ignore[arg-type]
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # The ingest body's documented bound is this app's, not the default's.
        schema = plain_openapi()
        body = schema["paths"]["/api/v1/ingest"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        body["maxItems"] = max_messages
        refusal = schema["paths"]["/api/v1/ingest"]["post"]["responses"]["413"]
        refusal["description"] = f"more than {max_messages} messages or {max_bytes} bytes"
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_viewer)])
    def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    return app


async def _refused(request: Request, exc: StarletteHTTPException) -> Response:
    # FastAPI answers a JSON body that is not UTF-8 with an undocumented 400 "There was an
    # error parsing the body"; answer it as it answers malformed JSON: a 422 saying where.
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        error = {
            "type": "json_invalid",
            "loc": ("body", cause.start),
            "msg": f"the body is not UTF-8 ({cause.reason}): expected JSON",
            "input": {},
        }
        return await _invalid(request, RequestValidationError([error]))
    return await http_exception_handler(request, exc)


async def _text_refused(request: Request, exc: TextRefused) -> Response:
    """Text the store refuses (NUL, unpaired surrogates), wherever in the request it came: 422."""
    return JSONResponse(status_code=422, content={"detail": str(exc)})


_ECHOED = ("input", "ctx", "url")


async def _invalid(request: Request, exc: RequestValidationError) -> Response:
    """422 with where and what was wrong, never the input itself: a refused body is not sent
    back (a 50 MB enrolment once came back three times), nor a secret typed in the wrong field."""
    errors = [{k: v for k, v in e.items() if k not in _ECHOED} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})


def _ingest_batch(state: Any, device: str, body: bytes) -> IngestResult:
    hub_metrics: HubMetrics = state.metrics
    try:
        items = _array_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as err:
        hub_metrics.reject("not_array")
        raise HTTPException(400, detail=f"expected a JSON array of messages: {err}") from None
    if len(items) > state.max_messages:
        hub_metrics.reject("too_large")
        raise HTTPException(413, detail=f"{len(items)} messages in one batch: expected at most {state.max_messages}")
    valid: list[Message] = []
    rejected: list[Rejection] = []
    reasons: Counter[str] = Counter()
    for index, raw in enumerate(items):
        checked = _check_element(msgspec.json.encode(raw), device)
        if isinstance(checked, tuple):
            reason, why = checked
            reasons[reason] += 1
            rejected.append(Rejection(index=index, reason=why[:_REASON_CHARS]))
        else:
            valid.append(checked)
    accepted = duplicates = 0
    if valid:
        started = time.perf_counter()
        try:
            accepted, duplicates = state.store.ingest(valid, mark_online=True)
        except SQLAlchemyError as err:
            hub_metrics.reject("storage", len(valid))
            raise HTTPException(
                503,
                detail=f"the database did not store the batch ({type(err).__name__}): send it again later",
                headers={"Retry-After": "5"},
            ) from None
        hub_metrics.batch_seconds.observe(time.perf_counter() - started)
    hub_metrics.accepted.inc(accepted)
    hub_metrics.duplicates.inc(duplicates)
    for reason, n in reasons.items():
        hub_metrics.reject(reason, n)
    return IngestResult(accepted=accepted, duplicates=duplicates, rejected=rejected)


@router.post(
    "/api/v1/ingest",
    tags=["ingest"],
    max_body_size=OWN_BOUND,  # read_body, within the hub's max_bytes
    responses=_refusals(
        {
            400: "the body is not a JSON array",
            401: "no, an unknown or a revoked device token",
            413: f"more than {MAX_MESSAGES} messages or {MAX_BYTES} bytes",
            503: "the database is unavailable: retry after Retry-After seconds",
        }
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "array",
                        "maxItems": MAX_MESSAGES,
                        "items": {"type": "object", "description": "an ivs.event/1 event or ivs.frame/1 record"},
                    }
                }
            },
        }
    },
)
async def ingest(request: Request, authorization: Annotated[str | None, Header()] = None) -> IngestResult:
    """Store a batch of messages from one device (its sensor_id must be the device's name).
    Elements are validated one by one (`ivs schema` prints the JSON Schema): valid ones are
    stored, the others listed in `rejected` with their index and reason."""
    state = request.app.state
    hub_metrics: HubMetrics = state.metrics
    token = bearer(authorization)
    if token is None:
        hub_metrics.reject("auth")
        raise unauthorized("expected `Authorization: Bearer <device token>`")
    try:
        device = await run_in_threadpool(state.store.authenticate, token)
    except SQLAlchemyError:
        raise HTTPException(503, detail="the database is unavailable", headers={"Retry-After": "5"}) from None
    if device is None:
        hub_metrics.reject("auth")
        raise unauthorized("unknown or revoked device token")
    body = await read_body(request, state.max_bytes, "a body", lambda: hub_metrics.reject("too_large"))
    return await run_in_threadpool(_ingest_batch, state, device, body)


@router.get(
    "/api/v1/events",
    tags=["query"],
    response_model=list[dict[str, Any]],
    dependencies=[Depends(require_viewer)],
    responses=VIEWER_RESPONSES,
)
def events(
    request: Request,
    sensor: Annotated[str | None, Query(max_length=128, pattern=_TEXT)] = None,
    kind: Annotated[str | None, Query(max_length=32, pattern=_TEXT, description='an event kind, or "frame"')] = None,
    app_: Annotated[str | None, Query(alias="app", max_length=128, pattern=_TEXT)] = None,
    since: Annotated[float | None, Query(allow_inf_nan=False, description="message time >= since (epoch s)")] = None,
    until: Annotated[float | None, Query(allow_inf_nan=False, description="message time < until (epoch s)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_MESSAGES)] = 1000,
    after_seq: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="seq > after_seq, ordered by sensor and seq")
    ] = None,
) -> Response:
    """Stored messages as they were sent, oldest first (by sensor and seq with `after_seq`)."""
    rows = request.app.state.store.events(
        sensor=sensor, kind=kind, app=app_, since=since, until=until, after_seq=after_seq, limit=limit
    )
    body = "[" + ",".join(rows) + "]"
    return Response(content=body.encode(), media_type="application/json")


@router.get("/api/v1/counts", tags=["query"], dependencies=[Depends(require_viewer)], responses=VIEWER_RESPONSES)
def counts(
    request: Request,
    sensor: Annotated[str | None, Query(max_length=128, pattern=_TEXT)] = None,
    app_: Annotated[str | None, Query(alias="app", max_length=128, pattern=_TEXT)] = None,
    interval: Annotated[int, Query(ge=1, le=366 * 86400, description="bucket length in seconds")] = 60,
    since: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    until: Annotated[float | None, Query(allow_inf_nan=False)] = None,
) -> list[CountBucket]:
    """`count` events (line crossings) per `interval`-second bucket (aligned to multiples of
    the interval since the epoch), by direction and label; only buckets with counts."""
    buckets = request.app.state.store.counts(interval=interval, sensor=sensor, app=app_, since=since, until=until)
    return [CountBucket(**b) for b in buckets]


@router.get("/api/v1/sensors", tags=["query"], dependencies=[Depends(require_viewer)], responses=VIEWER_RESPONSES)
def sensors(request: Request) -> list[SensorOut]:
    """Every sensor seen (by message, MQTT availability or state)."""
    return [
        SensorOut(sensor_id=s.sensor_id, online=s.online, last_seen=s.last_seen, last_seq=s.last_seq,
                  messages=s.messages, model=s.model, version=s.version)
        for s in request.app.state.store.sensors(request.app.state.offline_after_s)
    ]  # fmt: skip


@router.post(
    "/api/v1/devices",
    tags=["devices"],
    status_code=201,
    dependencies=[Depends(require_admin)],
    responses=_refusals({**_ADMIN_REFUSALS, 409: "a device of that name is active"}),
)
def add_device(request: Request, device: DeviceCreate) -> DeviceCreated:
    """Register a device (or re-issue a revoked one) and return its token: the only time it is shown."""
    try:
        token = request.app.state.store.add_device(device.name)
    except HubError as err:
        raise HTTPException(409, detail=str(err)) from None
    _devices_changed(request)
    return DeviceCreated(name=device.name, token=token)


@router.get(
    "/api/v1/devices", tags=["devices"], dependencies=[Depends(require_admin)], responses=_refusals(_ADMIN_REFUSALS)
)
def list_devices(request: Request) -> list[DeviceOut]:
    """Every registered device (never tokens or their hashes)."""
    return [DeviceOut(name=d.name, created=d.created, revoked=d.revoked) for d in request.app.state.store.devices()]


@router.delete(
    "/api/v1/devices/{name}",
    tags=["devices"],
    dependencies=[Depends(require_admin)],
    responses=_refusals({**_ADMIN_REFUSALS, 404: "no device of that name"}),
)
def revoke_device(request: Request, name: Annotated[str, PathParam(pattern=NAME_PATTERN)]) -> DeviceRevoked:
    """Revoke a device's token: its posts get 401 from now on."""
    if not request.app.state.store.revoke_device(name):
        raise HTTPException(404, detail=f"no device named {name[:128]!r}")
    _devices_changed(request)
    return DeviceRevoked(name=name, revoked=True)


@router.get(
    "/metrics",
    tags=["metrics"],
    response_class=Response,
    dependencies=[Depends(require_viewer)],
    responses=VIEWER_RESPONSES,
)
def prometheus(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    return Response(content=request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _check_element(element: bytes, device: str) -> Message | tuple[str, str]:
    """One element of a batch -> the message, or (reject reason label, why) when it is refused."""
    if element.lstrip()[:1] != b"{":
        return "schema", f"expected a JSON object (an ivs.event/1 or ivs.frame/1 message), got {element[:40]!r}"
    try:
        message = decode_message(element)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as err:
        return "schema", f"not a valid message: {err}"
    why = check_message(message)
    if why is not None:
        return "schema", why
    if message.sensor_id != device:
        return "sensor_mismatch", f"device {device!r} may not post as {message.sensor_id!r}"
    return message
