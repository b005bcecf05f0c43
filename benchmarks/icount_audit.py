"""Instruction-count harness for the audit path, one stage at a time.

Decides 2,000 seeded requests with audit off, then does the recording work stage by stage on
them, and stops after STAGE (with 0: just before it). Run it under callgrind with 1 and with 0;
the difference over 2,000 is the instructions per record that stage costs:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python benchmarks/icount_audit.py seal 1
    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python benchmarks/icount_audit.py seal 0

Stages, in the order the engine runs them: `trace` (each protection's `explain`, which audit off
never runs), `to_dict`, `as_received` (the request checked and written as canonical JSON),
`record` (the whole audit record with its canonical JSON, `to_dict` included), `check`
(`check_batch`), `seal` (stamps, sha256), `columns` (the indexed copies), `insert` (one SQLite
transaction for the 2,000 records, fsync included).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_evaluate import make_requests  # noqa: E402

from protection_rules import Engine  # noqa: E402
from protection_rules import engine as engine_module  # noqa: E402
from protection_rules.audit import open_audit  # noqa: E402
from protection_rules.audit import sqlite as sqlite_sink  # noqa: E402
from protection_rules.audit.chain import check_batch, seal  # noqa: E402
from protection_rules.audit.sql import record_columns  # noqa: E402

COUNT = 2000
STAMP = "2026-03-12T09:00:01Z"


def main() -> None:
    stage, run = sys.argv[1], sys.argv[2] == "1"

    def at(name: str, work: Callable[[], object]) -> None:
        if stage == name:
            if run:
                work()
            sys.exit(0)

    requests = make_requests(COUNT)
    decisions = Engine.from_policy(audit=None).evaluate_many(requests)
    at("trace", lambda: [d.trace.entries() for d in decisions])
    for decision in decisions:
        decision.trace.entries()
    at("to_dict", lambda: [d.to_dict() for d in decisions])
    at("as_received", lambda: [engine_module._as_received(r) for r in requests])
    received = [engine_module._as_received(r) for r in requests]
    pairs = list(zip(decisions, received, strict=True))
    at("record", lambda: [engine_module._record(d, r, None, None, b) for d, (r, b) in pairs])
    records = [engine_module._record(d, r, None, None, b) for d, (r, b) in pairs]
    at("check", lambda: check_batch(records, "log"))
    at("seal", lambda: seal(records, 0, "0" * 64, STAMP, "log"))
    sealed = seal(records, 0, "0" * 64, STAMP, "log")
    at("columns", lambda: [record_columns(s.record) for s in sealed])
    rows = [(s.sequence, *record_columns(s.record), s.hash, s.body) for s in sealed]
    with tempfile.TemporaryDirectory() as folder, open_audit(Path(folder) / "audit.sqlite") as log:
        conn = log._writer()

        def insert() -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sqlite_sink._INSERT, rows)
            conn.execute("COMMIT")

        if stage == "insert" and run:
            insert()


if __name__ == "__main__":
    main()
