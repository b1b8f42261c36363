"""JSON lines to a file or stdout, one record a line, flushed as it is written.

Flushing every line costs a syscall per frame and buys the guarantee that a crash or an
error never loses a record of a frame that was processed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

import msgspec

from ivs.errors import ConfigError
from ivs.records import encode


class JsonlSink:
    def __init__(self, target: str | Path) -> None:
        self.target = str(target)
        self.bytes_written = 0
        self._own = self.target != "-"
        if self._own:
            path = Path(target)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._out: BinaryIO = path.open("ab")
            except OSError as err:
                raise ConfigError(f"cannot write metadata to {path}: {err.strerror}") from None
        else:
            self._out = sys.stdout.buffer

    def write(self, record: msgspec.Struct) -> None:
        line = encode(record) + b"\n"
        self._out.write(line)
        self._out.flush()
        self.bytes_written += len(line)

    def close(self) -> None:
        self._out.flush()
        if self._own:
            self._out.close()
