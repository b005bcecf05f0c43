"""A failing asset (score below the threshold) gets `days` of grace before it may be closed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..conditions import AllOf, AnyOf
from ..models import StateChange
from ..timestamps import MICROS_PER_DAY, days, format_duration, format_instant
from .base import Condition, Context, Outcome, Protection, RuleSpec


class GracePeriod(Protection):
    name = "grace_period"
    fact_types = {"grace_has_score": bool, "grace_score": float, "grace_has_state": bool, "grace_elapsed_us": int}

    def __init__(self, block: Mapping[str, Any]):
        super().__init__(block)
        self.days: int = block["days"]
        self.score_threshold: float = float(block["score_threshold"])
        self.decay_rate: float = float(block["decay_rate"])
        self.min_decay_factor: float = float(block["min_decay_factor"])
        self._days_us = days(self.days)
        self._failing = (Condition("grace_has_score", "==", True), Condition("grace_score", "<", self.score_threshold))
        self._carried = (Condition("grace_has_score", "==", False), Condition("grace_has_state", "==", True))
        self._within = Condition("grace_elapsed_us", "<", days(self.days))
        # what the block rules test besides the action: the asset is held in grace now
        self._holds = AnyOf((AllOf((*self._failing, self._within)), AllOf((*self._carried, self._within))))

    def facts(self, ctx: Context) -> dict[str, Any]:
        score = ctx.request.current_score
        grace = ctx.state.grace
        out: dict[str, Any] = {
            "grace_has_score": score is not None,
            "grace_has_state": grace is not None,
            # no stored grace: a grace period would start with this request
            "grace_elapsed_us": ctx.now - grace.started_at if grace else 0,
        }
        if score is not None:
            out["grace_score"] = float(score)
        return out

    def in_grace(self, ctx: Context) -> bool:
        """Whether a close of the asset would be held in grace now (the `in_grace` fact of custom
        protections), whether or not this protection is enabled or blocks `close`."""
        return self._holds.holds(self.facts(ctx))

    def rules(self) -> tuple[RuleSpec, ...]:
        failing, within = self._failing, self._within
        rules = [
            RuleSpec(f"{self.name}.starts", failing + (Condition("grace_has_state", "==", False),)),
            RuleSpec(
                f"{self.name}.recovers",
                (
                    Condition("grace_has_score", "==", True),
                    Condition("grace_score", ">=", self.score_threshold),
                    Condition("grace_has_state", "==", True),
                ),
            ),
        ]
        if self.blocks:
            rules.append(RuleSpec(f"{self.name}.block.failing", (self.blocks_action(),) + failing + (within,)))
            rules.append(RuleSpec(f"{self.name}.block.carried", (self.blocks_action(), *self._carried, within)))
        return tuple(rules)

    def explain(self, ctx: Context, facts: Mapping[str, Any], fired: frozenset[str]) -> Outcome:
        grace = ctx.state.grace
        start = grace.started_at if grace else ctx.now
        end = self.unblocks_at(ctx, facts)
        elapsed = facts["grace_elapsed_us"]
        shown: dict[str, Any] = {
            "score": facts.get("grace_score"),
            "score_threshold": self.score_threshold,
            "failing": facts.get("grace_score", self.score_threshold) < self.score_threshold,
            "grace_started_at": format_instant(start) if grace or "grace_period.starts" in fired else None,
            "grace_ends_at": format_instant(end) if grace or "grace_period.starts" in fired else None,
            "days_in_grace": elapsed // MICROS_PER_DAY,
        }
        original = grace.original_size if grace and grace.original_size is not None else ctx.request.current_size
        if original is not None and (grace or "grace_period.starts" in fired):
            factor = max(self.decay_rate ** (elapsed // MICROS_PER_DAY), self.min_decay_factor)
            shown["advised_size"] = round(original * factor, 10)
        changes = self.state_changes(ctx, fired)
        blocked = fired & {f"{self.name}.block.failing", f"{self.name}.block.carried"}
        if blocked:
            score = facts.get("grace_score")
            why = (
                f"score {score:g} is below {self.score_threshold:g}"
                if score is not None
                else "no current score; grace carried from state"
            )
            where = (
                f"in grace for {format_duration(elapsed)} of {self.days} days"
                if grace
                else f"a {self.days}-day grace period starts now"
            )
            return Outcome(
                "block",
                f"{where} ({why}); `{ctx.request.action}` allowed from {format_instant(end)}",
                shown,
                unblocks_at=end,
                state_changes=changes,
            )
        not_here = self.not_blocked_here(ctx)
        if not_here:
            return Outcome(not_here.status, not_here.reason, shown, state_changes=changes)
        if f"{self.name}.recovers" in fired:
            reason = f"score {facts['grace_score']:g} is at or above {self.score_threshold:g}: recovered, grace ends"
        elif facts["grace_has_score"] and facts["grace_score"] >= self.score_threshold:
            reason = f"score {facts['grace_score']:g} is at or above {self.score_threshold:g}: not failing"
        elif grace is not None or facts["grace_has_score"]:
            reason = f"grace period of {self.days} days ended at {format_instant(end)}; the failing asset may be closed"
        else:
            reason = "no current score and no grace period in state"
        return Outcome("pass", reason, shown, state_changes=changes)

    def unblocks_at(self, ctx: Context, facts: Mapping[str, Any]) -> int | None:
        grace = ctx.state.grace
        return (grace.started_at if grace else ctx.now) + self._days_us

    def state_changes(self, ctx: Context, fired: frozenset[str]) -> tuple[StateChange, ...]:
        asset = ctx.request.asset
        if f"{self.name}.starts" in fired:
            return (StateChange("grace_started", asset, ctx.now, original_size=ctx.request.current_size),)
        if f"{self.name}.recovers" in fired:
            return (StateChange("grace_ended", asset, ctx.now),)
        return ()
