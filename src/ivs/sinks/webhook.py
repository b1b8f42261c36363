"""Webhooks: one HTTP POST per event, signed, through the durable outbox.

    POST <url>
    Content-Type: application/json
    X-Ivs-Sensor: <sensor_id>
    X-Ivs-Event: <kind>                     (count, stop, zone_enter, ...)
    X-Ivs-Seq: <seq>
    X-Ivs-Timestamp: <unix seconds>
    X-Ivs-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

    {"schema": "ivs.event/1", "kind": "stop", "seq": 41, ...}

A receiver recomputes the HMAC over the timestamp, a dot and the raw body with the shared
secret, compares it in constant time, and refuses a timestamp too far from its clock (a
replayed request); `verify` does exactly that. Delivery is the HTTP sink's (`ivs.sinks.http`):
committed to the outbox first, removed on a 2xx, retried with backoff on no answer, 5xx, 408
or 429 (honouring Retry-After), kept on 401/403/404 (the receiver may be fixed), dropped and
counted only when the receiver refuses the event itself (400, 413, 422). Each retry is signed
afresh. Frame records are never posted; `kinds` narrows the events.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Collection

import msgspec

from ivs.errors import ConfigError
from ivs.events import Event, kind_of
from ivs.outbox import Outbox, Pending
from ivs.sinks.http import HttpSink

DEFAULT_TOLERANCE_S = 300.0
"""How old a timestamp `verify` accepts by default: a replayed request is refused after it."""


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The X-Ivs-Signature value of a body sent at `timestamp`."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(
    secret: bytes,
    body: bytes,
    timestamp: str,
    sig: str,
    *,
    now: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent."""
    try:
        age = abs((time.time() if now is None else now) - float(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(signature(secret, timestamp, body), sig)


class WebhookSink(HttpSink):
    """POSTs each event (of `kinds`, or every kind) to `url`, signed with `secret`."""

    def __init__(
        self,
        sensor_id: str,
        outbox: Outbox,
        url: str,
        *,
        secret: bytes,
        kinds: Collection[str] | None = None,
        timeout_s: float = 10,
        max_backoff_s: float = 60,
        ca_file: str | None = None,
    ) -> None:
        if not secret:
            raise ConfigError("webhook sink: an empty secret signs nothing: expected one from secret_env")
        super().__init__(
            sensor_id, outbox, url, batch_size=1, batch_wait_s=0, timeout_s=timeout_s, max_backoff_s=max_backoff_s,
            ca_file=ca_file,
        )  # fmt: skip
        self._secret = secret
        self.kinds = frozenset(kinds) if kinds else None

    def write(self, message: msgspec.Struct) -> None:
        if isinstance(message, Event) and (self.kinds is None or kind_of(message) in self.kinds):
            super().write(message)

    def _request(self, batch: list[Pending]) -> tuple[bytes, dict[str, str]]:
        (item,) = batch
        timestamp = str(int(time.time()))
        headers = {
            **self._headers,
            "X-Ivs-Event": item.topic.removeprefix("events/"),
            "X-Ivs-Seq": str(item.seq),
            "X-Ivs-Timestamp": timestamp,
            "X-Ivs-Signature": signature(self._secret, timestamp, item.payload),
        }
        return item.payload, headers
