"""Evidence on the hub: the index of uploaded snapshots and clips (their bytes are files under
the evidence folder, `ivs.hub.evidence`)."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from ivs.hub.store.schema import EvidenceRow


@dataclass(frozen=True)
class EvidenceInfo:
    id: int
    sensor_id: str
    event_seq: int | None
    kind: str
    content_type: str
    size: int
    path: str
    created: float
    meta: dict[str, Any]

    def public(self) -> dict[str, Any]:
        """What the API shows (not where the file is)."""
        out = {k: v for k, v in self.__dict__.items() if k != "path"}
        out["url"] = f"/api/v1/evidence/{self.id}"
        return out


def _info(r: EvidenceRow) -> EvidenceInfo:
    return EvidenceInfo(r.id, r.sensor_id, r.event_seq, r.kind, r.content_type, r.size, r.path, r.created,
                        json.loads(r.meta))  # fmt: skip


class EvidenceStore:
    """The store's evidence index (`Store` has it)."""

    engine: Engine
    _write_lock: contextlib.AbstractContextManager[Any]

    def add_evidence(self, sensor_id: str, event_seq: int | None, kind: str, content_type: str, size: int,
                     path: str, meta: dict[str, Any]) -> int:  # fmt: skip
        with self._write_lock, Session(self.engine) as session, session.begin():
            row = EvidenceRow(sensor_id=sensor_id, event_seq=event_seq, kind=kind, content_type=content_type,
                              size=size, path=path, created=time.time(), meta=json.dumps(meta))  # fmt: skip
            session.add(row)
            session.flush()
            return int(row.id)

    def evidence(self, *, sensor: str | None = None, seq: int | None = None, limit: int = 100) -> list[EvidenceInfo]:
        """Newest first."""
        stmt = select(EvidenceRow).order_by(EvidenceRow.id.desc()).limit(limit)
        if sensor is not None:
            stmt = stmt.where(EvidenceRow.sensor_id == sensor)
        if seq is not None:
            stmt = stmt.where(EvidenceRow.event_seq == seq)
        with Session(self.engine) as session:
            return [_info(r) for r in session.scalars(stmt)]

    def evidence_item(self, evidence_id: int) -> EvidenceInfo | None:
        with Session(self.engine) as session:
            row = session.get(EvidenceRow, evidence_id)
            return _info(row) if row is not None else None

    def delete_evidence(self, evidence_id: int) -> EvidenceInfo | None:
        """Remove one from the index; what it was (the caller deletes the file), or None."""
        with self._write_lock, Session(self.engine) as session, session.begin():
            row = session.get(EvidenceRow, evidence_id)
            if row is None:
                return None
            info = _info(row)
            session.delete(row)
            return info

    def expired_evidence(self, older_than: float | None, max_bytes: int | None) -> list[EvidenceInfo]:
        """What retention removes: everything created before `older_than`, then the oldest until
        the rest fits in `max_bytes`."""
        with Session(self.engine) as session:
            rows = [_info(r) for r in session.scalars(select(EvidenceRow).order_by(EvidenceRow.id))]
        out = [r for r in rows if older_than is not None and r.created < older_than]
        kept = [r for r in rows if r not in out]
        if max_bytes is not None:
            total = sum(r.size for r in kept)
            for r in kept:
                if total <= max_bytes:
                    break
                out.append(r)
                total -= r.size
        return out

    def remove_evidence(self, ids: list[int]) -> None:
        with self._write_lock, Session(self.engine) as session, session.begin():
            session.execute(delete(EvidenceRow).where(EvidenceRow.id.in_(ids)))

    def evidence_bytes(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.coalesce(func.sum(EvidenceRow.size), 0))) or 0)
