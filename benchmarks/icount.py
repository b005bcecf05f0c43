"""Instruction-count harness: decide N seeded requests after a 200-request warm-up.

Wall-clock figures on this shared machine swing by 2x; instruction counts repeat. Run it under
callgrind twice, with N and with 0, and divide the difference by N for instructions per decision:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python benchmarks/icount.py 3000 many
    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python benchmarks/icount.py 0 many

Both runs build the same pool of POOL requests (the N decided cycle through it), so building
the requests cancels out of the difference and only deciding is counted.
`many` decides in batches of 1,000 (`evaluate_many`), `one` one request at a time (`evaluate`),
both audit off; `audit` and `audit-one` do the same with a SQLite audit trail (in a temporary
folder) on; `floor` runs bench_evaluate.py's plain-Python version of the default policy instead:
the floor the engine's ratio is taken against, in instructions.
A third argument K decides under the default policy plus K custom protections (bench_custom.py's).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_evaluate import baseline, make_requests  # noqa: E402

from protection_rules import Engine  # noqa: E402

POOL = 3000
WARM_UP = 200


def main() -> None:
    count = int(sys.argv[1])
    mode = sys.argv[2] if len(sys.argv) > 2 else "many"
    custom = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    folder = tempfile.TemporaryDirectory()
    if custom:
        from bench_custom import custom_engine

        engine = custom_engine(custom)
    elif mode.startswith("audit"):
        from protection_rules.audit import open_audit

        engine = Engine.from_policy(audit=open_audit(Path(folder.name) / "audit.sqlite"))
        mode = "one" if mode == "audit-one" else "many"
    else:
        engine = Engine.from_policy(audit=None)
    pool = make_requests(WARM_UP + POOL)
    engine.evaluate_many(pool[:WARM_UP])
    requests = [pool[WARM_UP + index % POOL] for index in range(count)]
    if mode == "floor":
        for request in requests:
            baseline(request)
    elif mode == "one":
        for request in requests:
            engine.evaluate(request)
    else:
        for start in range(0, count, 1000):
            engine.evaluate_many(requests[start : start + 1000])
    if engine.audit is not None:
        engine.audit.close()
    folder.cleanup()


if __name__ == "__main__":
    main()
