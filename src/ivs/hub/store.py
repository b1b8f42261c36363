"""The hub's database: devices, messages and sensors, through SQLAlchemy 2.

Works with SQLite (`sqlite:///path/to/hub.sqlite`: WAL, `synchronous=NORMAL`) and PostgreSQL
(`postgresql://user@host/db`, through psycopg 3). The SQL is portable but for the idempotent
insert (`INSERT ... ON CONFLICT DO NOTHING`, which both dialects have) and the way `ingest`
feeds it (below).

Tables:

    devices         id, name (unique; the sensor_id the device may post as), token_hash
                    (sha256 hex of its bearer token; the token itself is never stored),
                    created, revoked (epoch seconds; revoked is NULL while the device is active)
    messages        id, sensor_id, seq, kind ("count", ..., or "frame" for frame records),
                    frame, time (the message's wall-clock time), t_capture_ns, app (NULL for
                    frame records), payload (the message as JSON text);
                    UNIQUE(sensor_id, seq), INDEX(sensor_id, kind, time), INDEX(time)
    sensors         sensor_id, online, last_seen (hub clock, epoch seconds), model, version,
                    last_seq (the highest seq stored)
    packages        sha256 (primary key), name, version, size, uploaded, signed_by (the key id
                    signature.json claims; the hub does not verify it), problem (what the hub's
                    integrity check found, or NULL), data (the .ivsm file's bytes)
    assignments     device (primary key), revision (1, 2, ... per device), package_sha256,
                    config (sensor YAML text or NULL), assigned: the desired state
    deploy_reports  device (primary key), revision (the desired revision answered), status
                    ("ok" / "failed"), error, model, version, sha256 (what it runs now),
                    config_revision, config_status, reported: the reported state
    mqtt_credentials  name (primary key: an active device), password_hash (the Mosquitto `$7$`
                    hash of its token, which is also its MQTT password: see ivs.hub.mqtt_auth);
                    created when missing, like every table, without a version change
    schema_version  version (2): what a migration looks at

Upgrades: a version 1 database (no deploy tables) gets the three deploy tables created and its
version set to 2 when a Store opens it; nothing else changes.

`Store.ingest` stores a batch in one transaction (SQLite: one prepared INSERT executed per row;
PostgreSQL: COPY into a temporary table, then one INSERT ... SELECT) and is idempotent on
`(sensor_id, seq)`: storing a message again counts it as a duplicate and changes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Double,
    Engine,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import StaticPool

from ivs.consumer import Message
from ivs.errors import ConfigError, IvsError
from ivs.events import Event, kind_of
from ivs.hub.passwords import mosquitto_hash

SCHEMA_VERSION = 2
"""The version of the tables below; `schema_version` in the database says which one it has."""

MAX_NAME = 128
"""The longest sensor_id / device name / app name the hub stores."""
_INT64 = 2**63 - 1
_SCHEMA_LOCK = 0x1F5_0001
"""The PostgreSQL advisory lock key `create_schema` holds (any constant no other program uses)."""
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
_PG_STAGE = (
    "CREATE TEMPORARY TABLE ivs_ingest (sensor_id text, seq bigint, kind text, frame bigint,"
    " time double precision, t_capture_ns bigint, app text, payload text) ON COMMIT DROP"
)
_PG_COPY = f"COPY ivs_ingest ({', '.join(_COLUMNS)}) FROM STDIN"
_PG_INSERT = (
    f"INSERT INTO messages ({', '.join(_COLUMNS)}) SELECT {', '.join(_COLUMNS)} FROM ivs_ingest"
    " ON CONFLICT (sensor_id, seq) DO NOTHING"
)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
"""What a device name (= the sensor_id it posts as) may look like: it is also an MQTT topic level."""
_NAME_RE = re.compile(NAME_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite only auto-increments INTEGER PRIMARY KEY


class HubError(IvsError):
    """A hub operation was refused (an unknown device, a name in use, ...)."""


class Base(DeclarativeBase):
    """The hub's tables."""


