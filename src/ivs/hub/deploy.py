"""Deploy: the hub keeps model packages and each device's desired state; sensors pull them.

    POST /api/v1/packages                  upload an .ivsm (operator)
    GET  /api/v1/packages                  list the uploaded packages (operator)
    GET  /api/v1/packages/{sha256}         download one (admin token, or the token of a device it is assigned to)
    PUT  /api/v1/devices/{name}/desired    assign a package (and a sensor config) to a device (operator)
    GET  /api/v1/devices/{name}/deploy     desired vs reported state of a device (operator)
    GET  /api/v1/device/desired            the calling device's desired state (device token)
    POST /api/v1/device/report             the calling device reports what it runs (device token)

The hub is not the trust anchor: each sensor verifies a package's signature against its own
keyring, and every member's sha256 against the manifest, before it runs it. The hub reads the
manifest (to refuse what is not a package and to know the name and version) and checks the
members' digests only to warn early: a package whose members do not match its manifest is
stored with its `problem`, and a sensor it is deployed to will refuse it and report why.

A device sees only its own desired state (the device is whoever its token names) and can
download only the package assigned to it; device tokens get 403 on the admin endpoints.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError

from ivs.config import parse as parse_config
from ivs.hub.auth import Caller, require_caller, require_device, require_operator
from ivs.hub.body import OWN_BOUND, read_body
from ivs.hub.store import (
    NAME_PATTERN,
    Assignment,
    DeployReport,
    HubError,
    HubNotFound,
    PackageInfo,
    Store,
)
from ivs.package.manifest import Manifest
from ivs.package.reader import MANIFEST, MAX_MANIFEST_BYTES, SIGNATURE

MAX_UPLOAD_BYTES = 128 * 1024 * 1024
"""The largest package the hub takes: it is held in memory and in one database row (the zoo's
packages are 0.1 to 7 MiB)."""
MAX_CONFIG_CHARS = 1024 * 1024
_SHA256 = r"^[0-9a-fA-F]{64}$"
_ERROR_CHARS = 4000

DeployStatus = Literal["none", "pending", "ok", "failed"]


class PackageCheckError(HubError):
    """An upload is not a model package."""


@dataclass(frozen=True)
class PackageCheck:
    """What the hub learnt from an upload's manifest."""

    manifest: Manifest
    signed_by: str | None
    """The key id signature.json claims (not verified here: the sensors verify)."""
    problem: str | None
    """Why a sensor will refuse it, when the hub can tell without a keyring; else None."""


def inspect_package(data: bytes) -> PackageCheck:
    """Read an uploaded package's manifest and check its members' digests. Raises
    PackageCheckError saying why when it is not a model package at all."""
    expected = "expected an .ivsm model package (a zip holding manifest.json), as `ivs model pack` writes"
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as err:
        raise PackageCheckError(f"not a zip archive ({err}): {expected}") from None
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        if MANIFEST not in infos:
            raise PackageCheckError(f"no {MANIFEST} in the archive: {expected}")
        total = sum(i.file_size for i in infos.values())
        if infos[MANIFEST].file_size > MAX_MANIFEST_BYTES or total > 4 * MAX_UPLOAD_BYTES:
            raise PackageCheckError(
                f"members expand to {total} bytes ({MANIFEST}: {infos[MANIFEST].file_size}): expected at most "
                f"{4 * MAX_UPLOAD_BYTES} ({MANIFEST}: at most {MAX_MANIFEST_BYTES})"
            )
        try:
            raw = {name: zf.read(name) for name in infos}
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
            raise PackageCheckError(f"a member cannot be read ({err}): the file is corrupt") from None
    try:
        manifest = Manifest.model_validate_json(raw.pop(MANIFEST))
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(the document)"
        raise PackageCheckError(
            f"{MANIFEST} field {loc!r}: {first['msg']} ({err.error_count()} error(s)): expected an ivs-model/1 manifest"
        ) from None
    signature = raw.pop(SIGNATURE, None)
    signed_by = None
    problems: list[str] = []
    if signature is None:
        problems.append(f"not signed (no {SIGNATURE}): sensors refuse it unless they allow unsigned packages")
    else:
        try:
            doc = json.loads(signature)
            signed_by = str(doc["key_id"])[:64] if isinstance(doc, dict) and "key_id" in doc else None
        except ValueError:
            signed_by = None
        if signed_by is None:
            problems.append(f"{SIGNATURE} is not a signature object with a key_id")
    listed, present = set(manifest.members), set(raw)
    if present - listed:
        problems.append(f"members not listed in the manifest: {sorted(present - listed)}")
    if listed - present:
        problems.append(f"members listed in the manifest but missing: {sorted(listed - present)}")
    for name in sorted(listed & present):
        actual = hashlib.sha256(raw[name]).hexdigest()
        if actual != manifest.members[name]:
            problems.append(
                f"member {name} has sha256 {actual[:16]}..., the manifest says {manifest.members[name][:16]}...:"
                " the member was changed after packing"
            )
    return PackageCheck(manifest, signed_by, "; ".join(problems) or None)


