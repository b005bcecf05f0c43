"""Issue 11's table in one run: every speed row, its target, and its ratio to a plain-Python floor.

Run:  .venv/bin/python benchmarks/bench_speed.py [--requests 10000] [--rounds 3] [--rss 100000] [--cold-runs 10]

Each row is timed next to a floor measured in the same run (this machine is shared and noisy:
the ratio is what compares across runs, the absolute figure is what the target names):
- `evaluate_many`, audit off and with a SQLite audit trail (batches of 1,000; best of the
  rounds, which alternate), against bench_evaluate.py's plain-Python policy (no trace, no
  validation, no audit) on the same seeded requests;
- single `evaluate` with the audit trail on (one durable transaction each; median), against a
  bare 3 KB write + fsync in the same folder;
- a whipsaw-blocked open with 200 and 2,000 events in the window (bench_whipsaw.py);
- a cold `protect evaluate --no-audit` of one request (bench_cold.py), against `python -c pass`;
- peak RSS after --rss decisions (bench_rss.py, each side in a fresh process; the issue's
  figure is for 1,000,000: `bench_rss.py` alone runs that);
then where the time of one audit-off decision goes, by module (cProfile's own time, so the
shares are indicative: profiling slows small functions most).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_cold  # noqa: E402
import bench_whipsaw  # noqa: E402
from bench_audit_path import BATCH, best_rounds, fsync_seconds, single_latency  # noqa: E402
from bench_evaluate import make_requests  # noqa: E402

from protection_rules import Engine  # noqa: E402
from protection_rules.audit import open_audit  # noqa: E402


def row(path: str, figure: str, target: str, ratio: float | None, met: bool | None) -> None:
    ratio_text = f"{ratio:.1f}x" if ratio is not None else ""
    verdict = {True: "met", False: "NOT met", None: ""}[met]
    print(f"{path:<46} {figure:>24} {target:>26} {ratio_text:>9}  {verdict}")


def batch_rows(requests: list[dict], rounds: int, folder: Path) -> float:
    """The two evaluate_many rows; returns the floor's seconds per decision."""
    best = best_rounds(Engine.from_policy(audit=None), requests, rounds, folder)
    per = {name: seconds / len(requests) for name, seconds in best.items()}
    rate = {name: 1 / seconds for name, seconds in per.items()}
    row(
        "evaluate_many, audit off",
        f"{per['off'] * 1e6:.1f} us, {rate['off']:,.0f}/s",
        ">= 20,000/s, <= 10x floor",
        per["off"] / per["floor"],
        rate["off"] >= 20_000 and per["off"] / per["floor"] <= 10,
    )
    share = rate["on"] / rate["off"]
    row(
        "evaluate_many, SQLite audit on",
        f"{per['on'] * 1e6:.1f} us, {rate['on']:,.0f}/s",
        ">= 10,000/s, >= 0.5 of off",
        per["on"] / per["floor"],
        rate["on"] >= 10_000 and share >= 0.5,
    )
    print(f"{'':<46} {f'{share:.2f} of audit off':>24}")
    return per["floor"]


def single_row(requests: list[dict], count: int, folder: Path) -> None:
    with Engine.from_policy(audit=open_audit(folder / "single.sqlite")) as engine:
        latency = single_latency(engine, requests, count)
    sync = statistics.median(fsync_seconds(folder, count))
    row(
        "single evaluate, audit on (one fsync each)",
        f"{latency * 1e6:.0f} us, {1 / latency:,.0f}/s",
        "as durability allows",
        None,
        None,
    )
    print(f"{'':<46} {f'bare write+fsync {sync * 1e6:.0f} us':>24} {'':>26} {latency / sync:>8.1f}x  (of the fsync)")


def whipsaw_rows(rounds: int) -> None:
    engine = Engine.from_policy(audit=None)
    timed = {}
    for count in (200, 2000):
        data = bench_whipsaw.request(count)
        timed[count] = (
            bench_whipsaw.best(lambda d=data: engine.evaluate(d), rounds),
            bench_whipsaw.best(lambda d=data: bench_whipsaw.floor(d), rounds),
        )
    growth = timed[2000][0] / timed[200][0]
    row(
        "whipsaw-blocked open, 200 / 2,000 events",
        f"{timed[200][0] * 1e3:.1f} / {timed[2000][0] * 1e3:.1f} ms",
        "< 50 ms, <= 15x growth",
        timed[2000][0] / timed[2000][1],
        timed[2000][0] < 0.05 and growth <= 15,
    )
    print(f"{'':<46} {f'{growth:.1f}x for 10x the events':>24}")


