"""The hub database's tables (SQLAlchemy), its schema version, names and tokens."""

from __future__ import annotations

import hashlib
import re

from sqlalchemy import (
    BigInteger,
    Boolean,
    Double,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ivs.errors import IvsError

SCHEMA_VERSION = 5
"""The version of the tables below; `schema_version` in the database says which one it has."""

MAX_NAME = 128
"""The longest sensor_id / device name / app name the hub stores."""
_INT64 = 2**63 - 1
_SCHEMA_LOCK = 0x1F5_0001
"""The PostgreSQL advisory lock key `create_schema` holds (any constant no other program uses)."""
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
"""What a device name (= the sensor_id it posts as) may look like: it is also an MQTT topic level
and a word in Mosquitto's password and ACL files, so no whitespace, no control character, no '/',
'#' or '+'. The one definition: pydantic fields and path parameters take it as `pattern` (its `$`
is the end of the text there), Python code calls `check_name`, which matches it whole."""
_NAME_RE = re.compile(NAME_PATTERN.removeprefix("^").removesuffix("$"))
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite only auto-increments INTEGER PRIMARY KEY


class HubError(IvsError):
    """A hub operation was refused (an unknown device, a name in use, ...)."""


class TextRefused(HubError, ValueError):
    """Text no database of the hub's can hold the same way: a NUL character (PostgreSQL refuses
    it, SQLite keeps it) or an unpaired surrogate (not UTF-8 at all)."""


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def check_text(statement: object, parameters: object) -> None:
    """Refuse (TextRefused) a statement whose parameters hold text `_UNSTORABLE` matches: checked
    on every statement, before the database sees it, so both databases answer alike."""
    stack = [parameters]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                raise TextRefused("text with a NUL character or an unpaired surrogate: expected plain text")
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)


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


ROLLUP_S = 3600
"""The rollups' bucket: an hour (aligned to multiples of 3600 s since the epoch)."""
FLEET = ""
"""The rollups' sensor_id of the whole fleet's rows (no sensor has an empty name)."""


class CountRollup(Base):
    """`count` events per hour, sensor, app, direction and label, kept on ingest (exactly once:
    only messages the ingest newly stored add to it) and kept after the raw messages are pruned.
    Each count is also in the fleet's row (sensor_id `FLEET`): a query over every sensor reads
    a row per hour and label, not one per sensor too."""

    __tablename__ = "count_rollups"
    __table_args__ = (Index("ix_count_rollups_sensor_start", "sensor_id", "start"),)

    start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sensor_id: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    app: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    direction: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    label: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class EvidenceRow(Base):
    """A snapshot or clip a sensor uploaded; its bytes are a file under the hub's evidence folder."""

    __tablename__ = "evidence"
    __table_args__ = (
        Index("ix_evidence_sensor_seq", "sensor_id", "event_seq"),
        Index("ix_evidence_created", "created"),
    )

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    sensor_id: Mapped[str] = mapped_column(String(MAX_NAME))
    event_seq: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """The event it shows (sensor_id, seq); None for a range the hub asked for."""
    kind: Mapped[str] = mapped_column(String(16))
    """"snapshot" or "clip"."""
    content_type: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(512))
    """Relative to the evidence folder."""
    created: Mapped[float] = mapped_column(Double)
    meta: Mapped[str] = mapped_column(Text)
    """What the sensor said about it (JSON): event kind, app, frames, times, policy, redaction."""


class SensorRow(Base):
    """What the hub knows about one sensor: availability, what it runs, how far it got."""

    __tablename__ = "sensors"

    sensor_id: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[float | None] = mapped_column(Double, default=None)
    model: Mapped[str | None] = mapped_column(String(256), default=None)
    version: Mapped[str | None] = mapped_column(String(128), default=None)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class EnrolmentGroup(Base):
    """A shared secret new devices enrol with (`ivs enrol`), instead of `ivs hub device add`."""

    __tablename__ = "enrolment_groups"

    name: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created: Mapped[float] = mapped_column(Double)
    revoked: Mapped[float | None] = mapped_column(Double, default=None)


class Enrolment(Base):
    """Which group a device enrolled through, and when."""

    __tablename__ = "enrolments"

    device: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    group: Mapped[str] = mapped_column(String(MAX_NAME))
    time: Mapped[float] = mapped_column(Double)
    address: Mapped[str | None] = mapped_column(String(64), default=None)


