"""Packages, assignments (the desired state) and deploy reports (the reported state)."""

from __future__ import annotations

import dataclasses
import hashlib
import time

from sqlalchemy import (
    select,
)
from sqlalchemy.orm import Session

from ivs.hub.store.infos import _PACKAGE_INFO, _SHA256_RE, Assignment, DeployReport, PackageInfo, _package_info, _report
from ivs.hub.store.messages import MessageStore
from ivs.hub.store.schema import MAX_NAME, AssignmentRow, DeployReportRow, Device, HubError, HubNotFound, PackageRow


class DeployStore(MessageStore):
    """The store's deploy methods (`Store` has them); reporting a deploy also updates the
    sensors table (`MessageStore.set_sensor`)."""

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
            if _SHA256_RE.fullmatch(ref.lower()):
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
