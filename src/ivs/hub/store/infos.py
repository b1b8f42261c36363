"""What the store hands out: plain, frozen views of its rows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ivs.hub.store.schema import DeployReportRow, PackageRow


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


def _report(row: DeployReportRow) -> DeployReport:
    return DeployReport(
        row.device, row.revision, row.status, row.error, row.model, row.version, row.sha256,
        row.config_revision, row.config_status, row.reported,
    )  # fmt: skip
