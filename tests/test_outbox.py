"""The durable outbox: committed before sending, removed on acknowledgement, bounded."""

from __future__ import annotations

from pathlib import Path

from ivs.outbox import Outbox


def test_messages_survive_reopening_and_seq_continues(tmp_path: Path):
    path = tmp_path / "box.sqlite"
    box = Outbox(path)
    assert [box.put("t", b"a"), box.put("t", b"b"), box.put("t", b"c")] == [1, 2, 3]
    box.ack([1])
    box.close()  # as if the process died here: nothing is kept in memory only
    box = Outbox(path)
    assert [(p.seq, p.payload) for p in box.pending()] == [(2, b"b"), (3, b"c")]
    assert box.last_seq() == 3 and box.put("t", b"d") == 4


def test_given_seq_is_kept_and_advances_the_counter(tmp_path: Path):
    box = Outbox(tmp_path / "b.sqlite")
    box.put("t", b"x", seq=41)
    assert box.last_seq() == 41 and box.next_seq() == 42


def test_pending_after_and_limit(tmp_path: Path):
    box = Outbox(tmp_path / "b.sqlite")
    for i in range(10):
        box.put("t", bytes([i]))
    assert [p.seq for p in box.pending(limit=3, after=4)] == [5, 6, 7]


def test_bounded_sheds_the_oldest_and_counts_them(tmp_path: Path):
    box = Outbox(tmp_path / "b.sqlite", max_messages=5)
    for i in range(8):
        box.put("t", bytes([i]))
    assert box.depth() == 5 and box.shed == 3
    assert [p.seq for p in box.pending()] == [4, 5, 6, 7, 8]
    box.close()
    assert Outbox(tmp_path / "b.sqlite", max_messages=5).shed == 3
