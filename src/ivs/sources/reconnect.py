"""Reopening a live source that went away (a camera unplugged, an RTSP server restarted).

A live source that stops delivering is reopened with exponential backoff: `first_s`, doubled
(`factor`) after each failed attempt up to `max_s`, so a camera that is gone for hours costs one
attempt every `max_s` seconds, never a busy loop. `give_up_s` bounds the whole outage (None:
keep trying for as long as the sensor runs, which is what a fixed camera wants).

When frames flow again the source records a `Gap` (when it stopped, when it resumed, about how
many frames were lost); the sensor sends it as a `gap` event (docs/metadata.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from ivs.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Reconnect:
    """How a live source is reopened: exponential backoff, bounded by `max_s` per wait and
    `give_up_s` in all (None: never give up)."""

    first_s: float = 0.5
    max_s: float = 10.0
    factor: float = 2.0
    give_up_s: float | None = None

    def __post_init__(self) -> None:
        if self.first_s <= 0 or self.max_s < self.first_s or self.factor < 1:
            raise ConfigError(
                f"reconnect first_s {self.first_s}, max_s {self.max_s}, factor {self.factor}: "
                "expected 0 < first_s <= max_s and factor >= 1"
            )
        if self.give_up_s is not None and self.give_up_s <= 0:
            raise ConfigError(f"reconnect give_up_s {self.give_up_s}: expected a positive number of seconds or None")

    def delays(self) -> Iterator[float]:
        """The waits before each attempt: first_s, first_s*factor, ... capped at max_s."""
        delay = self.first_s
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_s)


@dataclass(frozen=True)
class Gap:
    """An outage of a live source, known once frames resumed."""

    start: float
    """Wall-clock time of the last frame before the outage (or of the failure, if none came)."""
    end: float
    """Wall-clock time of the first frame after it."""
    frames_lost: int
    """Frames the source would have delivered meanwhile, at its rate (0 when it has none)."""
    attempts: int
    """Reopen attempts it took (the successful one included)."""
    reason: str
    """Why the source stopped (the error, or "end of stream")."""


class Outages:
    """What a live source shares with the sensor about its outages: the gaps not yet reported,
    an event to cut a backoff wait short when the sensor stops, and counters."""

    def __init__(self) -> None:
        self._gaps: deque[Gap] = deque()
        self.interrupted = threading.Event()
        self.disconnects = 0
        self.reconnects = 0
        self.frames_lost = 0

    def add(self, gap: Gap) -> None:
        self.reconnects += 1
        self.frames_lost += gap.frames_lost
        self._gaps.append(gap)

    def take(self) -> list[Gap]:
        """The gaps recorded since the last call (thread-safe: deque pops are atomic)."""
        out = []
        while self._gaps:
            out.append(self._gaps.popleft())
        return out

    def wait(self, seconds: float) -> bool:
        """Sleep `seconds`, or less when interrupted; True when interrupted."""
        return self.interrupted.wait(seconds)


def frames_lost(start: float, end: float, fps: float | None) -> int:
    """Frames a source at `fps` would have delivered strictly between two frames `end - start`
    seconds apart."""
    if not fps or end <= start:
        return 0
    return max(0, round((end - start) * fps) - 1)


def reopen(
    open_once: Callable[[], T | None],
    policy: Reconnect,
    outages: Outages,
    what: str,
    *,
    attempts: int = 0,
    since: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[T, int] | None:
    """Call `open_once()` after each backoff delay until it returns a handle (not None; an
    OSError counts as a failed attempt too).

    attempts, since: the attempts already made in this outage and when it began (monotonic), for
        a source that reopened but failed again before its first frame: the backoff goes on
        growing and `give_up_s` counts from the outage's start.
    clock: the monotonic clock `since` and `give_up_s` are read on (a test passes one that
        `outages.wait` advances, so the schedule is checked exactly, not against a loaded machine).
    Returns (handle, attempts in all), or None when the policy gave up or the wait was interrupted.
    """
    started = clock() if since is None else since
    delays = policy.delays()
    for _ in range(attempts):
        next(delays)
    for delay in delays:
        if policy.give_up_s is not None:
            left = policy.give_up_s - (clock() - started)
            if left <= 0:
                return None
            delay = min(delay, left)
        if outages.wait(delay):
            return None
        attempts += 1
        try:
            handle = open_once()
        except OSError as err:
            log.debug("%s: reopen attempt %d failed: %s", what, attempts, err)
            handle = None
        if handle is not None:
            log.warning("%s: reopened after %d attempts (%.1f s)", what, attempts, clock() - started)
            return handle, attempts
    return None  # pragma: no cover - delays() never ends
