"""Render decisions and validation results for people (text) and machines (JSON)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import click

from .errors import Issue
from .models import ProtectionDecision
from .timestamps import format_instant

_STATUS_COLOUR = {
    "pass": "green",
    "block": "red",
    "overridden": "yellow",
    "skipped": "bright_black",
    "not_applicable": "bright_black",
    "error": "red",
}


def decision_json(decision: ProtectionDecision, *, indent: int | None = None, line: int | None = None) -> str:
    """The decision.v1 JSON; `line`, the request's line in JSON Lines input, comes first when given."""
    data = decision.to_dict() if line is None else {"line": line, **decision.to_dict()}
    return json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False)


def verdict_line(decision: ProtectionDecision, *, label: str | None = None) -> str:
    """APPROVED or DENIED, the action and asset, when, and the reason: the first line of the text."""
    verdict = click.style("APPROVED", fg="green", bold=True) if decision.approved else click.style("DENIED", fg="red", bold=True)
    subject = " ".join(part for part in (decision.action, decision.asset) if part) or "request"
    when = f" at {format_instant(decision.evaluated_at)}" if decision.evaluated_at is not None else ""
    head = f"{label}: " if label else ""
    return f"{head}{verdict}  {subject}{when}  ({decision.reason})"


def decision_text(decision: ProtectionDecision, *, label: str | None = None) -> str:
    """A verdict line, then one row per protection: priority, name, status, reason."""
    lines = [verdict_line(decision, label=label)]
    if decision.state_source == "store":
        lines.append("  state: read from the state store")
    if decision.override_reason:
        lines.append(f"  override: {decision.override_reason}")
    if not decision.approved and decision.unblocks_at is not None:
        lines.append(f"  unblocks at: {format_instant(decision.unblocks_at)}")
    width = max((len(entry.system) for entry in decision.trace), default=0)
    for entry in decision.trace:
        status = click.style(f"{entry.status:<14}", fg=_STATUS_COLOUR.get(entry.status))
        lines.append(f"  {entry.priority}  {entry.system:<{width}}  {status} {entry.reason}")
        for check in entry.facts.get("checks", []) if isinstance(entry.facts, dict) else []:
            mark = "fired" if check["fired"] else "quiet"
            conditions = ", ".join(_check_text(c) for c in check["conditions"])
            lines.append(f"       {mark:<5} {check['rule']}: {conditions}")
    for issue in decision.errors:
        lines.append(f"  error: {issue}")
    lines.append(
        f"  policy {decision.policy.name} {decision.policy.version} ({decision.policy.sha256[:12]})  trace {decision.trace_id}"
    )
    return "\n".join(lines)


def _check_text(check: dict[str, Any]) -> str:
    """One explained condition: a test with the value seen, or a group with its tests."""
    held = "yes" if check["held"] else "no"
    if "conditions" in check:
        return f"{check['condition']}({', '.join(_check_text(c) for c in check['conditions'])}) [{held}]"
    return f"{check['condition']} [{held}: {'(absent)' if check['value'] is None else repr(check['value'])}]"


def issues_text(issues: Iterable[Issue]) -> str:
    return "\n".join(str(issue) for issue in issues)


def warning_text(issue: Issue) -> str:
    """A lint warning, shaped like an error line: `file:line:col: path: warning: message [code]`."""
    where = issue.location()
    head = f"{where}: {issue.path}" if where else issue.path
    return f"{head}: warning: {issue.message} [{issue.code}]"


def to_json_line(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False)


def metrics_line(metrics: dict[str, Any]) -> str:
    """`Engine.metrics()` in one line, for `protect evaluate -v`."""
    latency = metrics["latency_ms"]
    times = f"; p50 {latency['p50']:g} ms, p99 {latency['p99']:g} ms" if latency["window"] else ""
    return (
        f"{metrics['decisions']} decision(s): {metrics['approved']} approved, {metrics['denied']} denied "
        f"({metrics['overridden']} approved by override, {metrics['invalid']} invalid, {metrics['errors']} error(s))"
        f"{times}"
    )
