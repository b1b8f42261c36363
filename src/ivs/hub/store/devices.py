"""Devices: registration, revocation, bearer-token checks, MQTT credentials."""

from __future__ import annotations

import contextlib
import hmac
import secrets
import time
from typing import Any

from sqlalchemy import (
    Engine,
    delete,
    select,
)
from sqlalchemy.orm import Session

from ivs.hub.passwords import mosquitto_hash
from ivs.hub.store.infos import DeviceInfo
from ivs.hub.store.schema import Device, HubError, MqttCredential, check_name, hash_token


class DeviceStore:
    """The store's device methods (`Store` has them)."""

    engine: Engine
    dialect: str
    _write_lock: contextlib.AbstractContextManager[Any]

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
