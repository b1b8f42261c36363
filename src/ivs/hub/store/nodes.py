"""Nodes' desired site files and their reports (the logic: `ivs.hub.node_routes`, `ivs.node_agent`)."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ivs.hub.store.schema import NodeConfigRow, NodeReportRow


class NodeStore:
    """The store's node methods (`Store` has them)."""

    engine: Engine
    _write_lock: contextlib.AbstractContextManager[Any]

    def set_node_config(self, device: str, text: str) -> dict[str, Any]:
        """Make `text` the node's desired site file, as its next revision."""
        with self._write_lock, Session(self.engine) as session, session.begin():
            row = session.get(NodeConfigRow, device)
            revision = 1 if row is None else row.revision + 1
            session.merge(NodeConfigRow(device=device, revision=revision, text=text, assigned=time.time()))
        return {"device": device, "revision": revision}

    def node_config(self, device: str) -> dict[str, Any] | None:
        with Session(self.engine) as session:
            row = session.get(NodeConfigRow, device)
            return None if row is None else {"revision": row.revision, "config": row.text, "assigned": row.assigned}

    def report_node(self, device: str, revision: int, status: str, error: str | None, sensors: list[Any]) -> None:
        with self._write_lock, Session(self.engine) as session, session.begin():
            session.merge(NodeReportRow(device=device, revision=revision, status=status, error=error,
                                        sensors=json.dumps(sensors), reported=time.time()))  # fmt: skip

    def node_report(self, device: str) -> dict[str, Any] | None:
        with Session(self.engine) as session:
            row = session.get(NodeReportRow, device)
            if row is None:
                return None
            return {"revision": row.revision, "status": row.status, "error": row.error,
                    "sensors": json.loads(row.sensors), "reported": row.reported}  # fmt: skip
