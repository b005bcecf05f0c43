"""`protect evaluate`: decide one request or a batch, record them, print them, exit by verdict."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..decision import exit_code
from ..loading import DocumentInvalid, RequestDocument, read_requests, read_text
from ..reporting import decision_json, decision_text
from ..timestamps import format_instant, parse_instant
from .options import (
    audit_options,
    build_engine,
    open_sink,
    open_store,
    policy_option,
    state_option,
)


@click.command()
@click.argument("request", type=click.Path(allow_dash=True))
@policy_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--now", default=None, metavar="ISO", help="Evaluate as of this instant, replacing each request's current_date.")
@click.option("--explain", is_flag=True, help="Show every rule's conditions, the values seen and whether they held.")
@state_option
@click.option("--no-state", is_flag=True, help="Ignore the state store: use only the state inside each request.")
@audit_options
def evaluate(request, policy_path, fmt, now, explain, state_path, no_state, audit_path, no_audit) -> None:
    """Decide REQUEST: a .json file (one request), a .jsonl file (one per line) or - (stdin).

    A request without a `state` object reads the asset's state from the state store. Every
    decision is recorded in the audit trail first; one that cannot be recorded is a deny.
    Exit 0 when all are approved, 1 when any is denied, 3 when any input is invalid,
    4 on an internal failure (including an audit trail that cannot be written).

    \b
    Example:
      protect evaluate examples/requests/holding_close.json
      protect evaluate --format json --audit audit.sqlite batch.jsonl
      cat request.json | protect evaluate --no-audit -
    """
    if now is not None:
        try:
            now = format_instant(parse_instant(now))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--now") from None
    name = "<stdin>" if request == "-" else request
    try:
        text = sys.stdin.read() if request == "-" else read_text(request)
        documents = read_requests(text, name, lines=None if request == "-" else Path(request).suffix.lower() == ".jsonl")
    except DocumentInvalid as exc:
        if any(issue.code == "file-not-found" for issue in exc.issues):
            raise click.UsageError(f"{request}: no such file") from None
        documents = [RequestDocument(name, issues=tuple(exc.issues))]
    if now is not None:
        documents = [_with_now(doc, now) for doc in documents]
    store = None if no_state else open_store(state_path, for_writing=False)
    sink = open_sink(audit_path, no_audit)
    try:
        engine = build_engine(policy_path, state=store, audit=sink)
        decisions = engine.evaluate_documents(documents, explain=explain)
    finally:
        for resource in (store, sink):
            if resource is not None:
                resource.close()
    batch = len(documents) > 1 or documents[0].label != name
    for document, decision in zip(documents, decisions, strict=True):
        if fmt == "json":
            click.echo(decision_json(decision, indent=None if batch else 2))
        else:
            click.echo(decision_text(decision, label=document.label if batch else None))
    raise click.exceptions.Exit(exit_code(decisions))


def _with_now(document: RequestDocument, now: str) -> RequestDocument:
    if not isinstance(document.data, dict):
        return document
    return RequestDocument(document.label, {**document.data, "current_date": now}, document.issues, document.raw)