class Device(Base):
    """A sensor allowed to post to the hub, identified by its bearer token."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), index=True)
    created: Mapped[float] = mapped_column(Double)
    revoked: Mapped[float | None] = mapped_column(Double, default=None)


class MessageRow(Base):
    """One stored message (event or frame record); `payload` is the whole message as JSON."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("sensor_id", "seq", name="uq_messages_sensor_seq"),
        Index("ix_messages_sensor_kind_time", "sensor_id", "kind", "time"),
        Index("ix_messages_time", "time"),
    )

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    sensor_id: Mapped[str] = mapped_column(String(MAX_NAME))
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    frame: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[float] = mapped_column(Double)
    t_capture_ns: Mapped[int] = mapped_column(BigInteger)
    app: Mapped[str | None] = mapped_column(String(MAX_NAME))
    payload: Mapped[str] = mapped_column(Text)


class SensorRow(Base):
    """What the hub knows about one sensor: availability, what it runs, how far it got."""

    __tablename__ = "sensors"

    sensor_id: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[float | None] = mapped_column(Double, default=None)
    model: Mapped[str | None] = mapped_column(String(256), default=None)
    version: Mapped[str | None] = mapped_column(String(128), default=None)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class MqttCredential(Base):
    """An active device's MQTT password hash (Mosquitto's format), for `ivs hub mqtt-auth`."""

    __tablename__ = "mqtt_credentials"

    name: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(256))


class SchemaVersion(Base):
    """One row: the schema version of this database."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)


# deploy (schema version 2)
class HubNotFound(HubError):
    """What a hub operation names does not exist (a device, a package)."""


class PackageRow(Base):
    """An uploaded model package, kept whole in the database so that every hub worker on one
    database can serve it."""

    __tablename__ = "packages"
    __table_args__ = (Index("ix_packages_name_version", "name", "version"),)

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    version: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    uploaded: Mapped[float] = mapped_column(Double)
    signed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    problem: Mapped[str | None] = mapped_column(Text, default=None)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class AssignmentRow(Base):
    """A device's desired state: the package (and config) it should run, numbered by revision."""

    __tablename__ = "assignments"

    device: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    package_sha256: Mapped[str] = mapped_column(String(64))
    config: Mapped[str | None] = mapped_column(Text, default=None)
    assigned: Mapped[float] = mapped_column(Double)


class DeployReportRow(Base):
    """A device's reported state: what it runs, and how its last deploy went."""

    __tablename__ = "deploy_reports"

    device: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, default=None)
    model: Mapped[str | None] = mapped_column(String(256), default=None)
    version: Mapped[str | None] = mapped_column(String(128), default=None)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    config_revision: Mapped[int | None] = mapped_column(BigInteger, default=None)
    config_status: Mapped[str | None] = mapped_column(Text, default=None)
    reported: Mapped[float] = mapped_column(Double)


@dataclass(frozen=True)
class PackageInfo:
    """A stored package as listed (never its bytes)."""

    sha256: str
    name: str
    version: str
    size: int
    uploaded: float
    signed_by: str | None
    problem: str | None


@dataclass(frozen=True)
class Assignment:
    """A device's desired state."""

    device: str
    revision: int
    package: PackageInfo
    config: str | None
    assigned: float


@dataclass(frozen=True)
class DeployReport:
    """What a device last reported about its deploys."""

    device: str
    revision: int
    status: str
    error: str | None
    model: str | None
    version: str | None
    sha256: str | None
    config_revision: int | None
    config_status: str | None
    reported: float


_PACKAGE_INFO = (
    PackageRow.sha256,
    PackageRow.name,
    PackageRow.version,
    PackageRow.size,
    PackageRow.uploaded,
    PackageRow.signed_by,
    PackageRow.problem,
)
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _package_info(row: Any) -> PackageInfo:
    return PackageInfo(
        str(row.sha256), str(row.name), str(row.version), int(row.size), float(row.uploaded), row.signed_by, row.problem
    )


@dataclass(frozen=True)
class DeviceInfo:
    """A device as listed (never its token or hash)."""

    name: str
    created: float
    revoked: float | None


@dataclass(frozen=True)
class SensorInfo:
    """A sensor as listed by `Store.sensors`."""

    sensor_id: str
    online: bool
    last_seen: float | None
    last_seq: int
    messages: int
    model: str | None
    version: str | None


class _CountFields(msgspec.Struct):
    direction: str
    label: str


_count_decoder = msgspec.json.Decoder(_CountFields)