def cold_row(runs: int) -> None:
    commands = bench_cold.COMMANDS
    for command in commands.values():  # the bytecode caches the timed runs read
        subprocess.run(command, capture_output=True, check=False, env=bench_cold.ENV, cwd=ROOT)
    bare, _ = bench_cold.wall(commands["python -c pass"], runs)
    median, least = bench_cold.wall(commands["protect evaluate --no-audit"], runs)
    row(
        "cold protect evaluate --no-audit",
        f"{median * 1e3:.0f} ms (min {least * 1e3:.0f})",
        "< 0.15 s",
        median / bare,
        median < 0.15,
    )
    print(f"{'':<46} {f'python -c pass {bare * 1e3:.0f} ms':>24} {'':>26} {'':>9}  (ratio: to python -c pass)")


def rss_row(decisions: int) -> None:
    peaks = {}
    for side in ("plain", "engine"):
        command = [sys.executable, str(ROOT / "benchmarks" / "bench_rss.py"), "--side", side, "--decisions", str(decisions)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        peaks[side] = json.loads(done.stdout.splitlines()[-1])
    engine = peaks["engine"]
    # flat: no growth over the second half of the run, give or take allocator pages (the first
    # decisions fill caches, so the early marks of a short run are below the plateau)
    flat = engine["100%"] <= engine["50%"] + 1.0
    row(
        f"peak RSS after {decisions:,} decisions",
        f"{engine['100%']:.1f} MB (50%: {engine['50%']:.1f})",
        "< 50 MB, flat",
        engine["100%"] / peaks["plain"]["100%"],
        engine["100%"] < 50 and flat,
    )


def breakdown(requests: list[dict]) -> None:
    """Own time by module of `evaluate_many`, audit off, under cProfile."""
    engine = Engine.from_policy(audit=None)
    engine.evaluate_many(requests[:BATCH])
    profile = cProfile.Profile()
    profile.enable()
    for start in range(0, len(requests), BATCH):
        engine.evaluate_many(requests[start : start + BATCH])
    profile.disable()
    by_module: dict[str, float] = defaultdict(float)
    for (filename, _, function), (_, _, own, _, _) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        if "protection_rules" in filename:
            name = "protection_rules/" + filename.split("protection_rules/")[-1]
        elif filename == "~":
            name = f"C: {function}"[:60]
        else:
            name = Path(filename).name
        by_module[name] += own
    total = sum(by_module.values())
    print(f"\nwhere an audit-off decision's time goes (cProfile own time by module, {len(requests):,} decisions):")
    for name, own in sorted(by_module.items(), key=lambda item: -item[1])[:14]:
        print(f"  {name:<58} {own / len(requests) * 1e6:7.2f} us  {own / total:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single", type=int, default=200, help="single evaluate calls with audit on")
    parser.add_argument("--rss", type=int, default=100_000, help="decisions for the peak RSS row (0: skip)")
    parser.add_argument("--cold-runs", type=int, default=10)
    args = parser.parse_args()
    print(
        f"command: .venv/bin/python benchmarks/bench_speed.py --requests {args.requests} --rounds {args.rounds}"
        f" --single {args.single} --rss {args.rss} --cold-runs {args.cold_runs}"
    )
    with open("/proc/loadavg") as load:
        print(f"load average: {' '.join(load.read().split()[:3])}")
    print(f"\n{'path':<46} {'figure':>24} {'target':>26} {'x floor':>9}")
    requests = make_requests(args.requests)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        floor = batch_rows(requests, args.rounds, folder)
        print(f"{'':<46} {f'floor {floor * 1e6:.1f} us':>24}")
        single_row(requests, args.single, folder)
    whipsaw_rows(args.rounds)
    cold_row(args.cold_runs)
    if args.rss:
        rss_row(args.rss)
    breakdown(requests)


if __name__ == "__main__":
    main()