class PackageOut(BaseModel):
    """An uploaded package."""

    sha256: str = Field(description="sha256 of the .ivsm file: how devices and assignments name it")
    name: str
    version: str
    size: int = Field(description="bytes")
    uploaded: float = Field(description="epoch seconds (hub clock)")
    signed_by: str | None = Field(description="the key id signature.json claims; the sensors verify it")
    problem: str | None = Field(description="why sensors will refuse it, when the hub can tell (else null)")


class DesiredIn(BaseModel):
    """What a device should run."""

    package: str = Field(
        min_length=1,
        max_length=400,
        description="the package: its sha256, NAME@VERSION, or NAME (the newest upload of that name)",
    )
    config: str | None = Field(
        None,
        max_length=MAX_CONFIG_CHARS,
        description="a sensor config (YAML text, `ivs config schema`) whose id is the device's name",
    )


class DesiredOut(BaseModel):
    """A device's desired state. Revision 0 and no package: nothing assigned yet."""

    device: str
    revision: int = Field(description="1, 2, ...: every assignment to the device is the next revision")
    package: PackageOut | None
    download: str | None = Field(description="where the device downloads the package (a path on this hub)")
    config: str | None = Field(description="the sensor config (YAML) to apply, or null")
    assigned: float | None


class ModelRun(BaseModel):
    """A model a device runs."""

    name: str = Field(max_length=256)
    version: str = Field(max_length=128)
    sha256: str | None = Field(None, pattern=_SHA256, description="sha256 of its package file, when known")


class ReportIn(BaseModel):
    """What a device reports after acting on a desired revision."""

    revision: int = Field(ge=0, le=2**63 - 1, description="the desired revision acted on")
    status: Literal["ok", "failed"] = Field(description="ok: it runs the desired package; failed: see error")
    error: str | None = Field(None, max_length=_ERROR_CHARS, description="why the deploy failed")
    model: ModelRun | None = Field(None, description="the model it runs now")
    config_revision: int | None = Field(None, ge=0, le=2**63 - 1, description="the revision whose config it holds")
    config_status: str | None = Field(None, max_length=_ERROR_CHARS, description="what was done with the config")


class ReportOut(BaseModel):
    """A device's last report."""

    revision: int
    status: str
    error: str | None
    model: ModelRun | None
    config_revision: int | None
    config_status: str | None
    reported: float = Field(description="epoch seconds (hub clock)")


class DeployOut(BaseModel):
    """Desired vs reported state of a device."""

    device: str
    status: DeployStatus = Field(
        description="none: nothing assigned; pending: the device has not answered the latest revision; "
        "ok: it runs it; failed: it refused or could not apply it (see reported.error)"
    )
    in_sync: bool = Field(description="the device reported the desired revision and runs the desired package")
    desired: DesiredOut | None
    reported: ReportOut | None


def package_out(p: PackageInfo) -> PackageOut:
    return PackageOut(
        sha256=p.sha256,
        name=p.name,
        version=p.version,
        size=p.size,
        uploaded=p.uploaded,
        signed_by=p.signed_by,
        problem=p.problem,
    )


def desired_out(device: str, a: Assignment | None) -> DesiredOut:
    if a is None:
        return DesiredOut(device=device, revision=0, package=None, download=None, config=None, assigned=None)
    return DesiredOut(
        device=device,
        revision=a.revision,
        package=package_out(a.package),
        download=f"/api/v1/packages/{a.package.sha256}",
        config=a.config,
        assigned=a.assigned,
    )


