"""Mosquitto 2's password hash (`$7$`, PBKDF2-SHA512), written and checked here so the hub can
keep each device's MQTT password hash beside its token hash (ivs.hub.store) and write
Mosquitto's password file (ivs.hub.mqtt_auth) without calling `mosquitto_passwd`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ITERATIONS = 101
"""mosquitto_passwd's default. The passwords are 256-bit random tokens, not words a person chose:
nothing is gained by a slower hash, and Mosquitto computes it on every CONNECT."""
_SALT_BYTES = 12


def mosquitto_hash(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """`password` hashed the way Mosquitto 2 checks it: `$7$<iterations>$<salt b64>$<sha512 b64>`."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_mosquitto_hash(password: str, hashed: str) -> bool:
    """Whether `hashed` (a `$7$` line from a Mosquitto password file) is the hash of `password`."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt, want = base64.b64decode(parts[3], validate=True), base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]), len(want))
    return hmac.compare_digest(got, want)


__all__ = ["ITERATIONS", "check_mosquitto_hash", "mosquitto_hash"]
