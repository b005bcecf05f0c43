"""Per-decision cost of custom protections: the default policy plus 0, 1, 10 and 50 of them.

Run:  .venv/bin/python benchmarks/bench_custom.py [--requests 10000] [--rounds 3]

For each policy it prints decisions/s and p50/p99 latency of `Engine.evaluate`, and the same for
the plain-Python floor in the same run: bench_evaluate.py's hand-written default policy plus the
custom conditions as a straight if-chain (which must decide every request as the engine does:
the disagreement count is printed and must be 0). The custom protections cycle through the four
kinds of policies/examples/custom.yaml (blacklist, concentration limit, open-position cap,
minimum score) with different thresholds, placed after the built-ins, none bypassed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_evaluate import baseline, make_requests, percentile, timed  # noqa: E402

from protection_rules import Engine  # noqa: E402
from protection_rules.compiler import compile_policy  # noqa: E402
from protection_rules.policy import parse_policy  # noqa: E402

DEFAULT = (ROOT / "policies" / "default.yaml").read_text(encoding="utf-8")
Check = Callable[[dict], bool]


def custom(index: int) -> tuple[str, str, Check]:
    """The `blocks` and `when` of the index-th custom protection, and the same by hand."""
    kind = index % 4
    if kind == 0:
        names = [f"BL{index}X{j}" for j in range(5)] + (["TSLA"] if index == 0 else [])
        return "[open, increase]", f"{{fact: asset, in: [{', '.join(names)}]}}", lambda r: r["asset"] in names
    if kind == 1:
        limit = round(0.09 + index / 10000, 4)
        when = f"{{all: [{{fact: target_size, exists: true}}, {{fact: target_size, gt: {limit}}}, {{fact: asset, not_in: [SPY, QQQ]}}]}}"
        return "[open, increase]", when, lambda r: r.get("target_size") is not None and r["target_size"] > limit
    if kind == 2:
        cap = 30 + index
        when = f"{{all: [{{fact: active_positions, exists: true}}, {{fact: active_positions, ge: {cap}}}]}}"
        return "[open]", when, lambda r: r.get("active_positions") is not None and r["active_positions"] >= cap
    floor = round(0.05 + index / 1000, 3)
    when = f"{{any: [{{fact: current_score, exists: false}}, {{fact: current_score, lt: {floor}}}]}}"
    return "[open]", when, lambda r: r.get("current_score") is None or r["current_score"] < floor


def policy(count: int) -> tuple[str, list[tuple[set[str], Check]]]:
    names = [f"custom_{i:02d}" for i in range(count)]
    text = DEFAULT.replace("  - whipsaw_protection\n", "  - whipsaw_protection\n" + "".join(f"  - {n}\n" for n in names))
    checks = []
    for index, name in enumerate(names):
        blocks, when, check = custom(index)
        text += f"\n  {name}:\n    type: condition\n    enabled: true\n    blocks: {blocks}\n    when: {when}\n    reason: r\n"
        checks.append((set(blocks.strip("[]").split(", ")), check))
    return text, checks


def custom_engine(count: int) -> Engine:
    text, _ = policy(count)
    return Engine(compile_policy(parse_policy(text, f"custom-{count}")), audit=None)


def floor_for(checks: list[tuple[set[str], Check]]) -> Callable[[dict], bool]:
    def decide(request: dict) -> bool:
        approved, _ = baseline(request)
        action = request["action"]
        return approved and not any(action in blocks and check(request) for blocks, check in checks)

    return decide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    requests = make_requests(args.requests)
    rng = random.Random(11)
    for request in requests:
        if rng.random() < 0.7:
            request["active_positions"] = rng.randrange(20, 60)
    print(
        f"{'custom':>6} {'rules':>5} {'engine/s':>10} {'p50 us':>8} {'p99 us':>8} {'floor/s':>10} {'p50 us':>8} {'ratio':>6} {'disagree':>8}"
    )
    base_p50 = None
    for count in (0, 1, 10, 50):
        _, checks = policy(count)
        engine = custom_engine(count)
        floor = floor_for(checks)
        decisions = engine.evaluate_many(requests)
        disagreements = sum(
            d.approved != floor(r) or "error" in d.blocking_systems for d, r in zip(decisions, requests, strict=True)
        )
        figures = []
        for fn in (engine.evaluate, floor):
            totals, lats = [], []
            for _ in range(args.rounds):
                total, lats = timed(fn, requests)
                totals.append(total)
            figures.append((len(requests) / statistics.median(totals), percentile(lats, 0.5), percentile(lats, 0.99)))
        (rate, p50, p99), (floor_rate, floor_p50, _) = figures
        base_p50 = p50 if base_p50 is None else base_p50
        print(
            f"{count:>6} {len(engine.compiled.rules):>5} {rate:>10,.0f} {p50:>8.1f} {p99:>8.1f} "
            f"{floor_rate:>10,.0f} {floor_p50:>8.1f} {rate and floor_rate / rate:>5.1f}x {disagreements:>8}"
        )
        if count:
            print(
                f"{'':>6} {'':>5} p50 over the default policy: +{p50 - base_p50:.1f} us, {(p50 - base_p50) / count:.2f} us per custom protection"
            )
    print("command: .venv/bin/python benchmarks/bench_custom.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
