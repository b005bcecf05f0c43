"""whipsaw_protection's `unblocks_at` against a brute-force oracle written from docs/semantics.md."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protection_rules.models import PositionEvent
from protection_rules.protections.whipsaw_protection import unblocks_at

NOW = 1_000


def oracle(events: list[PositionEvent], now: int, period: int, max_cycles: int) -> int | None:
    """docs/semantics.md section 4, whipsaw_protection, read literally: try every instant an event
    of today's window leaves it (`at + period`), in order; at each, take the window
    `(t - period, t]` and walk it; the first with fewer than `max_cycles` cycles is the answer."""
    for t in sorted({e.at + period for e in events if now - period < e.at <= now}):
        cycles, armed = 0, False
        for e in events:
            if t - period < e.at <= t:
                if e.type == "open":
                    armed = True
                elif armed:
                    cycles, armed = cycles + 1, False
        if cycles < max_cycles:
            return t
    return None


# small instants so that ties (several events at one instant) and window edges come up often
event_lists = st.lists(st.tuples(st.integers(0, NOW), st.sampled_from(["open", "close"])), max_size=40).map(
    lambda pairs: [PositionEvent(kind, at) for at, kind in sorted(pairs, key=lambda p: p[0])]
)


@settings(max_examples=500)
@given(events=event_lists, period=st.integers(1, 1_200), max_cycles=st.integers(1, 6))
def test_unblocks_at_equals_the_brute_force_oracle(events, period, max_cycles):
    assert unblocks_at(events, NOW, period, max_cycles) == oracle(events, NOW, period, max_cycles)


def test_events_at_one_instant_leave_together():
    # open, close at 10 and open, close at 20, period 100, now 50: the first cycle leaves at 110
    # with both of its events; from then on one cycle remains, under a limit of 2
    events = [PositionEvent("open", 10), PositionEvent("close", 10), PositionEvent("open", 20), PositionEvent("close", 20)]
    assert unblocks_at(events, 50, 100, 2) == 110
    assert unblocks_at(events, 50, 100, 1) == 120