def hash_token(token: str) -> str:
    """sha256 hex digest of a bearer token: what the devices table keeps."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str | None:
    """Why `name` cannot be a device name / sensor_id, or None when it can."""
    if not _NAME_RE.match(name):
        return (
            f"invalid name {name[:MAX_NAME]!r}: expected 1 to {MAX_NAME} characters of letters, digits, '_', '.', '-',"
            " starting with a letter or digit"
        )
    return None


def check_message(message: Message) -> str | None:
    """Why a schema-valid message still cannot be stored, or None when it can: the numbers
    must fit the database's 64-bit columns and the names its text columns."""
    if not message.sensor_id or len(message.sensor_id) > MAX_NAME or _CONTROL.search(message.sensor_id):
        return f"sensor_id {message.sensor_id[:MAX_NAME]!r}: expected 1 to {MAX_NAME} printable characters"
    if not 1 <= message.seq <= _INT64:
        return f"seq {message.seq}: expected 1 to 2**63-1 (messages are numbered from 1)"
    if not 0 <= message.frame <= _INT64:
        return f"frame {message.frame}: expected 0 to 2**63-1"
    if not 0 <= message.t_capture_ns <= _INT64:
        return f"t_capture_ns {message.t_capture_ns}: expected 0 to 2**63-1"
    if not math.isfinite(message.time):
        return f"time {message.time}: expected a finite number of seconds"
    if isinstance(message, Event) and (len(message.app) > MAX_NAME or _CONTROL.search(message.app)):
        return f"app {message.app[:MAX_NAME]!r}: expected at most {MAX_NAME} printable characters"
    return None


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


