"""Part j of `ivs bench`: counts at fleet scale, into SQLite and PostgreSQL.

`events` count events (2,000,000 in the full run) from `SENSORS` sensors over `DAYS` days, in
time order, in batches through `Store.ingest` (which keeps the hourly rollups). Then:

- the hourly count over the whole range (`Store.counts(interval=3600)`), `QUERY_RUNS` times
  (median and worst), against the target of 200 ms; and the same hours read from the raw
  messages once, the way every count query went before the rollups;
- one retention run as a hub would do it (`Retention(messages_days=KEEP_DAYS,
  max_messages=MAX_MESSAGES)`, at the end of the range): the messages and the database's data
  (`Store.database_bytes`) before and after, the rollups' total before and after, and whether
  the hourly answer is unchanged;
- a further `KEEP_DAYS` of events at the same rate, pruned again: the database's data then
  (PostgreSQL keeps a table's file at its largest and fills the space VACUUM freed; SQLite
  reuses its free pages the same way), which stays where it was if retention holds the bound.

    python -m ivs.bench.counts --events 2000000     # part j alone, a Markdown table
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ivs.bench.results import CountsRow
from ivs.localnet import LocalPostgres, postgres_bin

SENSORS = 100
DAYS = 30
KEEP_DAYS = 7.0
"""Raw messages kept by the retention run: a week."""
MAX_MESSAGES = 1_000_000
"""... and at most this many (the bound the retention run must keep the database within)."""
QUERY_RUNS = 5
TARGET_MS = 200.0
BATCH = 5_000
LABELS = ("person", "person", "person", "car", "bicycle")


def _events(n: int, start: float, end: float, seqs: list[int], seed: int = 1) -> Any:
    """`n` count events of `SENSORS` sensors from `start` to `end`, oldest first, in batches of
    `BATCH`; `seqs`: each sensor's last seq, advanced."""
    from ivs.events import Count

    rng = random.Random(seed)
    step = (end - start) / n
    batch: list[Count] = []
    for i in range(n):
        s = rng.randrange(SENSORS)
        seqs[s] += 1
        t = start + i * step
        label = rng.choice(LABELS)
        batch.append(
            Count(
                sensor_id=f"store-{s:03d}", seq=seqs[s], frame=seqs[s], time=t, t_capture_ns=int(t * 1e9),
                t_source=0.0, app="door" if s % 4 else "gate", track_id=i, class_id=0, label=label,
                direction="in" if rng.random() < 0.5 else "out", anchor_from=(1.0, 2.0), anchor_to=(1.0, 3.0),
                totals={},
            )
        )  # fmt: skip
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def bench_counts(events: int, url: str, database: str, log: Callable[[str], None] = print) -> CountsRow:
    """Part j on one database (see the module's docstring)."""
    from ivs.hub.store import Retention, Store

    end = math.floor(time.time() / 3600) * 3600 - KEEP_DAYS * 86400
    seqs = [0] * SENSORS
    retention = Retention(messages_days=KEEP_DAYS, max_messages=MAX_MESSAGES)
    store = Store(url)
    try:
        t0 = time.perf_counter()
        for batch in _events(events, end - DAYS * 86400, end, seqs):
            store.ingest(batch)
        ingest_s = time.perf_counter() - t0
        log(f"j. counts ({database}): {events} events stored in {ingest_s:.1f} s")
        times: list[float] = []
        hourly: list[dict[str, Any]] = []
        for _ in range(QUERY_RUNS):
            t0 = time.perf_counter()
            hourly = store.counts(interval=3600)
            times.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        from_messages = store.counts(interval=3600, from_messages=True)  # the old way, for comparison
        raw_ms = (time.perf_counter() - t0) * 1000
        before = (store.message_count(), store.database_bytes(), store.rollup_total())
        t0 = time.perf_counter()
        store.prune(retention, now=end)
        prune_s = time.perf_counter() - t0
        after = (store.message_count(), store.database_bytes(), store.rollup_total())
        unchanged = store.counts(interval=3600) == hourly == from_messages
        # a further week at the same rate, pruned again: the freed space is used again
        week = round(events * KEEP_DAYS / DAYS)
        for batch in _events(week, end, end + KEEP_DAYS * 86400, seqs, seed=2):
            store.ingest(batch)
        store.prune(retention, now=end + KEEP_DAYS * 86400)
        steady = store.database_bytes()
    finally:
        store.close()
    return CountsRow(
        database=database, events=events, sensors=SENSORS, days=DAYS, ingest_s=round(ingest_s, 2),
        hourly_query_ms=round(statistics.median(times), 1), hourly_query_max_ms=round(max(times), 1),
        raw_query_ms=round(raw_ms, 1), target_ms=TARGET_MS, keep_days=KEEP_DAYS, max_messages=MAX_MESSAGES,
        messages_before=before[0], messages_after=after[0], data_mib_before=round(before[1] / 2**20, 1),
        data_mib_after=round(after[1] / 2**20, 1), data_mib_week_later=round(steady / 2**20, 1),
        prune_s=round(prune_s, 2), rollup_total_before=before[2],
        rollup_total_after=after[2], hourly_unchanged=unchanged,
    )  # fmt: skip


def bench_counts_all(events: int, log: Callable[[str], None] = print) -> list[CountsRow]:
    """Part j into a fresh SQLite file and a fresh database on a throw-away PostgreSQL."""
    rows: list[CountsRow] = []
    with tempfile.TemporaryDirectory(prefix="ivs-bench-counts-") as tmp:
        rows.append(bench_counts(events, f"sqlite:///{Path(tmp) / 'counts.sqlite'}", "sqlite (file)", log))
    database = "postgresql (local server, fsync off)"
    if postgres_bin() is None:
        why = "no PostgreSQL server programs (initdb, postgres) here: scripts/install-system-deps.sh"
        rows.append(CountsRow(database=database, events=events, sensors=SENSORS, days=DAYS, absent=why))
        return rows
    with LocalPostgres() as pg:
        rows.append(bench_counts(events, pg.url, database, log))
    return rows


def markdown(rows: list[CountsRow]) -> list[str]:
    """Part j as a Markdown table."""
    head = (
        "| database | events | hourly query, whole range (median / worst) | from raw messages | retention: messages"
        " | data MiB (a week later) | rollup total | hourly answer |"
    )
    lines = [head, "| " + " | ".join(["---"] * 8) + " |"]
    for r in rows:
        if r.absent:
            lines.append(f"| {r.database} | {r.events:,} | {r.absent} | | | | | |")
            continue
        lines.append(
            f"| {r.database} | {r.events:,} ({r.sensors} sensors, {r.days} days) | {r.hourly_query_ms} / "
            f"{r.hourly_query_max_ms} ms | {r.raw_query_ms} ms | {r.messages_before:,} -> {r.messages_after:,} "
            f"(<= {r.max_messages:,}, {r.keep_days:g} days) | {r.data_mib_before} -> {r.data_mib_after} "
            f"({r.data_mib_week_later}) | "
            f"{r.rollup_total_before:,} -> {r.rollup_total_after:,} | "
            f"{'unchanged' if r.hourly_unchanged else 'CHANGED'} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    args = parser.parse_args(argv)
    sys.stdout.write("\n".join(markdown(bench_counts_all(args.events))) + "\n")


if __name__ == "__main__":
    main()
