"""Messages and sensors: idempotent ingest, queries, counts, the sensors table."""

from __future__ import annotations

import contextlib
import functools
import math
import re
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import (
    ColumnElement,
    Engine,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ivs.consumer import Message
from ivs.events import Count, Event, Heartbeat, kind_of
from ivs.hub.store.infos import SensorInfo
from ivs.hub.store.schema import _CONTROL, _INT64, FLEET, MAX_NAME, ROLLUP_S, MessageRow, SensorRow

_COLUMNS = ("sensor_id", "seq", "kind", "frame", "time", "t_capture_ns", "app", "payload")
"""The columns `ingest` writes, in the order of `_row`'s tuples."""
_SQLITE_INSERT = (
    f"INSERT INTO messages ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
    " ON CONFLICT (sensor_id, seq) DO NOTHING"
)
# PostgreSQL: COPY a batch into a temporary table, then one INSERT ... SELECT. Row by row
# (executemany) the server runs one INSERT per message and ingest is three times slower; the
# table lives for one transaction (ON COMMIT DROP) so that this also works behind a pooler
# in transaction mode (PgBouncer).
#
# The count rollups (`count_rollups`, one row per hour, sensor, app, direction and label, plus
# the whole fleet's under the sensor FLEET) grow by exactly the count events the batch newly
# stored: PostgreSQL's INSERT returns them (one statement, so two workers storing the same
# message concurrently add it once); SQLite, whose writers take turns, drops the staged counts
# already in `messages` and adds the rest before inserting them.
_ROLLUP_KEY = "start, sensor_id, app, direction, label"
_NEW_COUNTS = (  # each new count twice: under its sensor and under the fleet
    "SELECT start, sensor_id, app, direction, label FROM new"
    f" UNION ALL SELECT start, '{FLEET}', app, direction, label FROM new"
)
_PG_STAGE = (
    "CREATE TEMPORARY TABLE ivs_ingest (sensor_id text, seq bigint, kind text, frame bigint,"
    " time double precision, t_capture_ns bigint, app text, payload text, start bigint, direction text,"
    " label text) ON COMMIT DROP"
)
_PG_COPY = f"COPY ivs_ingest ({', '.join(_COLUMNS)}, start, direction, label) FROM STDIN"
_PG_INSERT = (
    f"WITH ins AS (INSERT INTO messages ({', '.join(_COLUMNS)}) SELECT {', '.join(_COLUMNS)} FROM ivs_ingest"
    " ON CONFLICT (sensor_id, seq) DO NOTHING RETURNING sensor_id, seq),"
    " new AS (SELECT s.start, s.sensor_id, s.app, s.direction, s.label FROM ins"
    " JOIN ivs_ingest s ON s.sensor_id = ins.sensor_id AND s.seq = ins.seq WHERE s.kind = 'count'),"
    f" counted AS (INSERT INTO count_rollups ({_ROLLUP_KEY}, n)"
    f" SELECT {_ROLLUP_KEY}, count(*) FROM ({_NEW_COUNTS}) c"
    " GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"  # one order for every worker: no deadlock between two
    f" ON CONFLICT ({_ROLLUP_KEY}) DO UPDATE SET n = count_rollups.n + excluded.n)"
    " SELECT count(*) FROM ins"
)
_SQLITE_STAGE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS ivs_counts"
    " (sensor_id TEXT, seq INTEGER, start INTEGER, app TEXT, direction TEXT, label TEXT)"
)
_SQLITE_KNOWN = (
    "DELETE FROM ivs_counts WHERE EXISTS"
    " (SELECT 1 FROM messages m WHERE m.sensor_id = ivs_counts.sensor_id AND m.seq = ivs_counts.seq)"
)
_SQLITE_COUNT = (
    f"WITH new AS (SELECT * FROM ivs_counts) INSERT INTO count_rollups ({_ROLLUP_KEY}, n)"
    f" SELECT {_ROLLUP_KEY}, count(*) FROM ({_NEW_COUNTS}) WHERE true"
    f" GROUP BY {_ROLLUP_KEY} ON CONFLICT ({_ROLLUP_KEY}) DO UPDATE SET n = n + excluded.n"
)


