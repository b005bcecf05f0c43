"""`protect audit`: verify the hash chain, query the records, summarise the decisions."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import click

from ..audit import KINDS, JsonlAuditLog, RecordFilter, SqliteAuditLog, canonical_json, open_audit, record_kind
from ..paths import AUDIT_ENV, default_audit_path
from ..policy_source import read_policy_source
from ..replay import ReplayReport, replay_audit
from ..reporting import to_json_line
from ..timestamps import format_instant, parse_instant
from .options import echo_report, existing, existing_audit, format_option, output_option, say, verbosity, verbosity_options
from .progress import progress_bar

_audit_option = click.option(
    "--audit",
    "audit_path",
    envvar=AUDIT_ENV,
    show_envvar=True,
    default=lambda: str(default_audit_path()),
    show_default=str(default_audit_path()),
    metavar="PATH",
    help="The audit log: SQLite, JSON Lines when the name ends in .jsonl, or a postgresql:// URL.",
)


def _instant(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return format_instant(parse_instant(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _filter_options(*, kinds: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The filter options, passed to the command as one `where: RecordFilter`."""
    options = [
        click.option("--asset", default=None, help="Only this asset."),
        click.option("--decision", type=click.Choice(["approve", "deny"]), default=None, help="Only approvals or denials."),
        click.option("--blocking-system", default=None, metavar="NAME", help="Only decisions this protection blocked."),
        click.option("--policy-version", default=None, metavar="VERSION", help="Only decisions under this policy version."),
        click.option(
            "--since", default=None, metavar="ISO", callback=_instant, help="Only records at or after this instant (see below)."
        ),
        click.option("--until", default=None, metavar="ISO", callback=_instant, help="Only records before this instant."),
        click.option(
            "--trace-id",
            default=None,
            metavar="ID",
            help="Only the decisions with this trace id (one evaluate call, or one batch).",
        ),
    ]
    if kinds:
        options.insert(0, click.option("--kind", type=click.Choice(KINDS), default=None, help="Only records of this kind."))
    names = ["kind", "asset", "decision", "blocking_system", "policy_version", "since", "until", "trace_id"]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def with_filter(**kwargs: Any) -> Any:
            where = RecordFilter(**{name: kwargs.pop(name) for name in names if name in kwargs})
            return command(where=where, **kwargs)

        for option in reversed(options):
            with_filter = option(with_filter)
        return with_filter

    return decorate


def _opened(path: str) -> SqliteAuditLog | JsonlAuditLog:
    return open_audit(existing_audit(path), mode="read")


@click.group()
def audit() -> None:
    """Check and search the audit trail: one hash-chained record per decision."""


@audit.command()
@_audit_option
@format_option()
@output_option
@verbosity_options
def verify(audit_path: str, fmt: str) -> None:
    """Check the audit log's hash chain and name the first changed, deleted or reordered record.

    Exit 0 when the chain is valid, 1 when it is broken, 2 when the file does not exist, 4
    when it is unreadable or not an audit log. Deleting the last records leaves a valid chain:
    keep the printed head hash elsewhere and compare it. An interrupted append at the end of a
    JSON Lines log is left out and reported; the next command that writes the log rolls it
    back. Never writes. Text: -q prints nothing for a valid chain; -v adds nothing.

    \b
    Example:
      protect audit verify
      protect audit verify --audit audit.jsonl --format json
    """
    with _opened(audit_path) as log:
        result = log.verify()
    if fmt == "json":
        echo_report(to_json_line({"audit": audit_path, **result.to_dict()}))
    elif not (result.ok and verbosity() < 0):
        head = f" (head {result.head})" if result.ok and result.head else ""
        echo_report(f"audit log {audit_path}: {result.describe()}{head}")
    raise click.exceptions.Exit(0 if result.ok else 1)


@audit.command()
@_audit_option
@_filter_options(kinds=True)
@format_option(aliases={"jsonl": "json"})
@output_option
@verbosity_options
def query(audit_path: str, fmt: str, where: RecordFilter) -> None:
    """List the records of every kind (decision, rollback, state_correction) that match every
    filter, in sequence order. Time filters compare a decision's evaluated_at and another
    record's at.

    `--format json` prints one full record per line, JSON Lines (`jsonl` is accepted too; an
    unfiltered dump is itself a valid .jsonl audit log). The count goes to stderr: -q leaves
    it out, -v adds the log and the filter.

    \b
    Example:
      protect audit query --asset AAPL --decision deny --since 2026-03-01 --until 2026-04-01
      protect audit query --trace-id 8fcdda8905ba47679db91871f801846d --format json
      protect audit query --kind rollback
    """
    count = 0
    say(f"audit log {audit_path}; {_where_text(where)}")
    with _opened(audit_path) as log:
        if fmt == "json":
            for record in log.query(where):
                echo_report(canonical_json(record))
                count += 1
        else:
            rows = [_row(record) for record in log.query(where)]
            count = len(rows)
            echo_report(
                _table(["#", "kind", "at", "asset", "action", "decision", "blocked by", "policy", "ms", "id or note"], rows)
            )
    say(f"{count} record(s)", level=0)


@audit.command()
@_audit_option
@_filter_options(kinds=False)
@format_option()
@output_option
@verbosity_options
def stats(audit_path: str, fmt: str, where: RecordFilter) -> None:
    """Count decisions (records of other kinds are not counted): approval and override rates,
    denials per protection, p50/p99 decision time (nearest rank), overall and per UTC day of
    evaluated_at. Text: -q prints only the counts line; -v adds the log and the filter (stderr).

    \b
    Example:
      protect audit stats
      protect audit stats --since 2026-03-01 --policy-version 1.0.0 --format json
    """
    say(f"audit log {audit_path}; {_where_text(where)}")
    with _opened(audit_path) as log:
        summary = log.stats(where)
    echo_report(to_json_line(summary) if fmt == "json" else _stats_text(summary, brief=verbosity() < 0))


