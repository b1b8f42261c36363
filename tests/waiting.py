"""One way for a test to wait: on a condition, with a deadline, never a bare sleep."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    what: str = "condition",
    procs: Sequence[subprocess.Popen[Any]] = (),
    poll_s: float = 0.05,
) -> T:
    """Return `predicate()`'s first truthy value, polled until `timeout` seconds have passed.

    Fails with what it waited for, after how long, or as soon as one of `procs` exits (a
    process the condition depends on that died will not make it come true)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: process {p.args!r} exited with {p.returncode}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll_s)