_NO_COUNT = (None, None, None)


def _sensors_upsert(dialect: str, mark_online: bool) -> str:
    """The statement that records a batch's sensors: seen now, their highest seq (never moved
    back by a late message), online when `mark_online`."""
    p, greatest = ("%s", "GREATEST") if dialect == "postgresql" else ("?", "max")
    return (
        f"INSERT INTO sensors (sensor_id, online, last_seen, last_seq) VALUES ({p}, {p}, {p}, {p})"
        " ON CONFLICT (sensor_id) DO UPDATE SET last_seen = excluded.last_seen,"
        f" last_seq = {greatest}(sensors.last_seq, excluded.last_seq)"
        + (", online = excluded.online" if mark_online else "")
    )


_SENSORS_UPSERT = {(d, m): _sensors_upsert(d, m) for d in ("sqlite", "postgresql") for m in (False, True)}


def check_message(message: Message) -> str | None:
    """Why a schema-valid message still cannot be stored, or None when it can: the numbers
    must fit the database's 64-bit columns and the names its text columns."""
    why = _name_problem("sensor_id", message.sensor_id, 1, _CONTROL)
    if why is not None:
        return why
    if not 1 <= message.seq <= _INT64:
        return f"seq {message.seq}: expected 1 to 2**63-1 (messages are numbered from 1)"
    if not 0 <= message.frame <= _INT64:
        return f"frame {message.frame}: expected 0 to 2**63-1"
    if not 0 <= message.t_capture_ns <= _INT64:
        return f"t_capture_ns {message.t_capture_ns}: expected 0 to 2**63-1"
    if not math.isfinite(message.time):
        return f"time {message.time}: expected a finite number of seconds"
    if isinstance(message, Event):
        why = _name_problem("app", message.app, 0, _CONTROL)
        if why is None and isinstance(message, Count):
            # kept in the rollups' text columns, where PostgreSQL takes no NUL
            why = _name_problem("direction", message.direction, 0, _NUL) or _name_problem(
                "label", message.label, 0, _NUL
            )
        return why
    return None


_NUL = re.compile("\x00")


@functools.lru_cache(maxsize=4096)
def _name_problem(field: str, value: str, least: int, bad: re.Pattern[str]) -> str | None:
    """Why a name cannot be stored, or None (cached: a fleet repeats the same few names)."""
    if least <= len(value) <= MAX_NAME and not bad.search(value):
        return None
    what = "printable characters" if bad is _CONTROL else "characters, none of them NUL"
    return f"{field} {value[:MAX_NAME]!r}: expected {least} to {MAX_NAME} {what}"


def message_kind(message: Message) -> str:
    """The `kind` column of a message: the event's kind, or "frame" for a frame record."""
    return kind_of(message) if isinstance(message, Event) else "frame"


_encoder = msgspec.json.Encoder()


def _row(message: Message) -> tuple[Any, ...]:
    """The `_COLUMNS` of a message's row."""
    if isinstance(message, Event):
        kind, app = kind_of(message), message.app
    else:
        kind, app = "frame", None
    payload = _encoder.encode(message).decode()
    return (message.sensor_id, message.seq, kind, message.frame, message.time, message.t_capture_ns, app, payload)


