"""Core assets are immune: the actions in `blocks` are denied while the designation holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..models import CoreDesignation
from ..timestamps import format_instant
from .base import Condition, Context, Outcome, Protection, RuleSpec


def core_in_force(core: CoreDesignation | None, now: int) -> bool:
    """A designation is in force from `designated_at` until `expires_at` (half-open), or for good."""
    return core is not None and core.designated_at <= now and (core.expires_at is None or now < core.expires_at)


class CoreAssetImmunity(Protection):
    name = "core_asset_immunity"
    overridable = False
    short_circuits = True
    fact_types = {"core_active": bool}

    def __init__(self, block: Mapping[str, Any]):
        super().__init__(block)
        self.max_assets: int = block["max_assets"]
        self.expiry_days: int = block["expiry_days"]
        self.max_extensions: int = block["max_extensions"]

    def facts(self, ctx: Context) -> dict[str, Any]:
        return {"core_active": core_in_force(ctx.state.core, ctx.now)}

    def rules(self) -> tuple[RuleSpec, ...]:
        if not self.blocks:
            return ()
        return (RuleSpec(f"{self.name}.block", (self.blocks_action(), Condition("core_active", "==", True))),)

    def unblocks_at(self, ctx: Context, facts: Mapping[str, Any]) -> int | None:
        core = ctx.state.core
        return core.expires_at if core else None

    def explain(self, ctx: Context, facts: Mapping[str, Any], fired: frozenset[str]) -> Outcome:
        core = ctx.state.core
        shown: dict[str, Any] = {"core": facts["core_active"]}
        if core is not None:
            shown["designated_at"] = format_instant(core.designated_at)
            shown["expires_at"] = format_instant(core.expires_at) if core.expires_at is not None else None
        until = f"until {format_instant(core.expires_at)}" if core and core.expires_at is not None else "with no expiry"
        if f"{self.name}.block" in fired:
            return Outcome(
                "block",
                f"`{ctx.request.asset}` is a core asset {until}; `{ctx.request.action}` is never allowed on it",
                shown,
                unblocks_at=self.unblocks_at(ctx, facts),
            )
        not_here = self.not_blocked_here(ctx)
        if not_here:
            return Outcome(not_here.status, not_here.reason, shown)
        if core is not None and core.expires_at is not None and core.expires_at <= ctx.now:
            return Outcome("pass", f"core designation expired at {format_instant(core.expires_at)}", shown)
        return Outcome("pass", f"`{ctx.request.asset}` is not a core asset", shown)
