"""No re-entry after `max_cycles` completed open-close cycles within `period_days`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..models import PositionEvent
from ..timestamps import days, format_instant
from .base import Condition, Context, Outcome, Protection, RuleSpec


def completed_cycles(events: Sequence[PositionEvent]) -> int:
    """docs/semantics.md section 4: an open arms, the next close after an armed open completes a cycle."""
    cycles, armed = 0, False
    for event in events:
        if event.type == "open":
            armed = True
        elif armed:
            cycles, armed = cycles + 1, False
    return cycles


def in_window(events: Sequence[PositionEvent], now: int, period: int) -> list[PositionEvent]:
    """The events with `now - period < at <= now`, in time order."""
    return [e for e in events if now - period < e.at <= now]


def unblocks_at(events: Sequence[PositionEvent], now: int, period: int, max_cycles: int) -> int | None:
    """The earliest `t > now` at which, with no new events, fewer than `max_cycles` cycles remain.

    Each event leaves the window at `at + period`, so what remains after a leave time is a
    suffix of the window in time order. One pass from the right counts the cycles of every
    suffix (from an unarmed and from an armed start); one pass from the left then takes the
    first leave time whose suffix is under the limit. O(n log n) for the sort, O(n) after it.
    """
    window = sorted(in_window(events, now, period), key=lambda e: e.at)  # stable: ties keep their order
    remaining = [0] * (len(window) + 1)  # remaining[i]: cycles in window[i:], walked from unarmed
    unarmed = armed = 0
    for index in range(len(window) - 1, -1, -1):
        if window[index].type == "open":
            unarmed = armed
        else:
            armed = unarmed + 1
        remaining[index] = unarmed
    for index, event in enumerate(window):
        # events at one instant leave together; a suffix only loses cycles as it shrinks, so if
        # the events after this one are under the limit, so are those after its whole instant
        if remaining[index + 1] < max_cycles:
            return event.at + period
    return None


class WhipsawProtection(Protection):
    name = "whipsaw_protection"
    fact_types = {"whipsaw_cycles": int}

    def __init__(self, block: Mapping[str, Any]):
        super().__init__(block)
        self.max_cycles: int = block["max_cycles"]
        self.period_days: int = block["period_days"]

    def facts(self, ctx: Context) -> dict[str, Any]:
        return {"whipsaw_cycles": self.cycles(ctx)}

    def cycles(self, ctx: Context) -> int:
        """Completed open-close cycles in the window, whether or not this protection is enabled."""
        return completed_cycles(in_window(ctx.state.events, ctx.now, days(self.period_days)))

    def rules(self) -> tuple[RuleSpec, ...]:
        if not self.blocks:
            return ()
        return (
            RuleSpec(
                f"{self.name}.block",
                (self.blocks_action(), Condition("whipsaw_cycles", ">=", self.max_cycles)),
            ),
        )

    def unblocks_at(self, ctx: Context, facts: Mapping[str, Any]) -> int | None:
        return unblocks_at(ctx.state.events, ctx.now, days(self.period_days), self.max_cycles)

    def explain(self, ctx: Context, facts: Mapping[str, Any], fired: frozenset[str]) -> Outcome:
        cycles = facts["whipsaw_cycles"]
        shown = {"cycles": cycles, "max_cycles": self.max_cycles, "period_days": self.period_days}
        counted = f"{cycles} completed open-close cycle{'s' if cycles != 1 else ''} in the last {self.period_days} days"
        if f"{self.name}.block" in fired:
            until = self.unblocks_at(ctx, facts)
            when = f"; `{ctx.request.action}` allowed from {format_instant(until)}" if until is not None else ""
            return Outcome("block", f"{counted}, at or over the limit of {self.max_cycles}{when}", shown, unblocks_at=until)
        not_here = self.not_blocked_here(ctx)
        if not_here:
            return Outcome(not_here.status, not_here.reason, shown)
        return Outcome("pass", f"{counted}, below the limit of {self.max_cycles}", shown)
