"""The report of `protect rebalance`: JSON (schemas/rebalance-report.v1.schema.json) and text."""

from __future__ import annotations

from typing import Any

import click

from .rebalancer import RebalanceResult
from .targets import RebalancingTarget
from .timestamps import format_instant

REPORT_FORMAT = "protection-rules/rebalance-report/v1"


def report_dict(result: RebalanceResult) -> dict[str, Any]:
    return {"format": REPORT_FORMAT, **result.to_dict()}


def summary_line(result: RebalanceResult) -> str:
    s = result.summary
    denied = f", {s.denied} denied" if s.denied else ", none denied"
    return (
        f"rebalance at {format_instant(result.current_date)}: {s.targets} targets, {s.approved} approved "
        f"({_count(s.holds, 'hold')}, {s.overridden} overridden){denied}"
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def report_text(result: RebalanceResult, *, quiet: bool = False) -> str:
    """The summary line, then a row per target (approved first), the denials per protection."""
    lines = [summary_line(result)]
    if quiet:
        return "\n".join(lines)
    rows = [_row(t) for t in (*result.approved, *result.denied)]
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(3)]
    for target, (action, asset, change, detail) in zip((*result.approved, *result.denied), rows, strict=True):
        verdict = _verdict(target)
        lines.append(f"  {verdict}  {action:<{widths[0]}}  {asset:<{widths[1]}}  {change:<{widths[2]}}  {detail}".rstrip())
    if result.summary.denials_by_protection:
        counts = ", ".join(f"{name} {count}" for name, count in result.summary.denials_by_protection.items())
        lines.append(f"  denied by: {counts}")
    policy = result.policy
    trace = f"  trace {result.trace_id}" if result.trace_id else "  (nothing evaluated)"
    lines.append(f"  policy {policy.name} {policy.version} ({policy.sha256[:12]}){trace}")
    return "\n".join(lines)


def _verdict(target: RebalancingTarget) -> str:
    if target.decision is None:
        return click.style("HOLD    ", fg="bright_black", bold=True)
    if target.decision.approved:
        return click.style("APPROVED", fg="green", bold=True)
    return click.style("DENIED  ", fg="red", bold=True)


def _row(target: RebalancingTarget) -> tuple[str, str, str, str]:
    change = f"{target.current_allocation_pct:.2%} -> {target.target_allocation_pct:.2%}"
    decision = target.decision
    if decision is None:
        detail = "not evaluated"
    elif decision.approved:
        detail = f"override: {decision.override_reason}" if decision.override_applied else ""
    else:
        blockers = ", ".join(decision.blocking_systems)
        until = format_instant(decision.unblocks_at) if decision.unblocks_at is not None else "-"
        detail = f"blocked by {blockers}; unblocks at {until}"
        if decision.errors:
            detail += f"; {decision.errors[0]}"
    return (target.action or "", target.asset, change, detail)
