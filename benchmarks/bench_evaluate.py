"""Throughput and latency of `Engine.evaluate_many` on the default policy, against a baseline.

Run:  .venv/bin/python benchmarks/bench_evaluate.py [--requests 20000] [--rounds 3]

Prints decisions/s, p50/p99 per-decision latency, peak RSS, decisions/s with the SQLite audit
trail on (one transaction per decision vs one per batch), the same figures for a hand-written
pure-Python version of the default policy (same requests, same run: this machine is shared and
noisy, so only the ratio is comparable across runs), and the wall time of a cold
`protect evaluate` of one request.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protection_rules import Engine  # noqa: E402
from protection_rules.audit import open_audit  # noqa: E402
from protection_rules.timestamps import MICROS_PER_DAY, format_instant, parse_instant  # noqa: E402

NOW = parse_instant("2026-03-12T09:00:00Z")


def make_requests(count: int, seed: int = 7) -> list[dict]:
    """A mix of the plan's scenarios with random parameters around the boundaries."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        ago = lambda max_days: format_instant(NOW - rng.randrange(0, max_days * MICROS_PER_DAY))  # noqa: E731
        request: dict = {
            "request_id": f"r{index}",
            "asset": rng.choice(["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "INTC"]),
            "action": rng.choice(["open", "close", "increase", "decrease"]),
            "current_date": format_instant(NOW),
            "current_size": round(rng.uniform(0, 0.1), 4),
            "target_size": round(rng.uniform(0, 0.1), 4),
        }
        if rng.random() < 0.8:
            request["current_score"] = round(rng.random(), 3)
        if rng.random() < 0.6:
            request["position_entry_date"] = ago(10)
        state: dict = {}
        if rng.random() < 0.15:
            state["core"] = {"designated_at": ago(100)}
        if rng.random() < 0.3:
            state["grace"] = {"started_at": ago(8), "original_size": 0.05}
        if rng.random() < 0.5:
            stamps = sorted(NOW - rng.randrange(0, 20 * MICROS_PER_DAY) for _ in range(rng.randrange(1, 5)))
            state["events"] = [{"type": rng.choice(["open", "close"]), "at": format_instant(t)} for t in stamps]
        if rng.random() < 0.1:
            state["last_override_at"] = ago(40)
        if state:
            request["state"] = state
        if rng.random() < 0.3:
            request["regime"] = {
                "changed": True,
                "severity": rng.choice(["normal", "high", "critical"]),
                "change_date": ago(9),
            }
        out.append(request)
    return out


# ----------------------------------------------------------------------- the plain-Python baseline


def baseline(request: dict) -> tuple[bool, list[str]]:
    """The default policy as a straight if-chain: parse, compute, decide. No trace."""
    now = parse_instant(request["current_date"])
    action = request["action"]
    state = request.get("state") or {}
    core = state.get("core")
    if core and action in ("close", "decrease"):
        start = parse_instant(core["designated_at"])
        end = parse_instant(core["expires_at"]) if core.get("expires_at") else None
        if start <= now and (end is None or now < end):
            return False, ["core_asset_immunity"]
    day = MICROS_PER_DAY
    regime = request.get("regime") or {}
    severity = regime.get("severity") or "normal"
    bypass = {
        "high": ("grace_period", "holding_period"),
        "critical": ("grace_period", "holding_period", "whipsaw_protection"),
    }.get(severity, ())
    changed_at = parse_instant(regime["change_date"]) if regime.get("change_date") else now
    last = parse_instant(state["last_override_at"]) if state.get("last_override_at") else None
    available = (
        bool(regime.get("changed")) and bool(bypass) and now - changed_at < 7 * day and (last is None or now - last >= 30 * day)
    )
    blocked = []
    score = request.get("current_score")
    grace = state.get("grace")
    if action == "close":
        start = parse_instant(grace["started_at"]) if grace else now
        if (score is not None and score < 0.6 and now < start + 5 * day) or (score is None and grace and now < start + 5 * day):
            blocked.append("grace_period")
    events = sorted(((parse_instant(e["at"]), e["type"]) for e in state.get("events") or ()), key=lambda e: e[0])
    entry = parse_instant(request["position_entry_date"]) if request.get("position_entry_date") else None
    if entry is None and events and events[-1][1] == "open":
        entry = events[-1][0]
    if action in ("close", "decrease") and entry is not None and now < entry + 3 * day:
        blocked.append("holding_period")
    if action == "open":
        cycles, armed = 0, False
        for at, kind in events:
            if now - 14 * day < at <= now:
                if kind == "open":
                    armed = True
                elif armed:
                    cycles, armed = cycles + 1, False
        if cycles >= 1:
            blocked.append("whipsaw_protection")
    remaining = [b for b in blocked if not (available and b in bypass)]
    return not remaining, remaining


# ------------------------------------------------------------------------------------ measuring


def timed(fn, requests: list[dict]) -> tuple[float, list[int]]:
    latencies = []
    clock = time.perf_counter_ns
    started = clock()
    for request in requests:
        t0 = clock()
        fn(request)
        latencies.append(clock() - t0)
    return (clock() - started) / 1e9, latencies


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def cold_cli(runs: int = 5) -> float | None:
    protect = shutil.which("protect", path=str(Path(sys.executable).parent))
    if protect is None:
        return None
    example = ROOT / "examples" / "requests" / "holding_close.json"
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([protect, "evaluate", "--no-audit", str(example)], capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def audit_figures(requests: list[dict]) -> None:
    """Decisions/s with the SQLite audit trail on: per-decision commits vs one per batch."""
    with tempfile.TemporaryDirectory() as folder:
        for label, batch in (
            ("audit on, single", 1),
            ("audit on, batch 100", 100),
            (f"audit on, batch {len(requests)}", len(requests)),
        ):
            sink = open_audit(Path(folder) / f"audit-{batch}.sqlite")
            engine = Engine.from_policy(audit=sink)
            started = time.perf_counter()
            if batch == 1:
                for request in requests:
                    engine.evaluate(request)
            else:
                for start in range(0, len(requests), batch):
                    engine.evaluate_many(requests[start : start + batch])
            rate = len(requests) / (time.perf_counter() - started)
            verified = sink.verify()
            sink.close()
            print(f"{label:<24} {rate:>12,.0f}   ({verified.count} records, chain {'ok' if verified.ok else 'BROKEN'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    requests = make_requests(args.requests)
    engine = Engine.from_policy(audit=None)  # the rule path alone; audit-on figures follow

    # agreement first: the baseline must decide like the engine, or its timing means nothing
    decisions = engine.evaluate_many(requests)
    disagreements = sum(d.approved != baseline(r)[0] for d, r in zip(decisions, requests, strict=True))
    errors = sum("error" in d.blocking_systems for d in decisions)
    approved = sum(d.approved for d in decisions)
    print(f"requests: {len(requests)}  approved: {approved}  errors: {errors}  baseline disagreements: {disagreements}")

    rows = []
    for name, fn in (("engine.evaluate", engine.evaluate), ("pure-Python baseline", baseline)):
        totals, lats = [], []
        for _ in range(args.rounds):
            total, latencies = timed(fn, requests)
            totals.append(total)
            lats = latencies
        best = statistics.median(totals)
        rows.append((name, len(requests) / best, percentile(lats, 0.5), percentile(lats, 0.99)))
    many = {}
    for batch in (100, 1000, len(requests)):
        rates = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            for start in range(0, len(requests), batch):
                engine.evaluate_many(requests[start : start + batch])
            rates.append(len(requests) / (time.perf_counter() - started))
        many[batch] = statistics.median(rates)

    print(f"{'variant':<24} {'decisions/s':>12} {'p50 us':>8} {'p99 us':>8}")
    for name, rate, p50, p99 in rows:
        print(f"{name:<24} {rate:>12,.0f} {p50:>8.1f} {p99:>8.1f}")
    for batch, rate in many.items():
        print(f"{f'evaluate_many, batch {batch}':<24} {rate:>12,.0f}")
    print(f"engine / baseline time ratio: {rows[1][1] / rows[0][1]:.1f}x")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")
    audit_figures(requests[: min(len(requests), 3000)])
    cold = cold_cli()
    print(f"cold `protect evaluate` of one request: {cold:.3f} s (median of 5)" if cold else "cold CLI: `protect` not installed")
    print("command: .venv/bin/python benchmarks/bench_evaluate.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