class DeviceTag(Base):
    """A device's tags (`site = berlin`), which deployments and rollouts target."""

    __tablename__ = "device_tags"

    device: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class SensorHealth(Base):
    """What a sensor last said about its health on its retained state topic."""

    __tablename__ = "sensor_health"

    sensor: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    fps: Mapped[float] = mapped_column(Double)
    frames: Mapped[int] = mapped_column(BigInteger)
    dropped: Mapped[int] = mapped_column(BigInteger)
    model: Mapped[str | None] = mapped_column(String(256), default=None)
    version: Mapped[str | None] = mapped_column(String(128), default=None)
    time: Mapped[float] = mapped_column(Double)


class RolloutRow(Base):
    """A staged rollout of a package to the devices a condition on tags selects (`ivs.hub.rollouts`)."""

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME), unique=True)
    package: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(1024))
    waves: Mapped[str] = mapped_column(String(256))
    gate_s: Mapped[float] = mapped_column(Double)
    min_fps_ratio: Mapped[float] = mapped_column(Double)
    priority: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))
    wave: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    created: Mapped[float] = mapped_column(Double)
    updated: Mapped[float] = mapped_column(Double)


class RolloutDeviceRow(Base):
    """One device of a rollout: its wave, what it ran before, how it is doing."""

    __tablename__ = "rollout_devices"

    rollout: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    device: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer)
    previous: Mapped[str | None] = mapped_column(String(64), default=None)
    revision: Mapped[int | None] = mapped_column(BigInteger, default=None)
    state: Mapped[str] = mapped_column(String(32))
    baseline_fps: Mapped[float | None] = mapped_column(Double, default=None)
    healthy_since: Mapped[float | None] = mapped_column(Double, default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)


class NodeConfigRow(Base):
    """The site file the hub wants a node (`ivs node`) to run, by revision."""

    __tablename__ = "node_configs"

    device: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text)
    assigned: Mapped[float] = mapped_column(Double)


class NodeReportRow(Base):
    """What a node last reported: the site revision it applied (or why not) and its sensors' health."""

    __tablename__ = "node_reports"

    device: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, default=None)
    sensors: Mapped[str] = mapped_column(Text)
    reported: Mapped[float] = mapped_column(Double)


class UserRow(Base):
    """A person who uses the hub: a role (viewer, operator, admin) and an argon2 password hash."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(256), default=None)
    created: Mapped[float] = mapped_column(Double)
    disabled: Mapped[float | None] = mapped_column(Double, default=None)


class ApiTokenRow(Base):
    """A user's API token: a role (at most the user's), an expiry, revocable; only its sha256 kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(MAX_NAME))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created: Mapped[float] = mapped_column(Double)
    expires: Mapped[float | None] = mapped_column(Double, default=None)
    revoked: Mapped[float | None] = mapped_column(Double, default=None)


class SessionRow(Base):
    """A dashboard login: the session cookie's sha256, its user, when it ends."""

    __tablename__ = "sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(MAX_NAME))
    created: Mapped[float] = mapped_column(Double)
    expires: Mapped[float] = mapped_column(Double)


class AuditRow(Base):
    """One thing someone did on the hub: who, what, when, from where, and how it ended."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_time", "time"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    time: Mapped[float] = mapped_column(Double)
    who: Mapped[str] = mapped_column(String(MAX_NAME + 16))
    role: Mapped[str | None] = mapped_column(String(16), default=None)
    action: Mapped[str] = mapped_column(String(256))
    status: Mapped[int] = mapped_column(Integer)
    address: Mapped[str | None] = mapped_column(String(64), default=None)


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


def hash_token(token: str) -> str:
    """sha256 hex digest of a bearer token: what the devices table keeps."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str | None:
    """Why `name` cannot be a device name / sensor_id, or None when it can."""
    # fullmatch, not match: re's "$" also matches before a final newline, and "cam\n" written
    # into Mosquitto's ACL once switched its ACL off.
    if not _NAME_RE.fullmatch(name):
        return (
            f"invalid name {name[:MAX_NAME]!r}: expected 1 to {MAX_NAME} characters of letters, digits, '_', '.', '-',"
            " starting with a letter or digit"
        )
    return None
