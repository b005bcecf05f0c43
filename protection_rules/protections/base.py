"""What every protection is made of: typed parameters, facts, rules, and an explanation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import msgspec

from ..conditions import Condition, Expr
from ..models import AssetState, ProtectionRequest, StateChange, Status


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A rule as a protection declares it: `<protection>.<outcome>[.<variant>]`, all conditions
    ANDed; each is a test or a tree of them (conditions.py)."""

    id: str
    conditions: tuple[Expr, ...]


class Context(msgspec.Struct, frozen=True, gc=False):
    """Everything about one request that protections read, resolved once (see facts.py); a
    Struct, built in C, as it is built for every request."""

    request: ProtectionRequest
    now: int
    state: AssetState
    state_source: Literal["request", "store", "none"]
    entry_at: int | None
    entry_source: str


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """A protection's lean verdict; the engine stamps priority and fired rule ids on it (a
    Struct, as `ProtectionResult`: one per protection for every trace written)."""

    status: Status
    reason: str
    facts: Mapping[str, Any] = msgspec.field(default_factory=dict)
    unblocks_at: int | None = None
    state_changes: tuple[StateChange, ...] = ()


class Protection:
    """Base of the built-in protections. Subclasses set `name` and `fact_types`.

    `fact_types` declares every fact field the protection puts in the engine fact, with its
    Python type: the compiler type-checks rule literals against it and the network checks
    every fact against it, because durable-rules compares mixed types silently wrong.
    """

    name: ClassVar[str]
    overridable: ClassVar[bool] = True
    short_circuits: ClassVar[bool] = False
    can_block: ClassVar[bool] = True
    fact_types: ClassVar[Mapping[str, type]] = {}
    # the facts of fact_catalogue.py this protection tests (custom protections only)
    custom_facts: tuple[str, ...] = ()

    def __init__(self, block: Mapping[str, Any]):
        self.enabled: bool = block["enabled"]
        self.blocks: tuple[str, ...] = tuple(block.get("blocks", ()))
        self._blocked_list = ", ".join(self.blocks) or "nothing"

    def facts(self, ctx: Context) -> dict[str, Any]:
        raise NotImplementedError

    def rules(self) -> tuple[RuleSpec, ...]:
        raise NotImplementedError

    def explain(self, ctx: Context, facts: Mapping[str, Any], fired: frozenset[str]) -> Outcome:
        raise NotImplementedError

    def blocking_rules(self) -> frozenset[str]:
        """The rules whose firing means this protection blocks: `<name>.block[.<variant>]`.
        The decision is assembled from these alone; `explain` (the trace) agrees with them."""
        block = f"{self.name}.block"
        return frozenset(spec.id for spec in self.rules() if spec.id == block or spec.id.startswith(block + "."))

    def unblocks_at(self, ctx: Context, facts: Mapping[str, Any]) -> int | None:
        """When a block of this request would lift with no new events (None: unknown or never)."""
        return None

    def state_changes(self, ctx: Context, fired: frozenset[str]) -> tuple[StateChange, ...]:
        """The state changes committing the decision applies for this protection."""
        return ()

    def blocks_action(self) -> Condition:
        return Condition("action", "in", self.blocks)

    def not_blocked_here(self, ctx: Context) -> Outcome | None:
        """`not_applicable` when this protection never blocks the requested action."""
        if ctx.request.action in self.blocks:
            return None
        return Outcome(
            "not_applicable", f"`{ctx.request.action}` is not an action {self.name} blocks (it blocks: {self._blocked_list})"
        )
