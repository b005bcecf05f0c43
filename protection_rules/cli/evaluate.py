"""`protect evaluate`: decide one request or a batch, record them, print them, exit by verdict."""

from __future__ import annotations

import dataclasses

import click

from ..decision import exit_code
from ..loading import RequestDocument, lines_by_name, open_requests
from ..models import ProtectionDecision
from ..reporting import decision_json, decision_text, metrics_line, verdict_line
from ..timestamps import format_instant
from .options import (
    audit_options,
    build_engine,
    echo_report,
    format_option,
    instant_option,
    open_sink,
    open_store,
    output_option,
    policy_option,
    say,
    state_option,
    verbosity,
    verbosity_options,
)


@click.command()
@click.argument("request", type=click.Path(allow_dash=True))
@policy_option
@format_option()
@output_option
@click.option("--now", default=None, metavar="ISO", help="Evaluate as of this instant, replacing each request's current_date.")
@click.option("--explain", is_flag=True, help="Show every rule's conditions, the values seen and whether they held.")
@state_option
@click.option("--no-state", is_flag=True, help="Ignore the state store: use only the state inside each request.")
@audit_options
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Decide on N cores: this process and N-1 workers (large batches only: README, Performance).",
)
@verbosity_options
def evaluate(request, policy_path, fmt, now, explain, state_path, no_state, audit_path, no_audit, workers) -> None:
    """Decide REQUEST: a .json file (one request), a .jsonl file (one per line) or - (stdin).

    A .jsonl file is streamed: each non-blank line gets one decision, in order, labelled with
    its line (`"line": N` with --format json), and a bad line gets its own deny-with-error.
    A request without a `state` object reads the asset's state from the state store. Every
    decision is recorded in the audit trail first; one that cannot be recorded is a deny.
    Exit 0 when all are approved, 1 when any is denied, 3 when any input is invalid,
    4 on an internal failure (including an audit trail that cannot be written).
    Text: -q prints only each verdict line; -v also the policy, state store and audit
    trail used and the engine's metrics (on stderr). --workers N decides a .jsonl batch in N
    processes, with the same decisions, output and audit trail.

    \b
    Example:
      protect evaluate examples/requests/holding_close.json
      protect evaluate --format json --audit audit.sqlite batch.jsonl
      cat request.json | protect evaluate --no-audit -
      protect evaluate --workers 2 --audit audit.sqlite batch.jsonl
    """
    now = _instant(now)
    with open_requests(request, lines=lines_by_name(request)) as requests:
        documents = requests.documents if now is None else (_with_now(doc, now) for doc in requests.documents)
        store = None if no_state else open_store(state_path, for_writing=False)
        sink = open_sink(audit_path, no_audit)
        try:
            with build_engine(policy_path, state=store, audit=sink) as engine:  # closing stops its workers
                policy = engine.policy
                say(f"policy {policy.source} ({policy.name} {policy.version}, sha256 {policy.sha256})")
                say(f"state {store.path if store else 'none'}; audit {sink.path if sink else 'none'}")
                worst = 0
                for document, decision in engine.evaluate_documents(documents, explain=explain, workers=workers):
                    echo_report(_render(decision, document, fmt, lines=requests.lines))
                    worst = max(worst, exit_code([decision]))
        finally:
            for resource in (store, sink):
                if resource is not None:
                    resource.close()
    say(metrics_line(engine.metrics()))
    raise click.exceptions.Exit(worst)


def _render(decision: ProtectionDecision, document: RequestDocument, fmt: str, *, lines: bool) -> str:
    """JSON Lines input gets one line per decision with its input line; text labels it `file:N`."""
    if fmt == "json":
        return decision_json(decision, line=document.line) if lines else decision_json(decision, indent=2)
    label = document.label if lines else None
    return verdict_line(decision, label=label) if verbosity() < 0 else decision_text(decision, label=label)


def _instant(now: str | None) -> str | None:
    return None if now is None else format_instant(instant_option(now, "--now"))


def _with_now(document: RequestDocument, now: str) -> RequestDocument:
    if not isinstance(document.data, dict):
        return document
    return dataclasses.replace(document, data={**document.data, "current_date": now})
