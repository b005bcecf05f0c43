"""`protect state`: read and change the asset state store (executions, core designations)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import click

from ..audit import open_audit
from ..designations import designate, extend, revoke
from ..errors import StateError
from ..policy import load_policy
from ..recording import Recorder, wall_clock
from ..reporting import to_json_line
from ..resources import default_policy_path
from ..state import StateStore
from ..timestamps import format_instant, to_instant
from .options import audit_path_option, audit_target, open_store, policy_option, state_option


def _at(value: str | None, now: int) -> int:
    """`--at`, or the wall clock: the CLI is the one place that reads it."""
    if value is None:
        return now
    try:
        return to_instant(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None


at_option = click.option("--at", "at", default=None, metavar="ISO", help="When it happened (not in the future). [default: now]")


def _with_store(state_path: str | None, work: Callable[[StateStore], Any], *, writing: bool = True) -> Any:
    store = open_store(state_path, for_writing=writing)
    if store is None:
        raise StateError("no state store yet; record something first or pass --state")
    try:
        return work(store)
    finally:
        store.close()


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
    stored, core_record = _with_store(state_path, lambda store: (store.load(asset), store.core(asset)), writing=False)
    out: dict[str, Any] = {"asset": asset, "state": stored.to_dict() if stored else {}}
    if core_record:
        out["core"] = {"extensions": core_record.extensions, "reason": core_record.reason}
    click.echo(json.dumps(out, indent=2))


@state.command("record")
@click.argument("kind", type=click.Choice(["open", "close"]))
@click.argument("asset")
@at_option
@click.option("--size", type=float, default=None, help="Executed size.")
@state_option
def record(kind: str, asset: str, at: str | None, size: float | None, state_path: str | None) -> None:
    """Record an executed open or close of ASSET (a close ends its grace period).

    An instant more than 60 s after the wall clock is refused (exit 3): a record in the future
    would make every request on the asset invalid until then.

    \b
    Example:
      protect state record open AAPL --at 2026-03-10T09:00:00Z --size 0.05
    """
    now = wall_clock()
    when = _with_store(
        state_path, lambda store: Recorder(store, clock=lambda: now).record_execution(asset, kind, _at(at, now), size)
    )
    click.echo(to_json_line({"asset": asset, "recorded": kind, "at": format_instant(when)}))


@state.group()
def events() -> None:
    """List an asset's recorded executions, and remove a mistaken one."""


@events.command("list")
@click.argument("asset")
@state_option
def events_list(asset: str, state_path: str | None) -> None:
    """Print ASSET's recorded executions, one JSON line each, with the id `remove` takes.

    \b
    Example:
      protect state events list QQQ
    """
    for event in _with_store(state_path, lambda store: store.events(asset), writing=False):
        click.echo(to_json_line(event.to_dict()))


@events.command("remove")
@click.argument("asset")
@click.argument("event_id", type=int)
@click.option("--reason", required=True, help="Why the event is removed (kept in the audit trail).")
@state_option
@audit_path_option
def events_remove(asset: str, event_id: int, reason: str, state_path: str | None, audit_path: str | None) -> None:
    """Remove execution EVENT_ID of ASSET (a mistaken record); the correction is written to the
    audit trail first, so it stays visible (`protect audit query --kind state_correction`).

    \b
    Example:
      protect state events remove QQQ 7 --reason 'recorded with the wrong year'
    """
    with open_audit(audit_target(audit_path)) as trail:
        removed = _with_store(
            state_path,
            lambda store: Recorder(store, audit=trail).remove_event(asset, event_id, reason, operator=os.environ.get("USER")),
            writing=False,
        )
    click.echo(to_json_line({"removed": removed.to_dict(), "reason": reason}))


@state.group()
def core() -> None:
    """Designate core assets under the policy's limits (max assets at every instant, expiry, extensions)."""


def _core_command(name: str, help_text: str, apply: Callable[..., Any]) -> None:
    @core.command(name, help=help_text)
    @click.argument("asset")
    @at_option
    @click.option("--reason", default="", help="Why (kept with the designation).")
    @policy_option
    @state_option
    def command(asset: str, at: str | None, reason: str, policy_path: str | None, state_path: str | None) -> None:
        rules = load_policy(policy_path or default_policy_path()).protections["core_asset_immunity"]
        now = wall_clock()
        result = _with_store(state_path, lambda store: apply(store, rules, asset, _at(at, now), reason, now))
        expires = format_instant(result.expires_at) if result and result.expires_at is not None else None
        click.echo(to_json_line({"asset": asset, "core": result is not None, "expires_at": expires}))


_core_command(
    "add",
    "Make ASSET core from --at for the policy's expiry_days, unless that would put more than\n"
    "max_assets designations in force at any moment.\n\n\b\nExample:\n  protect state core add AAPL --reason 'index anchor'",
    lambda store, rules, asset, at, reason, now: designate(store, rules, asset, at, reason, now=now),
)
_core_command(
    "extend",
    "Extend ASSET's designation by another expiry_days (limited by max_extensions and max_assets).\n\n\b\nExample:\n  protect state core extend AAPL",
    lambda store, rules, asset, at, reason, now: extend(store, rules, asset, at, now=now),
)
_core_command(
    "revoke",
    "End ASSET's core designation.\n\n\b\nExample:\n  protect state core revoke AAPL",
    lambda store, rules, asset, at, reason, now: revoke(store, asset),
)