def report_out(r: DeployReport) -> ReportOut:
    model = ModelRun(name=r.model, version=r.version or "", sha256=r.sha256) if r.model is not None else None
    return ReportOut(
        revision=r.revision,
        status=r.status,
        error=r.error,
        model=model,
        config_revision=r.config_revision,
        config_status=r.config_status,
        reported=r.reported,
    )


def deploy_status(a: Assignment | None, r: DeployReport | None) -> tuple[DeployStatus, bool]:
    """(status, in_sync) of a device from its desired and reported state."""
    if a is None:
        return "none", False
    if r is None or r.revision < a.revision:
        return "pending", False
    status: DeployStatus = "ok" if r.status == "ok" else "failed"
    return status, status == "ok" and r.sha256 == a.package.sha256


def deploy_out(device: str, a: Assignment | None, r: DeployReport | None) -> DeployOut:
    status, in_sync = deploy_status(a, r)
    return DeployOut(
        device=device,
        status=status,
        in_sync=in_sync,
        desired=desired_out(device, a) if a is not None else None,
        reported=report_out(r) if r is not None else None,
    )


def dashboard_fields(a: Assignment | None, r: DeployReport | None) -> dict[str, Any]:
    """The deploy columns of a sensor on the dashboard."""
    status, in_sync = deploy_status(a, r)
    return {
        "deploy_status": status,
        "in_sync": in_sync,
        "desired": None if a is None else f"{a.package.name} {a.package.version}",
        "desired_sha256": None if a is None else a.package.sha256,
        "desired_revision": None if a is None else a.revision,
        "reported": None if r is None or r.model is None else f"{r.model} {r.version}",
        "reported_sha256": None if r is None else r.sha256,
        "deploy_error": None if r is None else r.error,
        "config_status": None if r is None else r.config_status,
    }


_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no, or an unknown, token"},
    403: {"description": "the token may not do this (a device's on an operator's endpoint, or a viewer's)"},
}


router = APIRouter(tags=["deploy"], responses=_AUTH_RESPONSES)
"""The deploy endpoints; `create_app` includes them (the store and admin token in `app.state`)."""


