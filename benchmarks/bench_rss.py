"""Peak RSS while deciding many requests: it must stay flat (< 50 MB after 1,000,000 decisions).

Run:  .venv/bin/python benchmarks/bench_rss.py [--decisions 1000000] [--audit]

Each side runs in a fresh process and reports its peak RSS (VmHWM, else getrusage ru_maxrss) at 1%, 10%,
50% and 100% of the decisions: the plain-Python policy of bench_evaluate.py (the floor: an
interpreter holding the same 1,000 seeded requests, which both sides cycle through) and
`Engine.evaluate_many` in batches of 1,000, audit off (or, with --audit, into a SQLite audit
trail in a temporary folder). Flat means the last figure is the 10% one, give or take pages.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POOL = 1_000
BATCH = 1000


def peak_mb() -> float:
    # VmHWM is this process image's own peak: getrusage's ru_maxrss survives exec on Linux, so
    # a side started by a big parent (bench_speed.py) would report the parent's peak
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run(side: str, decisions: int, audit: bool) -> None:
    """One side, in this process: print a JSON line of checkpoints."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_evaluate import baseline, make_requests

    requests = make_requests(POOL)
    marks = {max(BATCH, decisions * share // 100): share for share in (1, 10, 50, 100)}
    checkpoints: dict[str, float] = {"start": round(peak_mb(), 1)}
    folder = tempfile.TemporaryDirectory()
    if side == "plain":
        decide = lambda batch: [baseline(r) for r in batch]  # noqa: E731
    else:
        from protection_rules import Engine

        sink = None
        if audit:
            from protection_rules.audit import open_audit

            sink = open_audit(Path(folder.name) / "audit.sqlite")
        engine = Engine.from_policy(audit=sink)
        decide = engine.evaluate_many
    started, done = time.perf_counter(), 0
    while done < decisions:
        offset = done % POOL
        batch = requests[offset : offset + BATCH]
        if audit and side == "engine":  # decision ids are unique per log: give each round its own
            batch = [{**r, "request_id": f"{r['request_id']}-{done}"} for r in batch]
        decide(batch)
        done += len(batch)
        for mark, share in marks.items():
            if done - len(batch) < mark <= done:
                checkpoints[f"{share}%"] = round(peak_mb(), 1)
    checkpoints["seconds"] = round(time.perf_counter() - started, 1)
    folder.cleanup()
    print(json.dumps(checkpoints))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--audit", action="store_true", help="the engine records into a SQLite audit trail")
    parser.add_argument("--side", choices=["plain", "engine"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run(args.side, args.decisions, args.audit)
        return
    print(f"command: .venv/bin/python benchmarks/bench_rss.py --decisions {args.decisions}{' --audit' if args.audit else ''}")
    print(f"{'side':<38} {'start':>7} {'1%':>7} {'10%':>7} {'50%':>7} {'100%':>7}  MB peak RSS")
    for side, label in (
        ("plain", "plain-Python policy (floor)"),
        ("engine", f"evaluate_many, audit {'SQLite' if args.audit else 'off'}"),
    ):
        command = [sys.executable, __file__, "--side", side, "--decisions", str(args.decisions)] + (
            ["--audit"] if args.audit else []
        )
        figures = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        row = " ".join(f"{figures.get(key, float('nan')):>7.1f}" for key in ("start", "1%", "10%", "50%", "100%"))
        print(f"{label:<38} {row}  ({figures['seconds']} s)")
    print("target: the engine's 100% figure < 50 MB and no higher than its 10% one (flat)")


if __name__ == "__main__":
    main()
