"""Enrolment groups: a device with the group's secret gets its identity from the hub itself
(`ivs enrol`), as Azure DPS's symmetric-key enrolment groups do, with no `ivs hub device add`."""

from __future__ import annotations

import contextlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ivs.hub.store.schema import Device, Enrolment, EnrolmentGroup, HubError, check_name, hash_token


class EnrolmentRefused(HubError):
    """An enrolment the hub will not do; `status` is the HTTP status that says why."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class EnrolmentStore:
    """The store's enrolment methods (`Store` has them)."""

    engine: Engine
    _write_lock: contextlib.AbstractContextManager[Any]

    if TYPE_CHECKING:

        def add_device(self, name: str) -> str: ...  # DeviceStore's, beside this in `Store`

    def add_group(self, name: str) -> str:
        """A new enrolment group; returns its secret (the only time it is seen: the hash is kept)."""
        why = check_name(name)
        if why is not None:
            raise HubError(f"group: {why}")
        secret = secrets.token_urlsafe(32)
        with self._write_lock, Session(self.engine) as session, session.begin():
            group = session.get(EnrolmentGroup, name)
            if group is not None and group.revoked is None:
                raise HubError(f"enrolment group {name!r} exists: revoke it first to make a new secret")
            session.merge(EnrolmentGroup(name=name, secret_hash=hash_token(secret), created=time.time(), revoked=None))
        return secret

    def revoke_group(self, name: str) -> bool:
        """No more enrolments through this group (the devices it enrolled stay). False: no such group."""
        with self._write_lock, Session(self.engine) as session, session.begin():
            group = session.get(EnrolmentGroup, name)
            if group is None:
                return False
            group.revoked = group.revoked or time.time()
            return True

    def groups(self) -> list[dict[str, Any]]:
        """Every group with how many devices enrolled through it (never its secret)."""
        with Session(self.engine) as session:
            rows = session.scalars(select(EnrolmentGroup).order_by(EnrolmentGroup.name)).all()
            enrolled = dict(session.execute(select(Enrolment.group, func.count()).group_by(Enrolment.group)).all())
            return [{"name": g.name, "created": g.created, "revoked": g.revoked, "devices": enrolled.get(g.name, 0)}
                    for g in rows]  # fmt: skip

    def enrol(self, group: str, secret: str, device: str, address: str | None = None) -> str:
        """Register `device` through `group` with its secret; returns the device's token (its
        HTTP bearer token and MQTT password). Raises EnrolmentRefused: 401 for an unknown or
        revoked group or a wrong secret (which of them is not said), 409 for a name that is
        active, 403 for a revoked device (revocation sticks: an operator re-adds it), 422 for a
        name that is not a device name."""
        why = check_name(device)
        if why is not None:
            raise EnrolmentRefused(why, 422)
        with Session(self.engine) as session:
            g = session.get(EnrolmentGroup, group) if check_name(group) is None else None
            ok = g is not None and g.revoked is None and hmac.compare_digest(g.secret_hash, hash_token(secret))
            if not ok:
                raise EnrolmentRefused(f"enrolment group {group!r} does not take this secret", 401)
            known = session.scalar(select(Device).where(Device.name == device))
        if known is not None and known.revoked is not None:
            raise EnrolmentRefused(f"device {device!r} was revoked: an operator must add it again", 403)
        if known is not None:
            raise EnrolmentRefused(f"device {device!r} exists and is active: expected a new name", 409)
        token = self.add_device(device)
        with self._write_lock, Session(self.engine) as session, session.begin():
            session.merge(Enrolment(device=device, group=group, time=time.time(), address=address))
        return token