@router.post(
    "/api/v1/packages",
    status_code=201,
    max_body_size=OWN_BOUND,  # read_body, within the hub's max_upload_bytes
    dependencies=[Depends(require_operator)],
    responses={
        200: {"description": "the same bytes were uploaded before: nothing changed"},
        400: {"description": "not a model package (the reason says what is wrong)"},
        413: {"description": f"more than {MAX_UPLOAD_BYTES} bytes (or the hub's own limit)"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_package(request: Request, response: Response) -> PackageOut:
    """Upload a model package (the .ivsm file as the body). It is stored under its sha256;
    `problem` says why sensors will refuse it when the hub can tell (unsigned, a member that
    does not match the manifest). The signature is checked by each sensor, not here."""
    store: Store = request.app.state.store
    data = await read_body(request, request.app.state.max_upload_bytes, "a package")
    if not data:
        raise HTTPException(400, detail="an empty body: expected the bytes of an .ivsm model package")
    try:
        check = await run_in_threadpool(inspect_package, data)
    except PackageCheckError as err:
        raise HTTPException(400, detail=f"not a model package: {err}") from None
    m = check.manifest
    info, new = await run_in_threadpool(
        lambda: store.add_package(
            data, name=m.name, version=m.version, signed_by=check.signed_by, problem=check.problem
        )
    )
    if not new:
        response.status_code = 200
    return package_out(info)


@router.get("/api/v1/packages", dependencies=[Depends(require_operator)])
def list_packages(request: Request) -> list[PackageOut]:
    """Every uploaded package, newest first."""
    store: Store = request.app.state.store
    return [package_out(p) for p in store.packages()]


@router.get(
    "/api/v1/packages/{sha256}",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the package file"},
        404: {"description": "no such package"},
    },
)
def download_package(
    request: Request,
    sha256: Annotated[str, Path(pattern=_SHA256, description="the package's sha256")],
    who: Annotated[Caller, Depends(require_caller)],
) -> Response:
    """The package file. An operator downloads any; a device token only the package assigned
    to that device."""
    store: Store = request.app.state.store
    sha = sha256.lower()
    if who.kind == "device":
        name = who.name
        desired = store.desired(name)
        if desired is None or desired.package.sha256 != sha:
            raise HTTPException(403, detail=f"package {sha[:16]}... is not the one assigned to device {name!r}")
    data = store.package_data(sha)
    if data is None:
        raise HTTPException(404, detail=f"no package with sha256 {sha}")
    return Response(
        content=data,
        media_type="application/octet-stream",
        headers={"ETag": f'"{sha}"', "Content-Disposition": f'attachment; filename="{sha[:16]}.ivsm"'},
    )


@router.put(
    "/api/v1/devices/{name}/desired",
    dependencies=[Depends(require_operator)],
    responses={
        404: {"description": "no such device or package"},
        409: {"description": "NAME@VERSION names more than one package"},
        422: {"description": "the config is not a valid sensor config, or its id is not the device's name"},
    },
)
def set_desired(request: Request, name: Annotated[str, Path(pattern=NAME_PATTERN)], desired: DesiredIn) -> DesiredOut:
    """Assign a package (and optionally a sensor config) to a device: its next revision. A hub
    with MQTT pushes the revision to the device at once (retained `ivs/NAME/desired`); the device
    fetches it, verifies it, swaps, and reports. Without MQTT it does so at its next poll."""
    store: Store = request.app.state.store
    if desired.config is not None:
        config, problems, _ = parse_config(desired.config)
        if config is None:
            shown = "; ".join(p.format("config") for p in problems[:5])
            raise HTTPException(422, detail=f"the config is not a valid sensor config: {shown}")
        if config.id != name:
            raise HTTPException(422, detail=f"the config's id is {config.id!r}: expected the device's name {name!r}")
    try:
        package = store.resolve_package(desired.package)
        assignment = store.assign(name, package.sha256, desired.config)
    except HubNotFound as err:
        raise HTTPException(404, detail=str(err)) from None
    except HubError as err:
        raise HTTPException(409, detail=str(err)) from None
    push = request.app.state.push_desired
    if push is not None:  # a hub with MQTT tells the device at once; others wait for its poll
        push(name, assignment.revision)
    return desired_out(name, assignment)


@router.get(
    "/api/v1/devices/{name}/deploy",
    dependencies=[Depends(require_operator)],
    responses={404: {"description": "no such device"}},
)
def get_deploy(request: Request, name: Annotated[str, Path(pattern=NAME_PATTERN)]) -> DeployOut:
    """Desired vs reported: what the device should run, what it says it runs, and why the
    last deploy failed if it did."""
    store: Store = request.app.state.store
    if name not in {d.name for d in store.devices()}:
        raise HTTPException(404, detail=f"no device named {name!r}: expected one of `GET /api/v1/devices`")
    return deploy_out(name, store.desired(name), store.deploy_report(name))


@router.get("/api/v1/device/desired")
def my_desired(request: Request, me: Annotated[str, Depends(require_device)]) -> DesiredOut:
    """The calling device's desired state (revision 0 when nothing is assigned)."""
    store: Store = request.app.state.store
    return desired_out(me, store.desired(me))


@router.post("/api/v1/device/report", responses={409: {"description": "a revision never assigned"}})
def report(request: Request, me: Annotated[str, Depends(require_device)], body: ReportIn) -> ReportOut:
    """The calling device says what it runs and how the deploy of `revision` went."""
    store: Store = request.app.state.store
    desired = store.desired(me)
    latest = desired.revision if desired is not None else 0
    if body.revision > latest:
        raise HTTPException(
            409, detail=f"revision {body.revision} was never assigned to {me!r}: expected at most {latest}"
        )
    r = store.report_deploy(
        me,
        revision=body.revision,
        status=body.status,
        error=body.error,
        model=body.model.name if body.model else None,
        version=body.model.version if body.model else None,
        sha256=body.model.sha256.lower() if body.model and body.model.sha256 else None,
        config_revision=body.config_revision,
        config_status=body.config_status,
    )
    return report_out(r)
