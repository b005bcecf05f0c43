"""Fact enrichment: request + state + policy -> the flat fact the rule network matches.

All time arithmetic happens here (and in the protections' `facts` methods it calls), once per
request, with the half-open windows of docs/semantics.md section 2. The rule network only compares
numbers that were computed here against thresholds baked in by the compiler.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .models import AssetState, ProtectionRequest
from .protections import Context, Protection

EMPTY_STATE = AssetState()


def resolve_context(request: ProtectionRequest, stored: AssetState | None = None) -> Context:
    """Pick the state (request, else store, else none) and the position's entry date."""
    if request.state is not None:
        state, source = request.state, "request"
    elif stored is not None:
        state, source = stored, "store"
    else:
        state, source = EMPTY_STATE, "none"
    entry, entry_source = _entry(request, state)
    return Context(
        request=request,
        now=request.current_date,
        state=state,
        state_source=source,
        entry_at=entry,
        entry_source=entry_source,
    )


def _entry(request: ProtectionRequest, state: AssetState) -> tuple[int | None, str]:
    if request.position_entry_date is not None:
        return request.position_entry_date, "position_entry_date"
    # The latest open with no later close: with events in time order, that is the last event
    # when it is an open (a close after any open means the position is flat).
    if state.events and state.events[-1].type == "open":
        return state.events[-1].at, "open event"
    return None, "none"


def enrich(protections: Iterable[Protection], ctx: Context) -> dict[str, Any]:
    """The engine fact for one request: the action plus every enabled protection's facts."""
    fact: dict[str, Any] = {"action": ctx.request.action}
    for protection in protections:
        fact.update(protection.facts(ctx))
    return fact
