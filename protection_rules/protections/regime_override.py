"""A recent regime change may bypass lower-priority protections, once per cooldown per asset."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..timestamps import days, format_duration, format_instant
from .base import Condition, Context, Outcome, Protection, RuleSpec

SEVERITIES = ("normal", "high", "critical")


class RegimeOverride(Protection):
    name = "regime_override"
    can_block = False
    fact_types = {
        "regime_changed": bool,
        "regime_severity": str,
        "regime_age_us": int,
        "override_used_before": bool,
        "override_since_us": int,
    }

    def __init__(self, block: Mapping[str, Any]):
        super().__init__(block)
        self.bypass: dict[str, tuple[str, ...]] = {s: tuple(block["bypass"].get(s, ())) for s in SEVERITIES}
        self.cooldown_days: int = block["cooldown_days"]
        self.max_age_days: int = block["max_age_days"]
        self._available_ids = tuple(
            (severity, f"{self.name}.available.{severity}", f"{self.name}.available.{severity}.cooled_down")
            for severity in SEVERITIES
        )

    def facts(self, ctx: Context) -> dict[str, Any]:
        regime = ctx.request.regime
        last = ctx.state.last_override_at
        out: dict[str, Any] = {
            "regime_changed": bool(regime and regime.changed),
            "regime_severity": regime.severity if regime else "normal",
            "regime_age_us": ctx.now - (regime.change_date if regime and regime.change_date is not None else ctx.now),
            "override_used_before": last is not None,
        }
        if last is not None:
            out["override_since_us"] = ctx.now - last
        return out

    def rules(self) -> tuple[RuleSpec, ...]:
        rules = []
        for severity in SEVERITIES:
            if not self.bypass[severity]:
                continue
            base = (
                Condition("regime_changed", "==", True),
                Condition("regime_severity", "==", severity),
                Condition("regime_age_us", ">=", 0),
                Condition("regime_age_us", "<", days(self.max_age_days)),
            )
            rules.append(RuleSpec(f"{self.name}.available.{severity}", base + (Condition("override_used_before", "==", False),)))
            rules.append(
                RuleSpec(
                    f"{self.name}.available.{severity}.cooled_down",
                    base
                    + (
                        Condition("override_used_before", "==", True),
                        Condition("override_since_us", ">=", days(self.cooldown_days)),
                    ),
                )
            )
        return tuple(rules)

    def available(self, fired: frozenset[str]) -> str | None:
        """The severity whose override rule fired, if any."""
        for severity, first, cooled in self._available_ids:
            if first in fired or cooled in fired:
                return severity
        return None

    def explain(self, ctx: Context, facts: Mapping[str, Any], fired: frozenset[str]) -> Outcome:
        regime = ctx.request.regime
        severity = facts["regime_severity"]
        shown: dict[str, Any] = {
            "available": False,
            "changed": facts["regime_changed"],
            "severity": severity,
            "bypasses": list(self.bypass[severity]),
        }
        if regime and regime.change_date is not None:
            shown["change_date"] = format_instant(regime.change_date)
        last = ctx.state.last_override_at
        if last is not None:
            shown["last_override_at"] = format_instant(last)
        if self.available(fired):
            shown["available"] = True
            return Outcome("pass", f"override available: {_transition(ctx)} may bypass {', '.join(self.bypass[severity])}", shown)
        if not facts["regime_changed"]:
            return Outcome("not_applicable", "no override: the regime has not changed", shown)
        if not self.bypass[severity]:
            return Outcome("not_applicable", f"no override: a `{severity}` regime change bypasses nothing", shown)
        if facts["regime_age_us"] >= days(self.max_age_days):
            return Outcome(
                "not_applicable",
                f"no override: the regime changed {format_duration(facts['regime_age_us'])} ago, "
                f"overrides last {self.max_age_days} days",
                shown,
            )
        until = (last or 0) + days(self.cooldown_days)
        shown["cooldown_until"] = format_instant(until)
        return Outcome(
            "not_applicable",
            f"no override: `{ctx.request.asset}` is in override cooldown until {format_instant(until)} "
            f"(last override {format_instant(last or 0)})",
            shown,
        )


def _transition(ctx: Context) -> str:
    regime = ctx.request.regime
    if regime is None:
        return "no regime change"
    moves = " to ".join(r for r in (regime.old_regime, regime.new_regime) if r)
    return f"`{regime.severity}` regime change" + (f" ({moves})" if moves else "")
