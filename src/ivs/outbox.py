"""The durable outbox: every message is committed to disk before it is sent, and removed only
when the other side has acknowledged it (MQTT PUBACK, HTTP 2xx).

SQLite in WAL mode, one file per sensor. It also keeps the sensor's sequence counter, so
`(sensor_id, seq)` keeps increasing across restarts and crashes: a message is stored under
its seq in the same transaction that advances the counter.

Bounded: past `max_messages` the oldest messages are shed (a broker that stays away for days
must not fill the disk), and `shed` counts them, so the loss is visible, never silent.

Durability, `synchronous`: "full" (the default) waits for the disk at every commit, so a
committed message survives a power cut; "normal" lets the operating system write it out a
little later, so a committed message survives a crash or `kill -9` of ivs but the last
commits before a power cut can be lost. The wait is an fsync: a few milliseconds on a good
disk, tens on a busy or slow one (SD cards), and it lies on the path of every message to the
broker (docs/benchmarks.md, part d, measures both).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ivs.errors import ConfigError

log = logging.getLogger(__name__)


class OutboxWriteError(OSError):
    """A message could not be committed (the disk is full, the file is read-only): it is lost,
    and the sensor counts it. What was committed before stays intact."""


@dataclass(frozen=True)
class Pending:
    seq: int
    topic: str
    payload: bytes


class Outbox:
    """A persistent FIFO of (seq, topic, payload), safe to share between threads.

    >>> box = Outbox(":memory:")
    >>> box.put("ivs/s1/events/count", b"{}")
    1
    >>> [p.seq for p in box.pending()], box.ack([1]), box.depth()
    ([1], 1, 0)
    """

    def __init__(
        self, path: str | Path, *, max_messages: int = 1_000_000, synchronous: Literal["full", "normal"] = "full"
    ) -> None:
        if max_messages < 1:
            raise ConfigError(f"outbox max_messages {max_messages}: expected at least 1")
        if synchronous not in ("full", "normal"):
            raise ConfigError(f"outbox synchronous {synchronous!r}: expected 'full' or 'normal'")
        self.path, self.max_messages, self.synchronous = str(path), max_messages, synchronous
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed message survives power loss, not only a process crash.
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox "
                "(seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL)"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('seq', 0), ('shed', 0)")
        except sqlite3.Error as err:
            raise ConfigError(f"outbox {self.path}: cannot open ({err}): expected a writable SQLite file") from None
        self._lock = threading.Lock()
        self.shed = self._meta("shed")
        # Acknowledged, but their delete failed (a full disk): not sent again, deleted later.
        self._acked: set[int] = set()

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0])

    def last_seq(self) -> int:
        with self._lock:
            return self._meta("seq")

    def next_seq(self) -> int:
        """Reserve the next sequence number (committed: never handed out twice)."""
        with self._lock:
            self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'seq'")
            return self._meta("seq")

    def put(self, topic: str, payload: bytes, seq: int | None = None) -> int:
        """Store a message (under `seq`, or a new one); returns its seq once it is on disk."""
        return self.put_many([(topic, payload, seq)])[0]

    def put_many(self, messages: Sequence[tuple[str, bytes, int | None]]) -> list[int]:
        """Store (topic, payload, seq or None) messages in one transaction, so one commit (one
        fsync) makes them all durable; returns their seqs once they are on disk."""
        seqs: list[int] = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for topic, payload, seq in messages:
                    if seq is None:
                        self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'seq'")
                        seq = self._meta("seq")
                    else:
                        self._db.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'seq'", (seq,))
                    self._db.execute("INSERT OR REPLACE INTO outbox VALUES (?, ?, ?)", (seq, topic, payload))
                    seqs.append(seq)
                over = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0] - self.max_messages
                if over > 0:
                    self._db.execute(
                        "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (over,)
                    )
                    self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'shed'", (over,))
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                # SQLite has already rolled back after some errors (SQLITE_FULL): a second
                # ROLLBACK would raise and hide the reason.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise OutboxWriteError(
                    f"outbox {self.path}: cannot store a message ({err}): expected a writable file with free "
                    f"space on its filesystem ({Path(self.path).parent})"
                ) from err
            self.shed = self._meta("shed")
            return seqs

    def pending(self, limit: int = 1000, after: int = 0) -> Iterator[Pending]:
        """Stored messages with seq > `after`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit + len(self._acked)),
            ).fetchall()
            acked = set(self._acked)
        return (Pending(int(s), str(t), bytes(p)) for s, t, p in rows if s not in acked)

    def ack(self, seqs: list[int]) -> int:
        """Forget acknowledged messages, in one transaction; returns how many were removed.

        The delete is committed without waiting for the disk (synchronous=NORMAL for this
        transaction): losing it to a power cut only means the message is sent again, which a
        consumer drops by `(sensor_id, seq)`, and not waiting keeps an fsync per acknowledgement
        out of the way of the next message's commit.
        """
        if not seqs:
            return 0
        with self._lock:
            todo = sorted(self._acked.union(seqs))
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cur = self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in todo])
                self._db.execute("COMMIT")
                removed = len(set(seqs) - self._acked) if self._acked else int(cur.rowcount)
                self._acked.clear()
                return removed
            except sqlite3.Error as err:
                # Even a delete needs room in the WAL (a full disk). Remember the acknowledgement,
                # so the message is not sent again, and delete it with the next one that succeeds.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                fresh = set(seqs) - self._acked
                self._acked.update(seqs)
                log.warning("outbox %s: cannot forget %d acknowledged messages yet (%s)", self.path, len(todo), err)
                return len(fresh)
            finally:
                self._db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")

    def wait_empty(self, timeout: float, nudge: Callable[[], None] = lambda: None, poll_s: float = 0.02) -> bool:
        """Wait until every message is acknowledged (calling `nudge` to wake the sender while
        waiting) or `timeout` passes; True when the outbox is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.depth() == 0:
                return True
            nudge()
            time.sleep(poll_s)
        return self.depth() == 0

    def depth(self) -> int:
        """Messages waiting to be acknowledged."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]) - len(self._acked)

    def close(self) -> None:
        with self._lock:
            self._db.close()
