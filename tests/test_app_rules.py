"""The rules that cut false alerts: a line that counts one direction, a zone entered only from
one side, stationary objects, and apps active on a schedule."""

from __future__ import annotations

from ivs.apps.line import LineCounter
from ivs.apps.zone import Zone, side_entered_from
from ivs.events import ZoneEnter
from tests.test_apps import LINE, SQUARE, ctx, feet_at, walk


def test_a_line_counts_only_its_directions_and_keeps_the_side_of_the_others():
    entries = LineCounter("door", *LINE, directions=frozenset({"in"}))
    events = walk(entries, [*range(400, 250, -10), *range(250, 400, 10), *range(400, 250, -10)])
    assert [e.direction for e in events] == ["in"]  # out, in, out: only the entry
    assert entries.state() == {"in": {"person": 1}, "out": {}}
    exits = LineCounter("door", *LINE, directions=frozenset({"out"}))
    assert [e.direction for e in walk(exits, [*range(400, 250, -10), *range(250, 400, 10)])] == ["out"]


def test_the_side_an_entry_came_from():
    assert side_entered_from((90, 200), (110, 205)) == "left"
    assert side_entered_from((310, 200), (290, 190)) == "right"
    assert side_entered_from((200, 90), (205, 110)) == "top"
    assert side_entered_from((200, 310), (195, 290)) == "bottom"


def test_a_zone_entered_only_from_the_left_ignores_the_other_ways_in():
    # SQUARE is 100..300 on both axes
    def visit(zone: Zone, path: list[tuple[float, float]], tid: int, start: int) -> list:
        events = []
        for k, (x, y) in enumerate(path):
            events += zone.update(ctx(start + k, [feet_at(x, y)], ids=[tid]))
        for k in range(10):  # gone: it leaves
            events += zone.update(ctx(start + len(path) + k))
        return events

    zone = Zone("shelf", SQUARE, enter_frames=2, leave_frames=3, enter_from=frozenset({"left"}))
    from_left = visit(zone, [(60 + 20 * k, 200) for k in range(8)], tid=1, start=0)
    from_right = visit(zone, [(340 - 20 * k, 200) for k in range(8)], tid=2, start=100)
    from_top = visit(zone, [(200, 60 + 20 * k) for k in range(8)], tid=3, start=200)
    appeared_inside = visit(zone, [(200, 200)] * 8, tid=4, start=300)
    assert [type(e).__name__ for e in from_left] == ["ZoneEnter", "ZoneLeave"]
    assert from_right == from_top == appeared_inside == []
    assert zone.entered == 1
    # the one from the right was inside meanwhile, and never counted in the occupancy
    anyway = Zone("shelf", SQUARE, enter_frames=2, leave_frames=3)
    assert type(visit(anyway, [(340 - 20 * k, 200) for k in range(8)], tid=2, start=0)[0]) is ZoneEnter
