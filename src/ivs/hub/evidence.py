"""Evidence on the hub: snapshots and clips sensors upload, stored as files, shown to viewers.

    POST   /api/v1/evidence        a device uploads one file (`ivs.evidence.upload`): its bytes,
                                   Content-Type image/jpeg or video/mp4, X-Ivs-Evidence: its JSON
    GET    /api/v1/evidence        the index, newest first, by sensor and event seq (viewer)
    GET    /api/v1/evidence/{id}   one file (viewer); each view is in the audit log
    DELETE /api/v1/evidence/{id}   remove one (admin)

A hub keeps evidence only when it is given a folder for it (`ivs hub serve --evidence-dir`);
without one every upload is refused (409), so a hub, like a sensor, holds no pixel unless told
to. Uploads and deletions are audited by the audit middleware, views here, retention's
deletions by `prune_evidence` (as "retention").
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from ivs.hub.auth import ADMIN_RESPONSES, VIEWER_RESPONSES, Caller, require_admin, require_device, require_viewer
from ivs.hub.body import OWN_BOUND, read_body
from ivs.hub.store import Store

log = logging.getLogger(__name__)

router = APIRouter(tags=["evidence"])

MAX_EVIDENCE_BYTES = 64 * 2**20
"""One file at most (a 10 s 1080p clip at CRF 26 is a few MiB)."""
TYPES = {"image/jpeg": (".jpg", b"\xff\xd8\xff"), "video/mp4": (".mp4", b"ftyp")}
KINDS = ("snapshot", "clip")

UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no device token, or an unknown or revoked one"},
    403: {"description": "the evidence names another sensor than the device's"},
    409: {"description": "this hub keeps no evidence (it was started without --evidence-dir)"},
    413: {"description": f"over {MAX_EVIDENCE_BYTES} bytes"},
    415: {"description": "not image/jpeg or video/mp4"},
    422: {"description": "X-Ivs-Evidence is not the expected JSON, or the bytes are not what the type says"},
}


def _folder(request: Request) -> Path:
    folder: Path | None = request.app.state.evidence_dir
    if folder is None:
        raise HTTPException(409, detail="this hub keeps no evidence: start it with --evidence-dir to accept some")
    return folder


EvidenceId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="an id from GET /api/v1/evidence")]


@router.post("/api/v1/evidence", status_code=201, responses=UPLOAD_RESPONSES, max_body_size=OWN_BOUND)  # read_body
async def upload(
    request: Request,
    device: Annotated[str, Depends(require_device)],
    x_ivs_evidence: Annotated[str, Header(max_length=4096)],
) -> dict[str, Any]:
    """Store one snapshot or clip from the calling device."""
    folder = _folder(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type not in TYPES:
        raise HTTPException(415, detail=f"content type {content_type!r}: expected image/jpeg or video/mp4")
    try:
        meta = json.loads(x_ivs_evidence)
    except (ValueError, RecursionError):  # RecursionError: a header of thousands of nested brackets
        raise HTTPException(422, detail="X-Ivs-Evidence: expected a JSON object") from None
    if not isinstance(meta, dict) or meta.get("kind") not in KINDS:
        raise HTTPException(422, detail='X-Ivs-Evidence: expected a JSON object with "kind": "snapshot" or "clip"')
    if meta.get("sensor_id") != device:
        raise HTTPException(403, detail=f"device {device!r} may not upload evidence as {meta.get('sensor_id')!r}")
    seq = meta.get("event_seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq < 2**63):
        raise HTTPException(422, detail=f"event_seq {seq!r}: expected a message's seq or null")
    data = await read_body(request, MAX_EVIDENCE_BYTES, "evidence")
    ext, magic = TYPES[content_type]
    if (content_type == "image/jpeg" and not data.startswith(magic)) or (
        content_type == "video/mp4" and data[4:8] != magic
    ):
        raise HTTPException(422, detail=f"the bytes are not {content_type}")
    rel = Path(device) / f"{time.strftime('%Y%m%d')}-{uuid.uuid4().hex}{ext}"
    path = folder / rel
    # Pixels of a site: the owner's only (folders 0700, files 0600), whatever the umask.
    for d in (folder, path.parent):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    store: Store = request.app.state.store
    evidence_id = store.add_evidence(device, seq, meta["kind"], content_type, len(data), str(rel), meta)
    return {"id": evidence_id, "url": f"/api/v1/evidence/{evidence_id}"}


@router.get("/api/v1/evidence", dependencies=[Depends(require_viewer)], responses=VIEWER_RESPONSES)
def index(
    request: Request,
    sensor: Annotated[str | None, Query(max_length=128)] = None,
    seq: Annotated[int | None, Query(ge=1, lt=2**63)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Evidence stored, newest first: what it shows (sensor, event seq and kind, app, times) and its url."""
    return [e.public() for e in request.app.state.store.evidence(sensor=sensor, seq=seq, limit=limit)]


@router.get(
    "/api/v1/evidence/{evidence_id}",
    responses={**VIEWER_RESPONSES, 404: {"description": "no such evidence (or retention removed it)"}},
    response_class=FileResponse,
)
def view(request: Request, evidence_id: EvidenceId, who: Annotated[Caller, Depends(require_viewer)]) -> FileResponse:
    """One snapshot or clip; the view is written to the audit log."""
    store: Store = request.app.state.store
    item = store.evidence_item(evidence_id)
    folder: Path | None = request.app.state.evidence_dir
    if item is None or folder is None or not (folder / item.path).is_file():
        raise HTTPException(404, detail=f"no evidence {evidence_id}")
    address = request.client.host if request.client is not None else None
    store.audit(who.label, who.role, f"GET /api/v1/evidence/{evidence_id}", 200, address)
    return FileResponse(
        folder / item.path, media_type=item.content_type, headers={"Cache-Control": "private, no-store"}
    )


@router.delete(
    "/api/v1/evidence/{evidence_id}",
    dependencies=[Depends(require_admin)],
    responses={**ADMIN_RESPONSES, 404: {"description": "no such evidence"}},
)
def remove(request: Request, evidence_id: EvidenceId) -> dict[str, Any]:
    """Delete one snapshot or clip (the deletion is in the audit log)."""
    item = request.app.state.store.delete_evidence(evidence_id)
    if item is None:
        raise HTTPException(404, detail=f"no evidence {evidence_id}")
    folder: Path | None = request.app.state.evidence_dir
    if folder is not None:
        (folder / item.path).unlink(missing_ok=True)
    return {"deleted": evidence_id}


def prune_evidence(store: Store, folder: Path, older_than_s: float | None, max_bytes: int | None) -> int:
    """Delete evidence older than `older_than_s` seconds, then the oldest past `max_bytes`, files
    and index; each deletion in the audit log as "retention". How many were deleted."""
    cut = time.time() - older_than_s if older_than_s is not None else None
    doomed = store.expired_evidence(cut, max_bytes)
    for item in doomed:
        (folder / item.path).unlink(missing_ok=True)
    if doomed:
        store.remove_evidence([item.id for item in doomed])
        for item in doomed:
            store.audit("retention", None, f"DELETE evidence {item.id} ({item.sensor_id}, {item.kind})", 200, None)
        log.info("retention: deleted %d evidence files", len(doomed))
    return len(doomed)
