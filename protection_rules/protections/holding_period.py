"""A position must be held `min_days` before it may be closed or cut; `max_days` flags review."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..timestamps import MICROS_PER_DAY, days, format_duration, format_instant
from .base import Condition, Context, Outcome, Protection, RuleSpec


class HoldingPeriod(Protection):
    name = "holding_period"
    fact_types = {"holding_has_entry": bool, "holding_held_us": int}

    def __init__(self, block: Mapping[str, Any]):
        super().__init__(block)
        self.min_days: int = block["min_days"]
        self.max_days: int = block["max_days"]
        self._min_us = days(self.min_days)

    def facts(self, ctx: Context) -> dict[str, Any]:
        if ctx.entry_at is None:
            return {"holding_has_entry": False}
        return {"holding_has_entry": True, "holding_held_us": ctx.now - ctx.entry_at}

    def rules(self) -> tuple[RuleSpec, ...]:
        has_entry = Condition("holding_has_entry", "==", True)
        rules = [RuleSpec(f"{self.name}.review", (has_entry, Condition("holding_held_us", ">=", days(self.max_days))))]
        if self.blocks:
            rules.append(
                RuleSpec(
                    f"{self.name}.block",
                    (self.blocks_action(), has_entry, Condition("holding_held_us", "<", days(self.min_days))),
                )
            )
        return tuple(rules)

    def unblocks_at(self, ctx: Context, facts: Mapping[str, Any]) -> int | None:
        return None if ctx.entry_at is None else ctx.entry_at + self._min_us

    def explain(self, ctx: Context, facts: Mapping[str, Any], fired: frozenset[str]) -> Outcome:
        if ctx.entry_at is None:
            return Outcome(
                "not_applicable",
                "no entry date: no `position_entry_date` and no open event without a later close",
                {"entry_date": None},
            )
        held = facts["holding_held_us"]
        until = self.unblocks_at(ctx, facts)
        review = f"{self.name}.review" in fired
        shown = {
            "entry_date": format_instant(ctx.entry_at),
            "entry_source": ctx.entry_source,
            "days_held": held // MICROS_PER_DAY,
            "min_days": self.min_days,
            "max_days": self.max_days,
            "review": review,
        }
        flag = f"; held past the {self.max_days}-day maximum: flagged for review" if review else ""
        if f"{self.name}.block" in fired:
            return Outcome(
                "block",
                f"held {format_duration(held)} of the {self.min_days}-day minimum; "
                f"`{ctx.request.action}` allowed from {format_instant(until)}",
                shown,
                unblocks_at=until,
            )
        not_here = self.not_blocked_here(ctx)
        if not_here:
            return Outcome(not_here.status, not_here.reason + flag, shown)
        return Outcome("pass", f"held {format_duration(held)}, past the {self.min_days}-day minimum{flag}", shown)
