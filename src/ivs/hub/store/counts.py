"""Counts over time, and retention.

`count` events are aggregated in the database as they are stored: `count_rollups` holds one
row per hour, sensor, app, direction and label, and one per hour, app, direction and label for
the whole fleet (kept by `Store.ingest`, exactly once per message). A count query whose
interval is a whole number of hours reads the rollups for the whole hours of its range and the
raw messages only for the part-hours at its ends, so a month of a hundred sensors is read from
a few thousand rows (the fleet's, or one sensor's) instead of millions of JSON payloads; any
other interval reads the raw messages.

Retention (`prune`) deletes raw messages, rollups and audit entries older than their own
ages, and the oldest raw messages beyond a row bound, in bounded steps so that ingest keeps
going meanwhile. Rollups outlive the messages they summarise, so an hourly (or daily, ...)
count stays answerable for as long as the rollups are kept; finer intervals only while the raw
messages are there.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.orm import Session

from ivs.hub.store.messages import MessageStore
from ivs.hub.store.schema import FLEET, ROLLUP_S, AuditRow, CountRollup, MessageRow

log = logging.getLogger(__name__)

PRUNE_STEP = 20_000
"""Rows deleted per transaction: a retention run never holds the (SQLite) writer for long."""


class _CountFields(msgspec.Struct):
    direction: str
    label: str


_count_decoder = msgspec.json.Decoder(_CountFields)

Buckets = dict[int, dict[str, dict[str, int]]]


@dataclass(frozen=True)
class Retention:
    """How long the hub keeps what (days; None: for ever) and how many raw messages at most."""

    messages_days: float | None = None
    rollups_days: float | None = None
    audit_days: float | None = None
    max_messages: int | None = None

    def __post_init__(self) -> None:
        for name in ("messages_days", "rollups_days", "audit_days"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} {value}: expected a number of days > 0, or none to keep for ever")
        if self.max_messages is not None and self.max_messages < 0:
            raise ValueError(f"max_messages {self.max_messages}: expected 0 or more")
        if self.messages_days and self.rollups_days and self.rollups_days < self.messages_days:
            raise ValueError(
                f"rollups_days {self.rollups_days} < messages_days {self.messages_days}: the rollups summarise the"
                " messages, expected them kept at least as long"
            )

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.messages_days, self.rollups_days, self.audit_days, self.max_messages))


@dataclass(frozen=True)
class Pruned:
    """What one retention run deleted."""

    messages: int
    rollups: int
    audit: int


class CountStore:
    """The store's counts and retention (`Store` has them)."""

    engine: Engine
    dialect: str
    _write_lock: contextlib.AbstractContextManager[Any]

    def counts(
        self,
        *,
        interval: int = 60,
        sensor: str | None = None,
        app: str | None = None,
        since: float | None = None,
        until: float | None = None,
        from_messages: bool = False,
    ) -> list[dict[str, Any]]:
        """`count` events per `interval`-second bucket (aligned to multiples of the interval since
        the epoch), by direction and label: [{"start", "end", "counts": {direction: {label: n}}}],
        oldest first, only buckets that have some. `since` inclusive, `until` exclusive.
        `from_messages`: read the raw messages even where the rollups would do (a check, or a bench)."""
        if interval < 1:
            raise ValueError(f"interval {interval}: expected at least 1 second")
        buckets: Buckets = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
        if interval % ROLLUP_S or from_messages:
            self._raw_counts(buckets, interval, sensor, app, since, until)
        else:
            # whole hours from the rollups; the part-hours at either end from the messages
            lo = None if since is None else math.ceil(since / ROLLUP_S) * ROLLUP_S
            hi = None if until is None else math.floor(until / ROLLUP_S) * ROLLUP_S
            if lo is not None and hi is not None and lo >= hi:
                self._raw_counts(buckets, interval, sensor, app, since, until)
            else:
                if since is not None and lo is not None and since < lo:
                    self._raw_counts(buckets, interval, sensor, app, since, lo)
                self._rollup_counts(buckets, interval, sensor, app, lo, hi)
                if until is not None and hi is not None and hi < until:
                    self._raw_counts(buckets, interval, sensor, app, hi, until)
        return [
            {
                "start": b * interval,
                "end": (b + 1) * interval,
                "counts": {d: dict(sorted(labels.items())) for d, labels in sorted(by_dir.items())},
            }
            for b, by_dir in sorted(buckets.items())
        ]

    def _rollup_counts(
        self, buckets: Buckets, interval: int, sensor: str | None, app: str | None, lo: int | None, hi: int | None
    ) -> None:
        stmt = select(CountRollup.start, CountRollup.direction, CountRollup.label, func.sum(CountRollup.n))
        stmt = stmt.where(CountRollup.sensor_id == (FLEET if sensor is None else sensor))
        if app is not None:
            stmt = stmt.where(CountRollup.app == app)
        if lo is not None:
            stmt = stmt.where(CountRollup.start >= lo)
        if hi is not None:
            stmt = stmt.where(CountRollup.start < hi)
        stmt = stmt.group_by(CountRollup.start, CountRollup.direction, CountRollup.label)
        with self.engine.connect() as conn:
            for start, direction, label, n in conn.execute(stmt):
                buckets[start // interval][direction][label] += int(n)

    def _raw_counts(
        self,
        buckets: Buckets,
        interval: int,
        sensor: str | None,
        app: str | None,
        since: float | None,
        until: float | None,
    ) -> None:
        stmt = select(MessageRow.time, MessageRow.payload).where(
            *MessageStore._filters(sensor, "count", app, since, until)
        )
        with self.engine.connect() as conn:
            for t, payload in conn.execute(stmt):
                fields = _count_decoder.decode(payload)
                buckets[math.floor(t / interval)][fields.direction][fields.label] += 1

    def rollup_total(self) -> int:
        """Every count event the rollups hold."""
        with self.engine.connect() as conn:
            total = select(func.coalesce(func.sum(CountRollup.n), 0)).where(CountRollup.sensor_id != FLEET)
            return int(conn.scalar(total) or 0)

    def rebuild_rollups(self) -> int:
        """Recompute the rollups from the count events stored (a database upgraded from before
        the rollups had none); returns the events counted. Rollups of pruned messages are lost."""
        totals: dict[tuple[int, str, str, str, str], int] = defaultdict(int)
        stmt = select(MessageRow.time, MessageRow.sensor_id, MessageRow.app, MessageRow.payload).where(
            MessageRow.kind == "count"
        )
        with self.engine.connect() as conn:
            for t, sensor_id, app, payload in conn.execute(stmt.execution_options(yield_per=10_000)):
                fields = _count_decoder.decode(payload)
                start = math.floor(t / ROLLUP_S) * ROLLUP_S
                totals[(start, sensor_id, app or "", fields.direction, fields.label)] += 1
                totals[(start, FLEET, app or "", fields.direction, fields.label)] += 1
        keys = ("start", "sensor_id", "app", "direction", "label")
        with self._write_lock, Session(self.engine) as session, session.begin():
            session.execute(delete(CountRollup))
            rows = [dict(zip(keys, key, strict=True), n=n) for key, n in totals.items()]
            for step in range(0, len(rows), 10_000):
                session.execute(insert(CountRollup), rows[step : step + 10_000])
        return sum(n for key, n in totals.items() if key[1] != FLEET)

    def prune(self, retention: Retention, now: float | None = None) -> Pruned:
        """Delete what `retention` no longer keeps; see the module's docstring."""
        now = time.time() if now is None else now
        messages = rollups = audit = 0
        if retention.messages_days is not None:
            messages += self._delete_steps(MessageRow, MessageRow.time < now - retention.messages_days * 86400)
        if retention.max_messages is not None:
            with self.engine.connect() as conn:
                over = int(conn.scalar(select(func.count()).select_from(MessageRow)) or 0) - retention.max_messages
                # the oldest by time: the (over+1)-th oldest message's time is the cut
                cut = (
                    conn.scalar(select(MessageRow.time).order_by(MessageRow.time).offset(over).limit(1))
                    if over > 0
                    else None
                )
            if cut is not None:
                messages += self._delete_steps(MessageRow, MessageRow.time < cut)
        if retention.rollups_days is not None:
            cut_hour = math.floor((now - retention.rollups_days * 86400) / ROLLUP_S) * ROLLUP_S
            with self._write_lock, self.engine.begin() as conn:
                rollups = int(conn.execute(delete(CountRollup).where(CountRollup.start < cut_hour)).rowcount or 0)
        if retention.audit_days is not None:
            with self._write_lock, self.engine.begin() as conn:
                cut_audit = now - retention.audit_days * 86400
                audit = int(conn.execute(delete(AuditRow).where(AuditRow.time < cut_audit)).rowcount or 0)
        if messages and self.dialect == "postgresql":
            # the deleted rows' space is reused only once vacuumed; autovacuum would get there
            # later, with the table bigger meanwhile (VACUUM runs outside a transaction)
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM (ANALYZE) messages")
        if messages or rollups or audit:
            log.info("retention: deleted %d messages, %d rollup rows, %d audit entries", messages, rollups, audit)
        return Pruned(messages, rollups, audit)

    def _delete_steps(self, table: Any, condition: Any) -> int:
        """DELETE ... WHERE condition, `PRUNE_STEP` rows per transaction."""
        deleted = 0
        while True:
            ids = select(table.id).where(condition).order_by(table.id).limit(PRUNE_STEP).scalar_subquery()
            with self._write_lock, self.engine.begin() as conn:
                n = int(conn.execute(delete(table).where(table.id.in_(ids))).rowcount or 0)
            deleted += n
            if n < PRUNE_STEP:
                return deleted

    def database_bytes(self) -> int:
        """Bytes the database's data takes: SQLite's pages in use (free pages, which new rows
        reuse, not counted), PostgreSQL's `pg_database_size`."""
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar() or 0
                free = conn.exec_driver_sql("PRAGMA freelist_count").scalar() or 0
                size = conn.exec_driver_sql("PRAGMA page_size").scalar() or 0
                return int((pages - free) * size)
            return int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar() or 0)
