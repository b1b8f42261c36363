"""Counts aggregated in the database (hourly rollups kept on ingest) and retention, on SQLite
and PostgreSQL: the rollups answer exactly what the raw events say, count each message once
(resent, or stored by two writers at once), survive the pruning of the raw messages, and are
rebuilt for a database from before them."""

from __future__ import annotations

import math
import random
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from ivs import cli
from ivs.consumer import Message
from ivs.hub.retention import RetentionJob
from ivs.hub.store import Retention, Store
from ivs.hub.store.schema import ROLLUP_S
from tests.messages import T0, count, frame, stop
from tests.waiting import wait_for

DAY = 86400


@pytest.fixture()
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


def scene(seed: int = 7, hours: int = 30) -> list[Message]:
    """Counts of three sensors, two apps, two directions and three labels at random times over
    `hours` hours from T0, with stops and frame records between them."""
    rng = random.Random(seed)
    out: list[Message] = []
    for sensor in ("cam-a", "cam-b", "cam-c"):
        for seq in range(1, 401):
            t = T0 + rng.uniform(0, hours * 3600)
            r = rng.random()
            if r < 0.8:
                out.append(
                    count(
                        sensor, seq, t, rng.choice(["in", "out"]), rng.choice(["person", "car", "dog"]),
                        app=rng.choice(["door", "gate"]),
                    )
                )  # fmt: skip
            elif r < 0.9:
                out.append(stop(sensor, seq, t))
            else:
                out.append(frame(sensor, seq, t))
    return out


def by_hand(messages: list[Message], interval: int, sensor=None, app=None, since=None, until=None) -> list[dict]:
    """What `counts` must answer, from the events themselves."""
    buckets: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for m in messages:
        if m.__class__.__name__ != "Count":
            continue
        if (sensor and m.sensor_id != sensor) or (app and m.app != app):
            continue
        if (since is not None and m.time < since) or (until is not None and m.time >= until):
            continue
        buckets[math.floor(m.time / interval)][m.direction][m.label] += 1
    return [
        {
            "start": b * interval,
            "end": (b + 1) * interval,
            "counts": {d: dict(sorted(labels.items())) for d, labels in sorted(by_dir.items())},
        }
        for b, by_dir in sorted(buckets.items())
    ]


def test_hourly_counts_from_the_rollups_match_the_events(store: Store) -> None:
    messages = scene()
    for start in range(0, len(messages), 250):
        store.ingest(messages[start : start + 250])
    counted = sum(1 for m in messages if m.__class__.__name__ == "Count")
    assert store.rollup_total() == counted
    for interval in (3600, 7200, DAY):
        assert store.counts(interval=interval) == by_hand(messages, interval), interval
    # ranges that start and end inside an hour: the part-hours come from the raw messages
    for since, until in ((T0 + 1234.5, T0 + 20 * 3600 + 17), (T0 + 100, T0 + 200), (None, T0 + 5 * 3600 + 1)):
        for sensor, app in ((None, None), ("cam-b", None), ("cam-c", "gate")):
            got = store.counts(interval=3600, sensor=sensor, app=app, since=since, until=until)
            assert got == by_hand(messages, 3600, sensor, app, since, until), (since, until, sensor, app)
    # an interval that is not whole hours reads the messages; it agrees too
    assert store.counts(interval=900, sensor="cam-a") == by_hand(messages, 900, "cam-a")


def test_a_message_stored_again_is_not_counted_again(store: Store) -> None:
    messages = scene(seed=3)
    store.ingest(messages[:600])
    store.ingest(messages[300:900])  # half of it again: a resent batch
    store.ingest(messages[:50] + messages[50:60] + messages[50:60])  # repeats within one batch
    store.ingest(messages)
    assert store.message_count() == len(messages)
    assert store.rollup_total() == sum(1 for m in messages if m.__class__.__name__ == "Count")
    assert store.counts(interval=3600) == by_hand(messages, 3600)


def test_concurrent_writers_on_postgresql_count_each_message_once(postgres_url: str) -> None:
    messages = scene(seed=11)
    stores = [Store(postgres_url) for _ in range(4)]
    errors: list[BaseException] = []

    def write(store: Store, order: int) -> None:
        rng = random.Random(order)
        batches = [messages[s : s + 100] for s in range(0, len(messages), 100)]
        rng.shuffle(batches)  # every writer stores everything, in its own order
        try:
            for batch in batches:
                store.ingest(batch)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert not errors, errors
        assert stores[0].message_count() == len(messages)
        assert stores[0].rollup_total() == sum(1 for m in messages if m.__class__.__name__ == "Count")
        assert stores[0].counts(interval=3600) == by_hand(messages, 3600)
    finally:
        for s in stores:
            s.close()


