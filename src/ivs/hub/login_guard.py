"""What stands between the login endpoint and a password-guessing flood.

Each password check costs argon2's 64 MiB and tens of milliseconds: forty anonymous attempts at
once once took the hub to 1.8 GB and its health check to 3.7 s. So:

- at most `concurrent` checks run at a time; the others wait in the event loop (holding no
  worker thread, so /healthz and every other route answer meanwhile), and past `queue_s` they
  are answered 503 with Retry-After;
- failures are counted per user name and per client address: after `free` failures in a row,
  each further attempt must wait `base_s` x 2^(failures - free) seconds (at most `max_s`) after
  the last one; an attempt sooner is answered 429 with Retry-After and costs no check. A success
  clears the user's and the address's counts; an admin lifts a lockout through the API
  (`DELETE /api/v1/login-lockouts`); a restart of the hub clears them all;
- the counts are held for at most `max_keys` names and addresses (the oldest forgotten first),
  so a flood of made-up names cannot grow the hub's memory.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Failures:
    count: int
    last: float


@dataclass(frozen=True)
class Lockout:
    """A user name or an address that must wait before its next attempt."""

    key: str
    """`user:NAME` or `address:IP`."""
    failures: int
    retry_after_s: float


class LoginGuard:
    def __init__(
        self,
        *,
        concurrent: int = 2,
        queue_s: float = 10.0,
        free: int = 5,
        base_s: float = 1.0,
        max_s: float = 900.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.concurrent, self.queue_s = concurrent, queue_s
        self.free, self.base_s, self.max_s, self.max_keys = free, base_s, max_s, max_keys
        self._clock = clock
        self._checks: asyncio.Semaphore | None = None
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def checks(self) -> asyncio.Semaphore:
        """The semaphore bounding concurrent checks (made on first use, in the server's loop)."""
        if self._checks is None:
            self._checks = asyncio.Semaphore(self.concurrent)
        return self._checks

    @staticmethod
    def keys(user: str, address: str | None) -> list[str]:
        return [f"user:{user}"] + ([f"address:{address}"] if address else [])

    def _wait(self, f: _Failures, now: float) -> float:
        if f.count < self.free:
            return 0.0
        delay = min(self.max_s, self.base_s * 2.0 ** min(f.count - self.free, 60))
        return max(0.0, f.last + delay - now)

    def retry_after(self, user: str, address: str | None) -> float:
        """Seconds before this user name from this address may try again (0: now)."""
        now = self._clock()
        with self._lock:
            return max((self._wait(f, now) for k in self.keys(user, address) if (f := self._failures.get(k))),
                       default=0.0)  # fmt: skip

    def failed(self, user: str, address: str | None) -> None:
        now = self._clock()
        with self._lock:
            for key in self.keys(user, address):
                f = self._failures.pop(key, None) or _Failures(0, now)
                f.count, f.last = f.count + 1, now
                self._failures[key] = f  # to the end: the most recent
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, user: str, address: str | None) -> None:
        with self._lock:
            for key in self.keys(user, address):
                self._failures.pop(key, None)

    def lockouts(self) -> list[Lockout]:
        """Every name and address that must wait now, longest wait first."""
        now = self._clock()
        with self._lock:
            waits = [(k, f, self._wait(f, now)) for k, f in self._failures.items()]
        out = [Lockout(k, f.count, math.ceil(w)) for k, f, w in waits if w > 0]
        return sorted(out, key=lambda lo: -lo.retry_after_s)

    def lift(self, key: str) -> bool:
        """Forget `key`'s failures (an admin lifting a lockout); False when it had none."""
        with self._lock:
            return self._failures.pop(key, None) is not None
