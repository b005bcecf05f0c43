"""Append throughput of the audit sinks: one record per append vs batches of 100.

Run:  .venv/bin/python benchmarks/bench_audit.py [--records 2000] [--dir /tmp]

Each append is durable when it returns (SQLite: WAL + synchronous=FULL; JSONL: fsync), so the
figures mostly measure the disk's fsync latency: compare them on one machine only. The records
are real: a decision of the default policy with its full trace, about 2.5 KB each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protection_rules import Engine  # noqa: E402
from protection_rules.audit import open_audit  # noqa: E402

REQUEST = {
    "asset": "AAPL",
    "action": "close",
    "current_date": "2026-03-12T07:00:00Z",
    "position_entry_date": "2026-03-10T09:00:00Z",
    "current_score": 0.71,
}


def make_records(count: int) -> list[dict]:
    decision = Engine.from_policy(ROOT / "policies" / "default.yaml", audit=None).evaluate(REQUEST).to_dict()
    records = []
    for _ in range(count):
        decision_id = uuid.uuid4().hex
        records.append(
            {
                "decision_id": decision_id,
                "trace_id": decision_id,
                "evaluated_at": decision["evaluated_at"],
                "asset": decision["asset"],
                "action": decision["action"],
                "decision": decision["decision"],
                "blocking_systems": decision["blocking_systems"],
                "override_applied": decision["override_applied"],
                "policy": decision["policy"],
                "engine_version": decision["engine_version"],
                "request": REQUEST,
                "state": None,
                "state_source": "request",
                "decision_record": {**decision, "trace_id": decision_id},
                "decision_time_ms": decision["decision_time_ms"],
            }
        )
    return records


def run(path: Path, records: list[dict], batch: int) -> float:
    """Appends per second (records written / wall time)."""
    with open_audit(path) as log:
        started = time.perf_counter()
        for start in range(0, len(records), batch):
            log.append(records[start : start + batch])
        elapsed = time.perf_counter() - started
        assert log.verify().count == len(records)
    return len(records) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="records per run")
    parser.add_argument("--dir", default=None, help="where the logs go (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        print(f"{'sink':<8} {'batch':>6} {'records/s':>12}  (records: {args.records}, folder: {folder})")
        for suffix in ("sqlite", "jsonl"):
            for batch in (1, 100):
                rate = run(Path(folder) / f"audit-{batch}.{suffix}", make_records(args.records), batch)
                print(f"{suffix:<8} {batch:>6} {rate:>12,.0f}")
    print("command: .venv/bin/python benchmarks/bench_audit.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
