"""Wall time of `protect diff --replay` over a large audit trail, with 1 and 2 workers.

Run:  .venv/bin/python benchmarks/bench_replay.py [--decisions 100000] [--format sqlite|jsonl] [--keep DIR]

Builds an audit trail the way production does: the engine with a state store (executions
recorded first, so about half of the requests read their state from it) decides a seeded mix of
the plan's scenarios in batches of 1,000 (one audit append each). Then it times, in a fresh
process each, `protect diff OLD NEW --replay LOG` where NEW raises holding_period.min_days from
3 to 5: every record decided under both policies. Prints the commands and the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_evaluate import NOW, make_requests  # noqa: E402

from protection_rules import Engine  # noqa: E402
from protection_rules.audit import open_audit  # noqa: E402
from protection_rules.state import SqliteStateStore  # noqa: E402
from protection_rules.timestamps import MICROS_PER_DAY  # noqa: E402

BATCH = 1000
ASSETS = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "INTC"]


def build_log(folder: Path, count: int, suffix: str) -> Path:
    log = folder / f"audit.{suffix}"
    store = SqliteStateStore(folder / "state.sqlite")
    rng = random.Random(3)
    requests = make_requests(count)
    for request in requests[::2]:
        request.pop("state", None)  # these read the store
    with open_audit(log) as sink:
        engine = Engine.from_policy(ROOT / "policies" / "default.yaml", state=store, audit=sink, clock=lambda: NOW)
        for asset in ASSETS:
            for _ in range(3):
                at = NOW - rng.randrange(1, 12 * MICROS_PER_DAY)
                engine.record_execution(asset, rng.choice(["open", "close"]), at, 0.02)
        for start in range(0, count, BATCH):
            engine.evaluate_many(requests[start : start + BATCH])
    store.close()
    return log


def timed(command: list[str]) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--format", choices=["sqlite", "jsonl"], default="sqlite")
    parser.add_argument("--keep", type=Path, default=None, help="Build the log in this folder and keep it.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.keep or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        log = build_log(folder, args.decisions, args.format)
        print(
            f"built {args.decisions} audited decisions in {time.perf_counter() - started:.1f} s: {log} ({log.stat().st_size / 1e6:.0f} MB)"
        )
        new = folder / "new.yaml"
        new.write_text((ROOT / "policies" / "default.yaml").read_text().replace("min_days: 3", "min_days: 5"))
        protect = [sys.executable, "-m", "protection_rules"]
        print(f"cores: {os.cpu_count()}")
        for workers in (1, 2):
            command = [*protect, "diff", str(ROOT / "policies" / "default.yaml"), str(new), "--replay", str(log)]
            command += ["--format", "json", "--workers", str(workers)]
            elapsed, report = timed(command)
            impact = report["impact"]
            print(
                f"workers {workers}: {elapsed:.1f} s for {impact['decided']} decisions ({impact['decided'] / elapsed:,.0f}/s), "
                f"{impact['changed']} change, skipped {impact['corpora'][0]['skipped']}"
            )
            print(f"  command: {' '.join(command)}")


if __name__ == "__main__":
    main()
