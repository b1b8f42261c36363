"""Sinks: where metadata records go."""

from __future__ import annotations

from typing import Protocol

import msgspec


class Sink(Protocol):
    """Receives every message of a sensor, in order: frame records and events."""

    def write(self, record: msgspec.Struct) -> None: ...

    def close(self) -> None: ...
