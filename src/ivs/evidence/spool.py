"""The evidence spool: snapshots and clips waiting for the hub, on disk, within a size cap.

A SQLite file (WAL, `synchronous=FULL`: an item is on disk when `put` returns), like the
outbox under the MQTT and HTTP sinks, with a cap in bytes. When an item would pass the cap it
is refused (counted in `refused`, logged), not made room for: what the spool committed is never
deleted to fit something newer, so `kill -9` of a sensor with a full spool loses nothing it
had accepted; the uploader removes an item only once the hub has stored it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivs.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    id: int
    meta: dict[str, Any]
    content_type: str
    data: bytes


class EvidenceSpool:
    def __init__(self, path: str | Path, max_mib: float) -> None:
        if max_mib <= 0:
            raise ValueError(f"max_mib {max_mib}: expected > 0")
        self.path, self.cap = Path(path), int(max_mib * 2**20)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY AUTOINCREMENT, meta TEXT NOT NULL,"
                " content_type TEXT NOT NULL, size INTEGER NOT NULL, data BLOB NOT NULL)"
            )
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(f"evidence spool {self.path}: {err}: expected a writable file") from None
        self._lock = threading.Lock()
        self.refused = 0
        self.stored = 0

    def size(self) -> int:
        """Bytes of the items waiting."""
        with self._lock:
            return int(self._db.execute("SELECT coalesce(sum(size), 0) FROM items").fetchone()[0])

    def put(self, meta: dict[str, Any], content_type: str, data: bytes) -> int | None:
        """Commit an item; None when it would pass the cap (or the disk refuses it)."""
        with self._lock:
            used = int(self._db.execute("SELECT coalesce(sum(size), 0) FROM items").fetchone()[0])
            if used + len(data) > self.cap:
                self.refused += 1
                log.warning("evidence spool %s full (%d of %d bytes): %s not kept", self.path, used, self.cap,
                            meta.get("kind"))  # fmt: skip
                return None
            try:
                cur = self._db.execute(
                    "INSERT INTO items (meta, content_type, size, data) VALUES (?, ?, ?, ?)",
                    (json.dumps(meta), content_type, len(data), data),
                )
            except sqlite3.Error as err:
                self.refused += 1
                log.error("evidence spool %s: %s not kept: %s", self.path, meta.get("kind"), err)
                return None
            self.stored += 1
            return int(cur.lastrowid or 0)

    def pending(self, limit: int = 10) -> list[Item]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, meta, content_type, data FROM items ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [Item(int(i), json.loads(m), str(c), bytes(d)) for i, m, c, d in rows]

    def ack(self, item_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM items WHERE id = ?", (item_id,))

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM items").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
