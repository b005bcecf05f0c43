"""Decisions/s with the SQLite audit trail on, against audit off and a plain-Python floor.

Run:  .venv/bin/python benchmarks/bench_audit_path.py [--requests 10000] [--rounds 3] [--single 300] [--dir DIR]

In one run, on bench_evaluate.py's seeded request mix: the hand-written plain-Python policy
(no trace, no audit), `evaluate_many` with audit off and with a SQLite audit trail (batches of
1,000: one transaction and one fsync per batch), and single `evaluate` calls with the audit
trail on (one transaction, so one fsync, per decision) next to the bare cost of one small
write + fsync in the same folder. Rounds alternate audit off and on; each figure is the best
round (this machine is shared: the ratio is what compares across runs). Targets (issue 11):
audit on >= 10,000 decisions/s and >= 0.5 of audit off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_evaluate import baseline, make_requests  # noqa: E402

from protection_rules import Engine  # noqa: E402
from protection_rules.audit import open_audit  # noqa: E402

BATCH = 1000


def batched(engine: Engine, requests: list[dict]) -> float:
    """Seconds to decide `requests` in batches of BATCH."""
    started = time.perf_counter()
    for start in range(0, len(requests), BATCH):
        engine.evaluate_many(requests[start : start + BATCH])
    return time.perf_counter() - started


def best_rounds(off: Engine, requests: list[dict], rounds: int, folder: Path) -> dict[str, float]:
    """Best seconds for all `requests`: the plain-Python floor, audit off (`off`), SQLite audit on.

    Rounds alternate the three, so a burst of load elsewhere hits them alike."""
    times: dict[str, list[float]] = {"floor": [], "off": [], "on": []}
    for round_ in range(rounds):
        started = time.perf_counter()
        for request in requests:
            baseline(request)
        times["floor"].append(time.perf_counter() - started)
        times["off"].append(batched(off, requests))
        with Engine.from_policy(audit=open_audit(folder / f"batch-{round_}.sqlite")) as engine:
            engine.evaluate_many(requests[:BATCH])  # warm up: schema created, caches filled
            times["on"].append(batched(engine, requests))
    return {name: min(values) for name, values in times.items()}


def fsync_seconds(folder: Path, count: int) -> list[float]:
    """The bare cost of what bounds a durable single decision: append ~3 KB, fsync."""
    times = []
    with open(folder / "fsync.probe", "ab") as probe:
        for _ in range(count):
            started = time.perf_counter()
            probe.write(b"x" * 3000)
            probe.flush()
            os.fsync(probe.fileno())
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single", type=int, default=300, help="single evaluate calls with audit on")
    parser.add_argument("--dir", default=None, help="where the audit logs go (default: a temporary folder)")
    parser.add_argument("--page-size", type=int, default=None, help="pages of the new logs (default: the sink's PAGE_SIZE)")
    args = parser.parse_args()
    if args.page_size:
        from protection_rules.audit import sqlite

        sqlite.PAGE_SIZE = args.page_size
    print(
        f"command: .venv/bin/python benchmarks/bench_audit_path.py --requests {args.requests} --rounds {args.rounds} --single {args.single}"
        + (f" --page-size {args.page_size}" if args.page_size else "")
    )
    requests = make_requests(args.requests)
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        folder = Path(name)
        off = Engine.from_policy(audit=None)
        rate = {name: len(requests) / seconds for name, seconds in best_rounds(off, requests, args.rounds, folder).items()}
        print(f"{'path':<44} {'decisions/s':>12} {'us/decision':>12} {'x floor':>8}")
        for label, key in (
            ("plain-Python floor (no trace, no audit)", "floor"),
            ("evaluate_many, audit off, batches of 1,000", "off"),
            ("evaluate_many, SQLite audit, batches of 1,000", "on"),
        ):
            print(f"{label:<44} {rate[key]:>12,.0f} {1e6 / rate[key]:>12.1f} {rate['floor'] / rate[key]:>8.1f}")
        print(f"audit on / audit off: {rate['on'] / rate['off']:.2f} (target >= 0.5; >= 10,000/s)")

        # single decisions: audit off; audit on without the fsync (synchronous=OFF, not durable:
        # for comparison only); audit on as shipped. The difference of the last two is durability.
        single = {"off": single_latency(off, requests, args.single)}
        for durable in (False, True):
            with Engine.from_policy(audit=open_audit(folder / f"single-{durable}.sqlite")) as engine:
                if not durable:
                    engine.audit._writer().execute("PRAGMA synchronous=OFF")  # type: ignore[union-attr]
                single["durable" if durable else "no fsync"] = single_latency(engine, requests, args.single)
        sync = statistics.median(fsync_seconds(folder, args.single))
        print("single evaluate (median latency):")
        for label, key in (
            ("audit off", "off"),
            ("SQLite audit, synchronous=OFF (no fsync)", "no fsync"),
            ("SQLite audit, as shipped (one fsync)", "durable"),
        ):
            print(f"  {label:<42} {single[key] * 1e6:>8.0f} us  {1 / single[key]:>8,.0f}/s")
        print(f"  a bare 3 KB write + fsync in the same folder {sync * 1e6:>8.0f} us")


def single_latency(engine: Engine, requests: list[dict], count: int) -> float:
    engine.evaluate(requests[0])
    latencies = []
    for request in requests[1 : count + 1]:
        started = time.perf_counter()
        engine.evaluate(request)
        latencies.append(time.perf_counter() - started)
    return statistics.median(latencies)


if __name__ == "__main__":
    main()
