"""`protect evaluate`: decide one request or a batch, print the decisions, exit by verdict."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..decision import exit_code
from ..engine import Engine
from ..errors import EXIT_INVALID_INPUT, PolicyInvalid
from ..loading import DocumentInvalid, read_requests, read_text
from ..reporting import decision_json, decision_text, issues_text
from ..resources import default_policy_path
from ..timestamps import format_instant, parse_instant


@click.command()
@click.argument("request", type=click.Path(allow_dash=True))
@click.option("--policy", "policy_path", type=click.Path(), default=None, help="Policy YAML. [default: the shipped default policy]")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--now", default=None, metavar="ISO", help="Evaluate as of this instant, replacing each request's current_date.")
@click.option("--explain", is_flag=True, help="Show every rule's conditions, the values seen and whether they held.")
@click.option("--no-audit", is_flag=True, help="Do not write the audit trail (accepted now; the audit trail comes next).")
def evaluate(request: str, policy_path: str | None, fmt: str, now: str | None, explain: bool, no_audit: bool) -> None:
    """Decide REQUEST: a .json file (one request), a .jsonl file (one per line) or - (stdin).

    Exit 0 when all are approved, 1 when any is denied, 3 when any input is invalid,
    4 on an internal failure.

    \b
    Example:
      protect evaluate examples/requests/holding_close.json
      protect evaluate --format json batch.jsonl
      cat request.json | protect evaluate -
    """
    if now is not None:
        try:
            now = format_instant(parse_instant(now))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--now") from None
    try:
        engine = Engine.from_policy(policy_path or default_policy_path())
    except PolicyInvalid as exc:
        click.echo(issues_text(exc.issues), err=True)
        raise SystemExit(EXIT_INVALID_INPUT) from None
    name = "<stdin>" if request == "-" else request
    try:
        text = sys.stdin.read() if request == "-" else read_text(request)
    except DocumentInvalid as exc:
        if any(issue.code == "file-not-found" for issue in exc.issues):
            raise click.UsageError(f"{request}: no such file") from None
        text = None
        documents = []
        decisions = [engine.reject(exc.issues, source=name)]
    if text is not None:
        lines = None if request == "-" else Path(request).suffix.lower() == ".jsonl"
        documents = read_requests(text, name, lines=lines)
        decisions = []
        for document in documents:
            data = document.data
            if isinstance(data, dict) and now is not None:
                data = {**data, "current_date": now}
            decisions.append(
                engine.reject(document.issues, source=document.label)
                if document.issues
                else engine.evaluate(data, explain=explain, source=document.label)
            )
    batch = len(decisions) > 1 or (documents and documents[0].label != name)
    for index, decision in enumerate(decisions):
        if fmt == "json":
            click.echo(decision_json(decision, indent=None if batch else 2))
        else:
            click.echo(decision_text(decision, label=documents[index].label if batch and documents else None))
    raise SystemExit(exit_code(decisions))