def test_retention_prunes_messages_and_keeps_the_hourly_counts(store: Store) -> None:
    messages = scene(hours=10 * 24)  # ten days
    store.ingest(messages)
    hourly, total = store.counts(interval=3600), store.rollup_total()
    now = T0 + 10 * DAY
    pruned = store.prune(Retention(messages_days=3, rollups_days=30), now=now)
    kept = [m for m in messages if m.time >= now - 3 * DAY]
    assert pruned.messages == len(messages) - len(kept) > 0 and pruned.rollups == 0
    assert store.message_count() == len(kept)
    assert store.counts(interval=3600) == hourly and store.rollup_total() == total  # the rollups are untouched
    # minutes need the raw messages: only the last three days still answer
    assert store.counts(interval=60) == by_hand(kept, 60)
    # a row bound: the oldest raw messages beyond it go
    store.prune(Retention(max_messages=100), now=now)
    newest = sorted(kept, key=lambda m: m.time)[-100:]
    assert store.message_count() == 100
    assert store.counts(interval=60) == by_hand(newest, 60)
    # rollups older than their own age go, whole hours at a time
    store.prune(Retention(rollups_days=5), now=now)
    cut = math.floor((now - 5 * DAY) / ROLLUP_S) * ROLLUP_S
    assert store.counts(interval=3600, until=now) == by_hand(messages, 3600, since=cut)


def test_retention_prunes_the_audit_log(store: Store) -> None:
    store.audit("alice", "admin", "POST /api/v1/devices", 201, "127.0.0.1")
    assert len(store.audit_log()) == 1
    assert store.prune(Retention(audit_days=1), now=store.audit_log()[0].time + 0.5 * DAY).audit == 0
    assert store.prune(Retention(audit_days=1), now=store.audit_log()[0].time + 2 * DAY).audit == 1
    assert store.audit_log() == []


def test_retention_settings_say_what_was_wrong() -> None:
    with pytest.raises(ValueError, match="messages_days 0: expected a number of days > 0"):
        Retention(messages_days=0)
    with pytest.raises(ValueError, match="rollups_days 2 < messages_days 7"):
        Retention(messages_days=7, rollups_days=2)
    with pytest.raises(ValueError, match="max_messages -1"):
        Retention(max_messages=-1)


def test_a_database_from_before_the_rollups_gets_them_on_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    messages = scene(seed=5)
    old = Store(url)
    old.ingest(messages)
    with old.engine.begin() as conn:  # as a version 3 hub left it: no rollups
        conn.execute(text("DROP TABLE count_rollups"))
        conn.execute(text("UPDATE schema_version SET version = 3"))
    old.close()
    upgraded = Store(url)
    try:
        assert upgraded.schema_version() == 5
        assert upgraded.rollup_total() == sum(1 for m in messages if m.__class__.__name__ == "Count")
        assert upgraded.counts(interval=3600) == by_hand(messages, 3600)
    finally:
        upgraded.close()


def test_ivs_hub_prune_deletes_old_messages_and_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    store = Store(url)
    messages = scene(hours=24)  # T0 is in 2023: all of it is older than a day
    store.ingest(messages)
    hourly = store.counts(interval=3600)
    store.close()
    runner = CliRunner()
    result = runner.invoke(cli.app, ["hub", "prune", "--db", url, "--keep-messages-days", "1"])
    assert result.exit_code == 0, result.output
    assert (
        f"deleted {len(messages)} messages, 0 rollup rows, 0 audit entries, 0 evidence files; 0 messages left"
        in result.output
    )
    after = Store(url)
    try:
        assert after.message_count() == 0 and after.counts(interval=3600) == hourly
    finally:
        after.close()
    refused = runner.invoke(
        cli.app, ["hub", "prune", "--db", url, "--keep-messages-days", "7", "--keep-rollups-days", "2"]
    )
    assert refused.exit_code == 2
    assert "--keep-rollups-days 2.0 < --keep-messages-days 7.0" in refused.output
    nothing = runner.invoke(cli.app, ["hub", "prune", "--db", url])
    assert nothing.exit_code == 2 and "nothing to prune" in nothing.output


def test_the_hubs_retention_job_prunes_at_start_and_keeps_going(store: Store) -> None:
    store.ingest(scene(hours=24))
    total = store.rollup_total()
    job = RetentionJob(store, Retention(messages_days=1), every_s=0.05).start()
    try:
        wait_for(lambda: job.runs >= 1, what="the first run")
        assert store.message_count() == 0 and store.rollup_total() == total
        store.ingest([count("cam-z", 1, T0 + 10)])  # late data from an old outage: pruned by the next run
        wait_for(lambda: store.message_count() == 0, what="a later run")
        assert store.rollup_total() == total + 1
    finally:
        job.close()
