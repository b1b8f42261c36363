"""Sinks: where metadata records go."""

from __future__ import annotations

from typing import Protocol

from ivs.records import FrameRecord


class Sink(Protocol):
    def write(self, record: FrameRecord) -> None: ...

    def close(self) -> None: ...
