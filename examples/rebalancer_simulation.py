"""Simulate a protected rebalancer: 120 trading days of a 50-asset universe.

Every day each asset's score moves (a seeded, mean-reverting random walk), the strategy wants the
top 12 assets scoring at least 0.6, weighted by score, and proposes a target per asset it holds or
wants. `ProtectionAwareRebalancer` decides them in one batch; the approved ones are filled five
minutes later and fed back, so the next day sees the holding clocks, the whipsaw cycles, the grace
periods and the override cooldowns. Two regime changes (high, then critical) shake the scores.

Prints per day how many targets were approved, held, overridden and denied (by protection), then
the turnover with protections and without (the same strategy filling every target). With the
`plot` extra (`pip install 'protection-rules[plot]'`, matplotlib) it also writes a PNG chart.

    python examples/rebalancer_simulation.py [--days 120] [--assets 50] [--seed 7] [--chart FILE | --no-chart]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from protection_rules import Engine
from protection_rules.rebalancer import HOLD_BAND, ProtectionAwareRebalancer, RebalancingTarget, derive_action
from protection_rules.state import MemoryStateStore
from protection_rules.timestamps import format_instant, to_instant

START = datetime(2026, 1, 5, 15, 30, tzinfo=UTC)  # a Monday, after the open
FILL_DELAY = timedelta(minutes=5)
TOP = 12
THRESHOLD = 0.6  # the default policy's grace threshold: the strategy never wants a failing asset
INVESTED = 0.9  # the rest is cash


@dataclass
class Day:
    """What one rebalance decided."""

    date: datetime
    regime: str
    targets: int = 0
    approved: int = 0  # approved and executed (holds not counted)
    holds: int = 0
    overridden: int = 0
    denied: Counter[str] = field(default_factory=Counter)  # per blocking protection
    denials: int = 0
    turnover: float = 0.0
    free_turnover: float = 0.0


class Market:
    """Seeded scores: each asset drifts back towards its own mean, with noise and regime shocks."""

    def __init__(self, assets: int, rng: random.Random):
        self.rng = rng
        self.assets = [f"S{index:02d}" for index in range(assets)]
        self.means = {a: rng.uniform(0.35, 0.8) for a in self.assets}
        self.scores = {a: min(1.0, max(0.0, self.means[a] + rng.gauss(0, 0.1))) for a in self.assets}

    def step(self, shock: float = 0.0) -> None:
        for asset in self.assets:
            moved = self.scores[asset] + 0.2 * (self.means[asset] - self.scores[asset]) + self.rng.gauss(0, 0.06)
            if shock and self.rng.random() < 0.5:  # a regime change hits half the universe
                moved -= shock
            self.scores[asset] = round(min(1.0, max(0.0, moved)), 4)

    def wanted(self) -> dict[str, float]:
        """The strategy: the top assets at or above the threshold, weighted by score."""
        ranked = sorted((a for a in self.assets if self.scores[a] >= THRESHOLD), key=lambda a: -self.scores[a])[:TOP]
        total = sum(self.scores[a] for a in ranked)
        return {a: round(INVESTED * self.scores[a] / total, 6) for a in ranked}


def trading_days(count: int) -> list[datetime]:
    days, day = [], START
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def regime_changes(count: int) -> dict[int, tuple[str, str, str, float]]:
    """Day index -> (severity, old regime, new regime, score shock): at a third and at two thirds."""
    return {count // 3: ("high", "bull", "bear", 0.25), (2 * count) // 3: ("critical", "bear", "crisis", 0.35)}


def targets_for(book: dict[str, float], wanted: dict[str, float], scores: dict[str, float]) -> list[RebalancingTarget]:
    return [
        RebalancingTarget(
            asset=asset,
            current_allocation_pct=book.get(asset, 0.0),
            target_allocation_pct=wanted.get(asset, 0.0),
            score=scores[asset],
            priority="portfolio",
            reason="top score" if asset in wanted else "left the top",
        )
        for asset in sorted(set(book) | set(wanted))
    ]


def simulate(days: int, assets: int, seed: int) -> list[Day]:
    rng = random.Random(seed)
    market = Market(assets, rng)
    now = [to_instant(START)]  # the simulation's wall clock: fills are never in its future
    engine = Engine.from_policy(state=MemoryStateStore(), audit=None, clock=lambda: now[0])
    rebalancer = ProtectionAwareRebalancer(engine)
    free_book: dict[str, float] = {}  # the same strategy without protections: every target filled
    changes = regime_changes(days)
    regime: dict[str, Any] | None = None
    name = "bull"
    report = []
    for index, date in enumerate(trading_days(days)):
        if index in changes:
            severity, old, new, shock = changes[index]
            regime = {
                "changed": True,
                "severity": severity,
                "old_regime": old,
                "new_regime": new,
                "change_date": format_instant(to_instant(date - timedelta(hours=6))),
            }
            name = new
            market.step(shock)
        else:
            market.step()
        wanted = market.wanted()
        day = Day(date, name)
        now[0] = to_instant(date)
        result = rebalancer.validate(targets_for(rebalancer.positions, wanted, market.scores), date, regime=regime)
        now[0] = to_instant(date + FILL_DELAY)
        for target in result.approved:
            if target.decision is None:
                continue
            rebalancer.record_fill(target, date + FILL_DELAY)
            day.turnover += abs(target.target_allocation_pct - target.current_allocation_pct)
        day.targets, day.holds = result.summary.targets, result.summary.holds
        day.approved = result.summary.approved - result.summary.holds
        day.overridden, day.denials = result.summary.overridden, result.summary.denied
        day.denied.update(result.summary.denials_by_protection)
        for target in targets_for(free_book, wanted, market.scores):
            if derive_action(target.current_allocation_pct, target.target_allocation_pct, HOLD_BAND) == "hold":
                continue
            day.free_turnover += abs(target.target_allocation_pct - target.current_allocation_pct)
            if target.target_allocation_pct:
                free_book[target.asset] = target.target_allocation_pct
            else:
                free_book.pop(target.asset, None)
        report.append(day)
    return report


def day_line(number: int, day: Day) -> str:
    denied = ", ".join(f"{name} {count}" for name, count in sorted(day.denied.items(), key=lambda kv: (-kv[1], kv[0])))
    return (
        f"day {number:3d}  {day.date:%Y-%m-%d}  {day.regime:<6}  targets {day.targets:2d}  approved {day.approved:2d}"
        f"  holds {day.holds:2d}  overridden {day.overridden:2d}  denied {day.denials:2d}" + (f" ({denied})" if denied else "")
    )


def summary_lines(report: list[Day], elapsed: float) -> list[str]:
    denied = Counter[str]()
    for day in report:
        denied.update(day.denied)
    with_, without = sum(d.turnover for d in report), sum(d.free_turnover for d in report)
    saved = f"{1 - with_ / without:.0%} less" if without else "n/a"
    by = ", ".join(f"{name} {count}" for name, count in denied.most_common())
    return [
        f"{len(report)} days: {sum(d.approved for d in report)} approved, {sum(d.holds for d in report)} holds, "
        f"{sum(d.overridden for d in report)} overridden, {sum(d.denials for d in report)} denied ({by or 'none'})",
        f"turnover (sum of |allocation change|): {with_:.2f} with protections, {without:.2f} without ({saved})",
        f"simulated in {elapsed:.1f} s",
    ]


def write_chart(report: list[Day], path: str) -> str:
    """A PNG of the daily decisions and the cumulative turnover; needs matplotlib (the `plot` extra)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    dates = [d.date for d in report]
    names = sorted({name for d in report for name in d.denied})
    figure, (decisions, turnover) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, height_ratios=[3, 2])
    bottom = [0.0] * len(report)
    for label, values in [
        ("approved", [d.approved - d.overridden for d in report]),
        ("overridden", [d.overridden for d in report]),
    ]:
        decisions.bar(dates, values, bottom=bottom, label=label, width=1.0)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for name in names:
        values = [d.denied.get(name, 0) for d in report]
        decisions.bar(dates, values, bottom=bottom, label=f"denied: {name}", width=1.0, alpha=0.8)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    decisions.set_ylabel("targets decided per day")
    decisions.legend(loc="upper left", fontsize="small", ncol=2)
    with_ = without = 0.0
    cumulative_with, cumulative_without = [], []
    for d in report:
        with_ += d.turnover
        without += d.free_turnover
        cumulative_with.append(with_)
        cumulative_without.append(without)
    turnover.plot(dates, cumulative_without, label="without protections")
    turnover.plot(dates, cumulative_with, label="with protections")
    turnover.set_ylabel("cumulative turnover")
    turnover.legend(loc="upper left", fontsize="small")
    for axis in (decisions, turnover):
        for previous, day in pairwise(report):
            if day.regime != previous.regime:
                axis.axvline(day.date, color="black", linestyle="--", linewidth=0.8)
    decisions.set_title(f"protected rebalancer: {len(report)} trading days (dashed: regime changes)")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=120, help="trading days to simulate (default 120)")
    parser.add_argument("--assets", type=int, default=50, help="assets in the universe (default 50)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the scores (default 7)")
    parser.add_argument("--chart", default="rebalancer_simulation.png", help="where to write the PNG chart")
    parser.add_argument("--no-chart", action="store_true", help="write no chart")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report = simulate(args.days, args.assets, args.seed)
    elapsed = time.perf_counter() - started
    print(f"{args.days} trading days from {format_instant(to_instant(START))}, {args.assets} assets, seed {args.seed}")
    print("approved: executed (holds apart); denied (...): per protection, a denial counting for each one that blocked it")
    for number, day in enumerate(report, start=1):
        print(day_line(number, day))
    for line in summary_lines(report, elapsed):
        print(line)
    if not args.no_chart:
        try:
            print(f"chart: {write_chart(report, args.chart)}")
        except ImportError:
            print("chart: not written: matplotlib is not installed (pip install 'protection-rules[plot]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
