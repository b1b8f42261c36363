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
    count_rollups   start (the hour, epoch seconds), sensor_id, app, direction, label, n: count
                    events per hour, kept on ingest (`ivs.hub.store.counts`)
    evidence        id, sensor_id, event_seq, kind (snapshot/clip), content_type, size, path (under
                    the hub's evidence folder), created, meta (JSON)
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

Upgrades: a database of an older version gets the tables it lacks and its version set when a
Store opens it (2: deploys, 3: enrolment, users and rollouts, 4: count rollups, computed from
the count events already stored, 5: the evidence index); nothing else changes.

`Store.ingest` stores a batch in one transaction (SQLite: one prepared INSERT executed per row;
PostgreSQL: COPY into a temporary table, then one INSERT ... SELECT) and is idempotent on
`(sensor_id, seq)`: storing a message again counts it as a duplicate and changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from ivs.errors import ConfigError
from ivs.hub.store.counts import CountStore, Pruned, Retention
from ivs.hub.store.deploys import DeployStore
from ivs.hub.store.devices import DeviceStore
from ivs.hub.store.enrolments import EnrolmentRefused, EnrolmentStore
from ivs.hub.store.evidence import EvidenceInfo, EvidenceStore
from ivs.hub.store.infos import Assignment, DeployReport, DeviceInfo, PackageInfo, SensorInfo
from ivs.hub.store.messages import check_message, message_kind
from ivs.hub.store.nodes import NodeStore
from ivs.hub.store.rollouts import Health, Rollout, RolloutDevice, RolloutStore
from ivs.hub.store.schema import (
    _SCHEMA_LOCK,
    MAX_NAME,
    NAME_PATTERN,
    SCHEMA_VERSION,
    Base,
    HubError,
    HubNotFound,
    MessageRow,
    SchemaVersion,
    TextRefused,
    check_name,
    check_text,
    hash_token,
)
from ivs.hub.store.users import ROLES, AuditEntry, User, UserStore


def _private_file(path: Path) -> None:
    """Create the SQLite database file readable by its owner only (0600; SQLite gives its -wal
    and -shm files the same mode): it holds token and password hashes and every message."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


class Store(DeviceStore, DeployStore, EnrolmentStore, RolloutStore, NodeStore, UserStore, CountStore, EvidenceStore):
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
        if self.dialect == "sqlite" and parsed.database not in (None, "", ":memory:"):
            _private_file(Path(parsed.database))
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
            if parsed.database in (None, "", ":memory:"):
                kwargs["poolclass"] = StaticPool  # one shared connection, or every thread sees its own empty DB
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(parsed, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        event.listen(self.engine, "before_cursor_execute",
                     lambda conn, cursor, statement, params, context, many: check_text(statement, params))  # fmt: skip
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
        found = self._create_tables()
        if found is not None and found < 4:
            # version 4 added the count rollups: count what was stored before them
            self.rebuild_rollups()

    def _create_tables(self) -> int | None:
        """Create what is missing and set the version; the version found before (None: a new database)."""
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
                # 1 -> 2 -> 3 -> 4 -> 5 only add tables (deploys, enrolment, rollups, evidence), made just now.
                session.execute(update(SchemaVersion).values(version=SCHEMA_VERSION))
            elif found > SCHEMA_VERSION:
                raise ConfigError(
                    f"the hub database has schema version {found}; this ivs knows versions up to {SCHEMA_VERSION}:"
                    " upgrade ivs"
                )
        return found

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with Session(self.engine) as session:
            return int(session.scalar(select(func.max(SchemaVersion.version))) or 0)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


__all__ = [
    "MAX_NAME",
    "NAME_PATTERN",
    "ROLES",
    "SCHEMA_VERSION",
    "Assignment",
    "AuditEntry",
    "DeployReport",
    "DeviceInfo",
    "EnrolmentRefused",
    "EvidenceInfo",
    "Health",
    "HubError",
    "HubNotFound",
    "MessageRow",
    "PackageInfo",
    "Pruned",
    "Retention",
    "Rollout",
    "RolloutDevice",
    "SensorInfo",
    "Store",
    "TextRefused",
    "User",
    "check_message",
    "check_name",
    "hash_token",
    "message_kind",
]