class Store:
    """The hub's database, safe to share between threads (one engine, a connection pool).

    url: `sqlite:///path` (or `sqlite://` for an in-memory database) or `postgresql://...`.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        try:
            parsed = make_url(url)
        except Exception as err:  # sqlalchemy's ArgumentError, ValueError: any unparseable url
            raise ConfigError(f"database url {url!r}: expected sqlite:///path or postgresql://user@host/db") from err
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(f"database url {url!r}: expected sqlite:///path or postgresql://user@host/db")
        if parsed.drivername == "postgresql":
            # SQLAlchemy's default PostgreSQL driver is psycopg2; ivs depends on psycopg 3.
            parsed = parsed.set(drivername="postgresql+psycopg")
        elif self.dialect == "postgresql" and parsed.get_driver_name() != "psycopg":
            raise ConfigError(
                f"database url {url!r}: driver {parsed.get_driver_name()!r} is not supported: expected"
                " postgresql://... or postgresql+psycopg://... (psycopg 3)"
            )
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
            if parsed.database in (None, "", ":memory:"):
                kwargs["poolclass"] = StaticPool  # one shared connection, or every thread sees its own empty DB
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(parsed, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        # SQLite has one writer at a time: serialising this process's writers avoids "database is
        # locked" retries; other processes wait on the busy timeout.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        self.create_schema()

    # schema
    def create_schema(self) -> None:
        """Create the tables that are missing and record the schema version (idempotent).
        Raises ConfigError for a database written by a newer ivs."""
        with self._write_lock, Session(self.engine) as session, session.begin():
            if self.dialect == "postgresql":
                # Hub workers started together on a new database would race to create the same
                # tables (and version row); PostgreSQL's DDL is transactional, so one at a time.
                session.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
            Base.metadata.create_all(session.connection())
            found = session.scalar(select(func.max(SchemaVersion.version)))
            if found is None:
                session.add(SchemaVersion(version=SCHEMA_VERSION))
            elif found < SCHEMA_VERSION:
                # 1 -> 2 only adds the deploy tables, which create_all has just made.
                session.execute(update(SchemaVersion).values(version=SCHEMA_VERSION))
            elif found > SCHEMA_VERSION:
                raise ConfigError(
                    f"the hub database has schema version {found}; this ivs knows versions up to {SCHEMA_VERSION}:"
                    " upgrade ivs"
                )

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with Session(self.engine) as session:
            return int(session.scalar(select(func.max(SchemaVersion.version))) or 0)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # devices
    def add_device(self, name: str) -> str:
        """Register a device (or re-issue a revoked one's token) and return its new bearer token:
        the only time it is seen. Raises HubError if the name is invalid or already active."""
        why = check_name(name)
        if why is not None:
            raise HubError(why)
        token = secrets.token_urlsafe(32)
        with self._write_lock, Session(self.engine) as session, session.begin():
            device = session.scalar(select(Device).where(Device.name == name))
            if device is None:
                session.add(Device(name=name, token_hash=hash_token(token), created=time.time(), revoked=None))
            elif device.revoked is None:
                raise HubError(f"device {name!r} exists and is active: revoke it first to issue a new token")
            else:
                device.token_hash, device.created, device.revoked = hash_token(token), time.time(), None
            # The token is also the device's MQTT password: hash it for Mosquitto now, while it is in hand.
            session.merge(MqttCredential(name=name, password_hash=mosquitto_hash(token)))
        return token

    def revoke_device(self, name: str) -> bool:
        """Revoke a device's token (it gets 401 from then on). False if there is no such device."""
        with self._write_lock, Session(self.engine) as session, session.begin():
            device = session.scalar(select(Device).where(Device.name == name))
            if device is None:
                return False
            if device.revoked is None:
                device.revoked = time.time()
            session.execute(delete(MqttCredential).where(MqttCredential.name == name))
            return True

    def mqtt_credentials(self) -> dict[str, str | None]:
        """Every active device -> the Mosquitto hash of its token (None for a device registered
        before the hub kept one)."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(Device.name, MqttCredential.password_hash)
                .outerjoin(MqttCredential, MqttCredential.name == Device.name)
                .where(Device.revoked.is_(None))
            ).all()
        return {str(name): hashed for name, hashed in rows}

    def devices(self) -> list[DeviceInfo]:
        """Every device, by name."""
        with Session(self.engine) as session:
            rows = session.scalars(select(Device).order_by(Device.name))
            return [DeviceInfo(d.name, d.created, d.revoked) for d in rows]

    def authenticate(self, token: str) -> str | None:
        """The name of the active device whose token this is, or None."""
        if not token:
            return None
        digest = hash_token(token)
        with Session(self.engine) as session:
            rows = session.execute(
                select(Device.name, Device.token_hash).where(Device.token_hash == digest, Device.revoked.is_(None))
            ).all()
        for name, stored in rows:
            if hmac.compare_digest(stored.encode(), digest.encode()):
                return str(name)
        return None

    # messages
    def ingest(self, messages: Sequence[Message], *, mark_online: bool = False) -> tuple[int, int]:
        """Store validated messages in one transaction -> (accepted, duplicates). A message whose
        (sensor_id, seq) is already stored, or repeated within the batch, is a duplicate and
        changes nothing. Updates each sensor's last_seq and last_seen (and sets it online when
        `mark_online`: the HTTP ingest, whose sensors have no availability topic).
        Messages must pass `check_message` (ValueError otherwise)."""
        rows: list[tuple[Any, ...]] = []
        seen: set[tuple[str, int]] = set()
        per_sensor: dict[str, int] = {}
        for message in messages:
            why = check_message(message)
            if why is not None:
                raise ValueError(f"message {message.sensor_id!r}/{message.seq} cannot be stored: {why}")
            key = (sensor_id, seq) = (message.sensor_id, message.seq)
            if key not in seen:
                seen.add(key)
                rows.append(_row(message))
                if seq > per_sensor.get(sensor_id, 0):
                    per_sensor[sensor_id] = seq
        if not rows:
            return 0, len(messages)
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        now = time.time()
        with self._write_lock, self.engine.begin() as conn:
            # Plain driver statements: SQLAlchemy's per-row parameter processing and its multi-row
            # VALUES constructs cost more than the database's work (see docs/benchmarks.md, e).
            if self.dialect == "postgresql":
                with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
                    cursor.execute(_PG_STAGE)
                    with cursor.copy(_PG_COPY) as copy:
                        for row in rows:
                            copy.write_row(row)
                    cursor.execute(_PG_INSERT)
                    accepted = max(cursor.rowcount, 0)
            else:
                # executemany: sqlite3 sums the rows each execution inserted (0 for a conflict).
                accepted = max(conn.exec_driver_sql(_SQLITE_INSERT, rows).rowcount, 0)
            sensors = [
                {"sensor_id": s, "online": mark_online, "last_seen": now, "last_seq": seq}
                for s, seq in sorted(per_sensor.items())
            ]
            up = insert(SensorRow).values(sensors)
            set_: dict[str, Any] = {
                "last_seen": up.excluded.last_seen,
                "last_seq": case(
                    (up.excluded.last_seq > SensorRow.last_seq, up.excluded.last_seq), else_=SensorRow.last_seq
                ),
            }
            if mark_online:
                set_["online"] = True
            conn.execute(up.on_conflict_do_update(index_elements=[SensorRow.sensor_id], set_=set_))
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

    def counts(
        self,
        *,
        interval: int = 60,
        sensor: str | None = None,
        app: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict[str, Any]]:
        """`count` events per `interval`-second bucket (aligned to multiples of the interval since
        the epoch), by direction and label: [{"start", "end", "counts": {direction: {label: n}}}],
        oldest first, only buckets that have some."""
        if interval < 1:
            raise ValueError(f"interval {interval}: expected at least 1 second")
        stmt = (
            select(MessageRow.time, MessageRow.payload)
            .where(*self._filters(sensor, "count", app, since, until))
            .order_by(MessageRow.time)
        )
        buckets: dict[int, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
        with self.engine.connect() as conn:
            for t, payload in conn.execute(stmt):
                fields = _count_decoder.decode(payload)
                buckets[math.floor(t / interval)][fields.direction][fields.label] += 1
        return [
            {
                "start": b * interval,
                "end": (b + 1) * interval,
                "counts": {d: dict(labels) for d, labels in sorted(by_dir.items())},
            }
            for b, by_dir in sorted(buckets.items())
        ]

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
    def sensors(self) -> list[SensorInfo]:
        """Every sensor seen (by message, availability or state), by sensor_id."""
        counts = select(MessageRow.sensor_id, func.count().label("n")).group_by(MessageRow.sensor_id).subquery("counts")
        stmt = (
            select(SensorRow, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.sensor_id == SensorRow.sensor_id)
            .order_by(SensorRow.sensor_id)
        )
        with Session(self.engine) as session:
            return [
                SensorInfo(s.sensor_id, bool(s.online), s.last_seen, s.last_seq, int(n), s.model, s.version)
                for s, n in session.execute(stmt)
            ]

    def online_count(self) -> int:
        """How many sensors are online."""
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(SensorRow).where(SensorRow.online)) or 0)

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
    def add_package(
        self, data: bytes, *, name: str, version: str, signed_by: str | None = None, problem: str | None = None
    ) -> tuple[PackageInfo, bool]:
        """Store a package's bytes under their sha256 -> (its info, whether it is new). Storing the
        same bytes again changes nothing."""
        digest = hashlib.sha256(data).hexdigest()
        with self._write_lock, Session(self.engine) as session, session.begin():
            row = session.execute(select(*_PACKAGE_INFO).where(PackageRow.sha256 == digest)).one_or_none()
            if row is not None:
                return _package_info(row), False
            new = PackageRow(
                sha256=digest,
                name=name[:256],
                version=version[:128],
                size=len(data),
                uploaded=time.time(),
                signed_by=signed_by,
                problem=problem,
                data=data,
            )
            session.add(new)
            info = PackageInfo(digest, new.name, new.version, new.size, new.uploaded, signed_by, problem)
        return info, True

    def packages(self) -> list[PackageInfo]:
        """Every stored package, newest first (never the bytes)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_PACKAGE_INFO).order_by(PackageRow.uploaded.desc(), PackageRow.name))
            return [_package_info(r) for r in rows]

    def package_data(self, sha256: str) -> bytes | None:
        """The bytes of the package with this sha256, or None."""
        with self.engine.connect() as conn:
            data = conn.scalar(select(PackageRow.data).where(PackageRow.sha256 == sha256.lower()))
            return bytes(data) if data is not None else None

    def resolve_package(self, ref: str) -> PackageInfo:
        """A package by sha256 (64 hex digits), NAME@VERSION, or NAME (the newest upload of that
        name). Raises HubNotFound, or HubError when NAME@VERSION names more than one package."""
        with self.engine.connect() as conn:
            if _SHA256_RE.match(ref.lower()):
                row = conn.execute(select(*_PACKAGE_INFO).where(PackageRow.sha256 == ref.lower())).one_or_none()
                if row is None:
                    raise HubNotFound(f"no package with sha256 {ref}: expected one of `GET /api/v1/packages`")
                return _package_info(row)
            name, at, version = ref.partition("@")
            stmt = select(*_PACKAGE_INFO).where(PackageRow.name == name)
            if at:
                stmt = stmt.where(PackageRow.version == version)
            rows = conn.execute(stmt.order_by(PackageRow.uploaded.desc())).all()
        if not rows:
            raise HubNotFound(
                f"no package {ref[:300]!r}: expected a sha256, NAME@VERSION or NAME of an uploaded package"
            )
        if at and len(rows) > 1:
            shas = ", ".join(str(r.sha256)[:12] for r in rows)
            raise HubError(f"{len(rows)} packages are {ref!r} ({shas}...): name the one to deploy by its sha256")
        return _package_info(rows[0])

    def assign(self, device: str, package_sha256: str, config: str | None = None) -> Assignment:
        """Make `package_sha256` (and `config`) the device's desired state, as the next revision.
        Raises HubNotFound for an unknown device or package."""
        with self._write_lock, Session(self.engine) as session, session.begin():
            if session.scalar(select(Device.name).where(Device.name == device)) is None:
                raise HubNotFound(f"no device named {device[:MAX_NAME]!r}: expected one of `GET /api/v1/devices`")
            row = session.execute(select(*_PACKAGE_INFO).where(PackageRow.sha256 == package_sha256)).one_or_none()
            if row is None:
                raise HubNotFound(f"no package with sha256 {package_sha256[:64]}: upload it first")
            current = session.get(AssignmentRow, device)
            now = time.time()
            if current is None:
                current = AssignmentRow(device=device, revision=1, package_sha256=package_sha256, config=config)
                current.assigned = now
                session.add(current)
            else:
                current.revision += 1
                current.package_sha256, current.config, current.assigned = package_sha256, config, now
            revision = current.revision
        return Assignment(device, revision, _package_info(row), config, now)

    def desired(self, device: str) -> Assignment | None:
        """The device's desired state, or None when nothing was assigned to it."""
        stmt = (
            select(AssignmentRow, *_PACKAGE_INFO)
            .join(PackageRow, PackageRow.sha256 == AssignmentRow.package_sha256)
            .where(AssignmentRow.device == device)
        )
        with Session(self.engine) as session:
            row = session.execute(stmt).one_or_none()
            if row is None:
                return None
            a = row[0]
            return Assignment(a.device, a.revision, _package_info(row), a.config, a.assigned)

    def report_deploy(
        self,
        device: str,
        *,
        revision: int,
        status: str,
        error: str | None = None,
        model: str | None = None,
        version: str | None = None,
        sha256: str | None = None,
        config_revision: int | None = None,
        config_status: str | None = None,
    ) -> DeployReport:
        """Record what a device reports about its deploys (replacing its previous report); what it
        runs also becomes the sensor's model and version."""
        report = DeployReport(
            device, revision, status, error, model, version, sha256, config_revision, config_status, time.time()
        )
        with self._write_lock, Session(self.engine) as session, session.begin():
            session.merge(DeployReportRow(**dataclasses.asdict(report)))
        if model is not None:
            self.set_sensor(device, model=model, version=version)
        return report

    def deploy_report(self, device: str) -> DeployReport | None:
        """The device's last report, or None."""
        with Session(self.engine) as session:
            row = session.get(DeployReportRow, device)
            return _report(row) if row is not None else None

    def deploy_states(self) -> dict[str, tuple[Assignment | None, DeployReport | None]]:
        """Desired and reported state of every device that has either, by device."""
        out: dict[str, tuple[Assignment | None, DeployReport | None]] = {}
        stmt = select(AssignmentRow, *_PACKAGE_INFO).join(PackageRow, PackageRow.sha256 == AssignmentRow.package_sha256)
        with Session(self.engine) as session:
            for row in session.execute(stmt):
                a = row[0]
                out[a.device] = (Assignment(a.device, a.revision, _package_info(row), a.config, a.assigned), None)
            for r in session.scalars(select(DeployReportRow)):
                out[r.device] = (out.get(r.device, (None, None))[0], _report(r))
        return out


def _report(row: DeployReportRow) -> DeployReport:
    return DeployReport(
        row.device, row.revision, row.status, row.error, row.model, row.version, row.sha256,
        row.config_revision, row.config_status, row.reported,
    )  # fmt: skip


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