@audit.command()
@_audit_option
@click.option(
    "--policy",
    "policy_paths",
    multiple=True,
    required=True,
    metavar="FILE",
    help="A policy the records name (by sha256); repeat.",
)
@format_option()
@output_option
@verbosity_options
@click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default="the number of cores")
def replay(audit_path: str, policy_paths: tuple[str, ...], fmt: str, workers: int) -> None:
    """Re-decide every decision record under the policy it names and list each record whose
    decision differs from the one recorded. On an untouched log none differ: the engine is
    deterministic and each record holds all it was decided on.

    Each record is decided with the request as received, its own current_date and the state
    snapshot recorded beside it. Not compared, because they differ per run: decision_id,
    trace_id, decision_time_ms, engine_version and errors[].file (where the request was read
    from). Records under a policy not given with --policy, and requests that were never
    parsed, are counted as skipped. Exit 0 when none differ, 1 when any does, or when there
    were decision records and none could be replayed (a wrong --policy proves nothing).

    \b
    Example:
      protect audit replay --policy policies/default.yaml
      protect audit replay --audit audit.jsonl --policy v1.yaml --policy v2.yaml --format json
    """
    policies = [read_policy_source(existing(path)) for path in policy_paths]
    with progress_bar("replaying") as advance:
        report = replay_audit(existing_audit(audit_path), policies, workers=workers, progress=advance)
    echo_report(to_json_line(report.to_dict()) if fmt == "json" else _replay_text(report))
    vacuous = report.records > 0 and report.replayed == 0
    raise click.exceptions.Exit(1 if report.differences or vacuous else 0)


# ------------------------------------------------------------------------------------ rendering


def _row(record: dict[str, Any]) -> list[str]:
    kind = record_kind(record)
    if kind != "decision":
        return [
            str(record.get("sequence", "")),
            str(kind),
            record.get("at") or "-",
            record.get("asset") or "-",
            record.get("action") or "-",
            *("-" * 4),
            _note(record),
        ]
    policy = record.get("policy") or {}
    time_ms = record.get("decision_time_ms")
    return [
        str(record.get("sequence", "")),
        "decision",
        record.get("evaluated_at") or "-",
        record.get("asset") or "-",
        record.get("action") or "-",
        record.get("decision") or "-",
        ",".join(record.get("blocking_systems") or ()) or "-",
        f"{policy.get('name', '?')} {policy.get('version', '?')}",
        f"{time_ms:.2f}" if isinstance(time_ms, (int, float)) else "-",
        record.get("decision_id") or "-",
    ]


def _note(record: dict[str, Any]) -> str:
    dropped = record.get("dropped")
    if record_kind(record) == "rollback" and isinstance(dropped, dict):
        return (
            f"dropped {dropped.get('records')} record(s) in {dropped.get('lines')} line(s), {dropped.get('bytes')} bytes "
            f"from #{dropped.get('first_sequence')} (kept in {dropped.get('saved_as')})"
        )
    return str(record.get("reason") or "-")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in [header, *rows]
    )


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _where_text(where: RecordFilter) -> str:
    given = [
        f"{f.name}={getattr(where, f.name)}" for f in dataclasses.fields(where) if f.init and getattr(where, f.name) is not None
    ]
    return f"filter: {' '.join(given)}" if given else "no filter"


def _stats_text(summary: dict[str, Any], *, brief: bool) -> str:
    times = summary["decision_time_ms"]
    denials = ", ".join(f"{name} {count}" for name, count in summary["denials_by_protection"].items()) or "none"
    head = (
        f"{summary['count']} decision(s): {summary['approved']} approved ({_percent(summary['approval_rate'])}), "
        f"{summary['denied']} denied, {summary['overrides']} by override ({_percent(summary['override_rate'])})"
    )
    if brief:
        return head
    lines = [
        head,
        f"decision time: p50 {_ms(times['p50'])} ms, p99 {_ms(times['p99'])} ms",
        f"denials by protection: {denials}",
    ]
    if summary["per_day"]:
        header = ["day", "decisions", "approved", "approval", "overrides", "p50 ms", "p99 ms", "denials by protection"]
        rows = [
            [
                day["day"] or "(no date)",
                str(day["count"]),
                str(day["approved"]),
                _percent(day["approval_rate"]),
                str(day["overrides"]),
                _ms(day["decision_time_ms"]["p50"]),
                _ms(day["decision_time_ms"]["p99"]),
                ", ".join(f"{name} {count}" for name, count in day["denials_by_protection"].items()) or "-",
            ]
            for day in summary["per_day"]
        ]
        lines += ["", _table(header, rows)]
    return "\n".join(lines)


def _replay_text(report: ReplayReport) -> str:
    skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(report.skipped.items())) or "none"
    lines = [
        f"audit log {report.audit}: {report.records} decision record(s), {report.replayed} replayed, "
        f"{len(report.differences)} differ; skipped: {skipped}"
    ]
    lines += [f"  policy not given: sha256 {sha} ({count} record(s))" for sha, count in sorted(report.missing_policies.items())]
    for difference in report.differences:
        lines.append(f"{difference.label}  {difference.decision_id}  {difference.action} {difference.asset}")
        lines += [f"  {path}: recorded {to_json_line(old)}, replayed {to_json_line(new)}" for path, old, new in difference.fields]
    return "\n".join(lines)
