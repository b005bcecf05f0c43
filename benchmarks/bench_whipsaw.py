"""A whipsaw-blocked `open` with N events in the window: how the decision's time grows with N.

Run:  .venv/bin/python benchmarks/bench_whipsaw.py [--events 200 2000] [--rounds 5]

For each N: the engine's whole decision (`Engine.evaluate`, audit off: parsing N events, the
cycle count, the rule network and `unblocks_at`), `unblocks_at` alone, the recount it replaced
(one cycle count per candidate leave time, quadratic; kept here as the reference), and a
plain-Python floor (parse the N timestamps and count cycles once) timed in the same run. The
growth column is the time at this N over the time at the first N: linear in N is 10x for 10x
the events, the old quadratic recount was ~58x.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protection_rules import Engine  # noqa: E402
from protection_rules.models import PositionEvent  # noqa: E402
from protection_rules.protections.whipsaw_protection import completed_cycles, in_window, unblocks_at  # noqa: E402
from protection_rules.timestamps import MICROS_PER_DAY, format_instant, parse_instant  # noqa: E402

NOW = parse_instant("2026-03-20T12:00:00Z")
PERIOD = 14 * MICROS_PER_DAY


def request(count: int) -> dict:
    """`count` alternating open/close events spread over the 14-day window, then an `open`."""
    step = (PERIOD - 1) // count
    stamps = [NOW - PERIOD + 1 + i * step for i in range(count)]
    events = [{"type": "open" if i % 2 == 0 else "close", "at": format_instant(t)} for i, t in enumerate(stamps)]
    return {
        "request_id": f"whipsaw-{count}",
        "asset": "AAPL",
        "action": "open",
        "current_date": format_instant(NOW),
        "current_size": 0.0,
        "target_size": 0.05,
        "state": {"events": events},
    }


def recount(events: list[PositionEvent], now: int, period: int, max_cycles: int) -> int | None:
    """The replaced algorithm: recount the cycles once per candidate leave time."""
    window = in_window(events, now, period)
    for leave in sorted({e.at + period for e in window}):
        if completed_cycles([e for e in window if e.at + period > leave]) < max_cycles:
            return leave
    return None


def floor(data: dict) -> int:
    """Plain Python: parse the events' instants and count the cycles once."""
    cycles, armed = 0, False
    for event in data["state"]["events"]:
        parse_instant(event["at"])
        if event["type"] == "open":
            armed = True
        elif armed:
            cycles, armed = cycles + 1, False
    return cycles


def best(fn, rounds: int) -> float:
    """Best of `rounds` timings, each long enough (>= 50 ms) to read, in seconds per call."""
    calls, spent = 1, 0.0
    while spent < 0.05:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        spent = time.perf_counter() - start
        calls *= 2
    calls //= 2
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(
        f"command: .venv/bin/python benchmarks/bench_whipsaw.py --events {' '.join(map(str, args.events))} --rounds {args.rounds}"
    )
    engine = Engine.from_policy(audit=None)
    rows, first = [], {}
    for count in args.events:
        data = request(count)
        decision = engine.evaluate(data)
        assert tuple(decision.blocking_systems) == ("whipsaw_protection",), decision.blocking_systems
        events = [PositionEvent(e["type"], parse_instant(e["at"])) for e in data["state"]["events"]]
        assert unblocks_at(events, NOW, PERIOD, 1) == recount(events, NOW, PERIOD, 1) == decision.unblocks_at
        timed = {
            "decision": best(lambda d=data: engine.evaluate(d), args.rounds),
            "unblocks_at": best(lambda ev=events: unblocks_at(ev, NOW, PERIOD, 1), args.rounds),
            "old recount": best(lambda ev=events: recount(ev, NOW, PERIOD, 1), args.rounds),
            "plain floor": best(lambda d=data: floor(d), args.rounds),
        }
        first = first or timed
        rows.append((count, timed))
    print(f"{'events':>7} {'path':<12} {'time':>10} {'growth':>7} {'x floor':>8}")
    for count, timed in rows:
        for name, seconds in timed.items():
            growth = seconds / first[name]
            print(f"{count:>7} {name:<12} {seconds * 1e3:>8.3f}ms {growth:>6.1f}x {seconds / timed['plain floor']:>7.1f}x")
    print("targets: decision at 2,000 events < 50 ms, growth <= 15x for 10x the events")


if __name__ == "__main__":
    main()
