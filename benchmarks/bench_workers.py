"""Decisions/s of `evaluate_many` on one core and on several (`workers=N`), with a plain-Python floor.

Run:  .venv/bin/python benchmarks/bench_workers.py [--requests 10000] [--rounds 3] [--workers 2]

In one run, on bench_evaluate.py's seeded request mix: the hand-written plain-Python policy
(no trace, no audit), then batches of `--requests` with `workers=1` and `workers=N`, audit off
and with a SQLite audit trail (one transaction per batch), rounds alternating; each figure is
the best round and the spread of the rounds. Beside the wall clock it gives the CPU seconds
per decision of this process and of the worker processes (from /proc): on a shared machine
the wall-clock speed-up depends on the other jobs, the CPU cost of crossing processes does
not. Then the start-up a first call pays (spawning the workers) and the break-even: batches
of 100 to 2,000 with the pool already running, against one process. Target (issue 11):
>= 1.7x on 2 cores for batches of 10,000.
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

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_of(pids: list[int]) -> float:
    """User + system CPU seconds the processes used so far (/proc/PID/stat)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def worker_pids(engine: Engine) -> list[int]:
    keeper = engine._workers
    return keeper._pool.pids() if keeper is not None and keeper._pool is not None else []


def one_round(engine: Engine, requests: list[dict], workers: int) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds here, CPU seconds in the workers) for one batch."""
    pids = worker_pids(engine)
    here, there = time.process_time(), cpu_of(pids)
    started = time.perf_counter()
    decisions = engine.evaluate_many(requests, workers=workers)
    wall = time.perf_counter() - started
    assert len(decisions) == len(requests)
    return wall, time.process_time() - here, cpu_of(pids) - there


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    requests = make_requests(args.requests)
    n = len(requests)
    print(f"cores: {os.cpu_count()}  load average (1, 5, 15 min) at start: {load()}")

    floor = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        for request in requests:
            baseline(request)
        floor.append(n / (time.perf_counter() - started))

    with tempfile.TemporaryDirectory() as folder:
        sink = open_audit(Path(folder) / "audit.sqlite")
        engines = {"audit off": Engine.from_policy(audit=None), "SQLite audit": Engine.from_policy(audit=sink)}
        started = time.perf_counter()
        engines["audit off"].evaluate_many(requests[:1000], workers=args.workers)
        startup = time.perf_counter() - started
        engines["SQLite audit"]._workers = engines["audit off"]._workers  # one pool for both (same state: none)
        for engine in engines.values():
            engine.evaluate_many(requests[:1000])  # warm both paths
            engine.evaluate_many(requests[:1000], workers=args.workers)
        figures: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        for _ in range(args.rounds):
            for label, engine in engines.items():
                for workers in (1, args.workers):
                    figures.setdefault((label, workers), []).append(one_round(engine, requests, workers))

        print(f"\nbatches of {n:,}, best of {args.rounds} rounds (range); CPU µs per decision: here + in the workers")
        print(f"{'path':<28} {'decisions/s':>12} {'range':>19} {'CPU here':>9} {'workers':>8} {'x floor':>8}")
        best_floor = max(floor)
        print(f"{'plain-Python floor':<28} {best_floor:>12,.0f} {min(floor):>9,.0f}-{max(floor):<9,.0f}")
        rates: dict[tuple[str, int], float] = {}
        for (label, workers), rounds in figures.items():
            walls = [wall for wall, _, _ in rounds]
            best = min(range(len(rounds)), key=lambda i: walls[i])
            _, here, there = rounds[best]
            rates[(label, workers)] = n / walls[best]
            spread = f"{n / max(walls):,.0f}-{n / min(walls):,.0f}"
            name = f"{label}, workers={workers}"
            per = 1e6 / n
            print(
                f"{name:<28} {n / walls[best]:>12,.0f} {spread:>19} {here * per:>9.1f} {there * per:>8.1f}"
                f" {best_floor / (n / walls[best]):>7.1f}x"
            )
        cpu = {key: min(here + there for _, here, there in rounds) for key, rounds in figures.items()}
        for label in engines:
            speedup = rates[(label, args.workers)] / rates[(label, 1)]
            ratio = cpu[(label, args.workers)] / cpu[(label, 1)]
            print(
                f"speed-up, {label}: {speedup:.2f}x wall clock (target >= 1.7x on 2 cores, audit off); "
                f"CPU per decision, all processes: {ratio:.2f}x one process's"
            )
        verified = sink.verify()
        print(f"audit trail: {verified.count:,} records, chain {'ok' if verified.ok else 'BROKEN'}")

        print(f"\nstart-up (first call with workers={args.workers}: spawn, import, compile): {startup:.2f} s")
        print("break-even, pool running, audit off (best of 5):")
        engine = engines["audit off"]
        for size in (100, 250, 500, 1000, 2000):
            batch = requests[:size]
            times = {}
            for workers in (1, args.workers):
                runs = []
                for _ in range(5):
                    started = time.perf_counter()
                    if workers == 1:
                        engine.evaluate_many(batch)
                    else:  # below MIN_BATCH the engine decides in this process: time the workers anyway
                        from protection_rules import workers as module

                        saved, module.MIN_BATCH = module.MIN_BATCH, 1
                        try:
                            engine.evaluate_many(batch, workers=workers)
                        finally:
                            module.MIN_BATCH = saved
                    runs.append(time.perf_counter() - started)
                times[workers] = statistics.median(sorted(runs)[:3])
            print(
                f"  {size:>5}: one process {size / times[1]:>8,.0f}/s   workers={args.workers} {size / times[args.workers]:>8,.0f}/s"
                f"   ({times[1] / times[args.workers]:.2f}x)"
            )
        engines["SQLite audit"]._workers = None
        for engine in engines.values():
            engine.close()
        sink.close()
    print(f"load average at end: {load()}")
    print("command: .venv/bin/python benchmarks/bench_workers.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
