"""The soak's results (`python -m ivs.bench.soak`): what the soaked sensor says of itself, and
its process's resident set, open descriptors and threads over the run."""

from __future__ import annotations

import msgspec


class SoakSensor(msgspec.Struct, kw_only=True):
    """The soak sensor's own summary, printed as one JSON line when it stops."""

    frames_read: int
    frames_processed: int
    dropped: int
    events: int
    last_seq: int
    loops: int
    seconds: float


class RssFigures(msgspec.Struct, kw_only=True):
    start: float
    after_warmup: float
    end: float
    max_after_warmup: float
    growth_pct: float
    max_growth_pct: float


class CountFigures(msgspec.Struct, kw_only=True):
    """Open descriptors or threads: at the start, over the measured part, at the end."""

    start: int
    min_after_warmup: int
    end: int
    max_after_warmup: int


class SoakFigures(msgspec.Struct, kw_only=True):
    rss_mib: RssFigures
    fds: CountFigures
    threads: CountFigures
    samples: int
