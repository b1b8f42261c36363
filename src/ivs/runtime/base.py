"""The runner protocol."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Runner(Protocol):
    """Runs one network. `run` takes the input tensor (batch 1) and returns outputs by name."""

    name: str

    def run(self, tensor: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]: ...

    def cancel(self) -> bool:
        """Interrupt a `run` in progress, from another thread: that run raises. False where the
        runtime cannot (the run goes on to its end)."""
        ...

    def close(self) -> None: ...