class MessageStore:
    """The store's message and sensor methods (`Store` has them)."""

    engine: Engine
    dialect: str
    _write_lock: contextlib.AbstractContextManager[Any]

    if TYPE_CHECKING:

        def set_health(  # RolloutStore's, beside this in `Store`
            self, sensor: str, fps: float, frames: int, dropped: int, model: str | None, version: str | None
        ) -> None: ...

    def ingest(self, messages: Sequence[Message], *, mark_online: bool = False) -> tuple[int, int]:
        """Store validated messages in one transaction -> (accepted, duplicates). A message whose
        (sensor_id, seq) is already stored, or repeated within the batch, is a duplicate and
        changes nothing. Updates each sensor's last_seq and last_seen (and sets it online when
        `mark_online`: the HTTP ingest, whose sensors have no availability topic).
        Messages must pass `check_message` (ValueError otherwise)."""
        rows: list[tuple[Any, ...]] = []
        counts: list[tuple[Any, ...]] = []  # (sensor_id, seq, start, app, direction, label) of each count
        extras: list[tuple[Any, ...]] = []  # PostgreSQL's staged (start, direction, label) of each row
        seen: set[tuple[str, int]] = set()
        per_sensor: dict[str, int] = {}
        beats: dict[str, Heartbeat] = {}
        for message in messages:
            if isinstance(message, Heartbeat):
                beats[message.sensor_id] = message
            why = check_message(message)
            if why is not None:
                raise ValueError(f"message {message.sensor_id!r}/{message.seq} cannot be stored: {why}")
            key = (sensor_id, seq) = (message.sensor_id, message.seq)
            if key not in seen:
                seen.add(key)
                rows.append(_row(message))
                if isinstance(message, Count):
                    start = math.floor(message.time / ROLLUP_S) * ROLLUP_S
                    counts.append((sensor_id, seq, start, message.app, message.direction, message.label))
                    extras.append((start, message.direction, message.label))
                else:
                    extras.append(_NO_COUNT)
                if seq > per_sensor.get(sensor_id, 0):
                    per_sensor[sensor_id] = seq
        if not rows:
            return 0, len(messages)
        now = time.time()
        with self._write_lock, self.engine.begin() as conn:
            # Plain driver statements: SQLAlchemy's per-row parameter processing and its multi-row
            # VALUES constructs cost more than the database's work (see docs/benchmarks.md, e).
            if self.dialect == "postgresql":
                with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
                    cursor.execute(_PG_STAGE)
                    with cursor.copy(_PG_COPY) as copy:
                        for row, extra in zip(rows, extras, strict=True):
                            copy.write_row(row + extra)
                    cursor.execute(_PG_INSERT)
                    found = cursor.fetchone()
                    accepted = int(found[0]) if found else 0
            else:
                if counts:  # before the messages: what is not in `messages` yet is new
                    conn.exec_driver_sql(_SQLITE_STAGE)
                    conn.exec_driver_sql("DELETE FROM ivs_counts")
                    conn.exec_driver_sql("INSERT INTO ivs_counts VALUES (?, ?, ?, ?, ?, ?)", counts)
                    conn.exec_driver_sql(_SQLITE_KNOWN)
                    conn.exec_driver_sql(_SQLITE_COUNT)
                # executemany: sqlite3 sums the rows each execution inserted (0 for a conflict).
                accepted = max(conn.exec_driver_sql(_SQLITE_INSERT, rows).rowcount, 0)
            # in sensor order in every worker, so that two batches never wait on each other's rows
            sensors = [(s, mark_online, now, seq) for s, seq in sorted(per_sensor.items())]
            conn.exec_driver_sql(_SENSORS_UPSERT[self.dialect, mark_online], sensors)
        for beat in beats.values():  # what it runs and how, on whatever transport it came
            self.set_sensor(beat.sensor_id, model=beat.model, version=beat.version)
            self.set_health(beat.sensor_id, beat.fps, beat.frames, beat.dropped, beat.model, beat.version)
        return accepted, len(messages) - accepted

    def events(
        self,
        *,
        sensor: str | None = None,
        kind: str | None = None,
        app: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after_seq: int | None = None,
        limit: int = 1000,
    ) -> list[str]:
        """Stored messages as JSON texts, oldest first (by time; by sensor and seq when
        `after_seq` is given, to page through a sensor's stream). `since` is inclusive,
        `until` exclusive; both compare with the message's wall-clock `time`."""
        stmt = select(MessageRow.payload).where(*self._filters(sensor, kind, app, since, until))
        if after_seq is not None:
            stmt = stmt.where(MessageRow.seq > after_seq).order_by(MessageRow.sensor_id, MessageRow.seq)
        else:
            stmt = stmt.order_by(MessageRow.time, MessageRow.sensor_id, MessageRow.seq)
        with self.engine.connect() as conn:
            return list(conn.scalars(stmt.limit(limit)))

    @staticmethod
    def _filters(
        sensor: str | None, kind: str | None, app: str | None, since: float | None, until: float | None
    ) -> Iterator[ColumnElement[bool]]:
        if sensor is not None:
            yield MessageRow.sensor_id == sensor
        if kind is not None:
            yield MessageRow.kind == kind
        if app is not None:
            yield MessageRow.app == app
        if since is not None:
            yield MessageRow.time >= since
        if until is not None:
            yield MessageRow.time < until

    def message_count(self) -> int:
        """How many messages are stored."""
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(MessageRow)) or 0)

    # sensors
    def sensors(self, offline_after_s: float | None = None) -> list[SensorInfo]:
        """Every sensor seen (by message, availability or state), by sensor_id. With
        `offline_after_s`, one not heard from for that long is offline, whatever it said last
        (an HTTP sensor has no last will; a heartbeat every `heartbeat_s` keeps it online)."""
        now = time.time()
        counts = select(MessageRow.sensor_id, func.count().label("n")).group_by(MessageRow.sensor_id).subquery("counts")
        stmt = (
            select(SensorRow, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.sensor_id == SensorRow.sensor_id)
            .order_by(SensorRow.sensor_id)
        )
        with Session(self.engine) as session:
            return [
                SensorInfo(s.sensor_id, _alive(s.online, s.last_seen, now, offline_after_s), s.last_seen, s.last_seq,
                           int(n), s.model, s.version)
                for s, n in session.execute(stmt)
            ]  # fmt: skip

    def online_count(self, offline_after_s: float | None = None) -> int:
        """How many sensors are online (heard from within `offline_after_s`, where given)."""
        stmt = select(func.count()).select_from(SensorRow).where(SensorRow.online)
        if offline_after_s is not None:
            stmt = stmt.where(SensorRow.last_seen >= time.time() - offline_after_s)
        with self.engine.connect() as conn:
            return int(conn.scalar(stmt) or 0)

    def set_sensor(
        self,
        sensor_id: str,
        *,
        online: bool | None = None,
        model: str | None = None,
        version: str | None = None,
        seen: bool = True,
    ) -> None:
        """Record what a sensor said about itself (availability, state); None leaves a field as
        it is. `seen`: the hub heard it just now (not a retained message from the past)."""
        values: dict[str, Any] = {}
        if online is not None:
            values["online"] = online
        if model is not None:
            values["model"] = model[:256]
        if version is not None:
            values["version"] = version[:128]
        if seen:
            values["last_seen"] = time.time()
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        with self._write_lock, self.engine.begin() as conn:
            stmt = insert(SensorRow).values(
                sensor_id=sensor_id,
                online=bool(online),
                last_seen=values.get("last_seen"),
                model=values.get("model"),
                version=values.get("version"),
                last_seq=0,
            )
            if values:
                conn.execute(stmt.on_conflict_do_update(index_elements=[SensorRow.sensor_id], set_=values))
            else:
                conn.execute(stmt.on_conflict_do_nothing())

    # deploy: packages, desired state (assignments), reported state


def _alive(online: bool | None, last_seen: float | None, now: float, offline_after_s: float | None) -> bool:
    if not online:
        return False
    return offline_after_s is None or (last_seen is not None and now - last_seen <= offline_after_s)
