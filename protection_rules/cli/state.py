"""`protect state` and `protect commit`: read and change the asset state store."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from ..designations import designate, extend, revoke
from ..errors import InputInvalid, StateError
from ..loading import DocumentInvalid, read_requests, read_text
from ..policy import load_policy
from ..reporting import to_json_line
from ..resources import default_policy_path
from ..timestamps import format_instant, parse_instant
from .options import build_engine, open_store, policy_option, state_option


def _at(value: str | None) -> int:
    """`--at`, or the wall clock: the CLI is the one place that may read it."""
    if value is None:
        return int(time.time() * 1_000_000)
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None


at_option = click.option("--at", "at", default=None, metavar="ISO", help="When it happened. [default: now]")


@click.group()
def state() -> None:
    """Read and change the asset state store (core designations, executions)."""


@state.command("show")
@click.argument("asset")
@state_option
def show(asset: str, state_path: str | None) -> None:
    """Print an asset's stored state as JSON (the request `state` object's shape).

    \b
    Example:
      protect state show AAPL
    """
    store = open_store(state_path, for_writing=False)
    if store is None:
        raise StateError("no state store yet; record something first or pass --state")
    try:
        stored = store.load(asset)
        core = store.core(asset)
    finally:
        store.close()
    out: dict[str, Any] = {"asset": asset, "state": stored.to_dict() if stored else {}}
    if core:
        out["core"] = {"extensions": core.extensions, "reason": core.reason}
    click.echo(json.dumps(out, indent=2))


@state.group()
def core() -> None:
    """Designate core assets under the policy's limits (max assets, expiry, extensions)."""


def _core_command(name: str, help_text: str, apply: Any) -> None:
    @core.command(name, help=help_text)
    @click.argument("asset")
    @at_option
    @click.option("--reason", default="", help="Why (kept with the designation).")
    @policy_option
    @state_option
    def command(asset: str, at: str | None, reason: str, policy_path: str | None, state_path: str | None) -> None:
        rules = load_policy(policy_path or default_policy_path()).protections["core_asset_immunity"]
        store = open_store(state_path, for_writing=True)
        try:
            record = apply(store, rules, asset, _at(at), reason)
        finally:
            store.close()
        expires = format_instant(record.expires_at) if record and record.expires_at is not None else None
        click.echo(to_json_line({"asset": asset, "core": record is not None, "expires_at": expires}))


_core_command(
    "add",
    "Make ASSET core from --at for the policy's expiry_days.\n\n\b\nExample:\n  protect state core add AAPL --reason 'index anchor'",
    lambda store, rules, asset, at, reason: designate(store, rules, asset, at, reason),
)
_core_command(
    "extend",
    "Extend ASSET's designation by another expiry_days (limited by max_extensions).\n\n\b\nExample:\n  protect state core extend AAPL",
    lambda store, rules, asset, at, reason: extend(store, rules, asset, at),
)
_core_command(
    "revoke",
    "End ASSET's core designation.\n\n\b\nExample:\n  protect state core revoke AAPL",
    lambda store, rules, asset, at, reason: revoke(store, asset),
)


@state.command("record")
@click.argument("kind", type=click.Choice(["open", "close"]))
@click.argument("asset")
@at_option
@click.option("--size", type=float, default=None, help="Executed size.")
@state_option
def record(kind: str, asset: str, at: str | None, size: float | None, state_path: str | None) -> None:
    """Record an executed open or close of ASSET (a close ends its grace period).

    \b
    Example:
      protect state record open AAPL --at 2026-03-10T09:00:00Z --size 0.05
    """
    store = open_store(state_path, for_writing=True)
    try:
        store.record_execution(asset, kind, _at(at), size)
    finally:
        store.close()
    click.echo(to_json_line({"asset": asset, "recorded": kind, "at": format_instant(_at(at)) if at else None}))


@click.command()
@click.argument("decision", type=click.Path(allow_dash=True))
@state_option
def commit(decision: str, state_path: str | None) -> None:
    """Apply the state changes of DECISION (a decision JSON, JSON Lines, or - for stdin).

    Run it after the order executed. Committing the same decision twice changes nothing.

    \b
    Example:
      protect evaluate --format json request.json > decision.json
      protect commit decision.json
    """
    name = "<stdin>" if decision == "-" else decision
    try:
        text = sys.stdin.read() if decision == "-" else read_text(decision)
    except DocumentInvalid as exc:
        raise InputInvalid(exc.issues) from None
    documents = read_requests(text, name, lines=None)
    bad = [issue for doc in documents for issue in doc.issues]
    if bad:
        raise InputInvalid(bad)
    store = open_store(state_path, for_writing=True)
    try:
        with build_engine(None, state=store) as engine:
            for document in documents:
                applied = engine.commit(document.data)
                click.echo(to_json_line({"decision_id": document.data.get("decision_id"), "applied": applied}))
    finally:
        store.close()
