"""The rebalancer adapter (the plan's Phase 3): a rebalance's targets in, approved and denied
targets out, executions back into the state store.

    rebalancer = ProtectionAwareRebalancer(Engine.from_policy(state=SqliteStateStore("state.sqlite")))
    result = rebalancer.validate(targets, "2026-03-12T09:00:00Z", regime={"changed": False})
    for target in result.approved:
        if target.action != "hold":
            ...  # execute the order, then:
            rebalancer.record_fill(target, executed_at, size)

Positions live in the engine's state store: the holding clock and whipsaw cycles come from the
executions `record_fill` records, grace periods and override cooldowns from the decisions it
commits. So the adapter needs an engine with a state store.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .decision import exit_code
from .engine import Engine
from .errors import InputInvalid, Issue, Refused, RequestInvalid, StateError, TargetInvalid
from .loading import MAX_MAGNITUDE
from .models import PolicyRef, ProtectionDecision
from .targets import HOLD_BAND, RebalancingTarget, check_regime, derive_action, duplicate_issues
from .timestamps import format_instant, to_instant

__all__ = [
    "HOLD_BAND",
    "DecisionService",
    "ProtectionAwareRebalancer",
    "RebalanceResult",
    "RebalanceSummary",
    "RebalancingTarget",
    "derive_action",
]


class DecisionService(Protocol):
    """What the rebalancer needs to decide and to feed fills back: an `Engine`, or a
    `client.Client` of the decision service (`protect serve`)."""

    @property
    def policy(self) -> Any:
        """The policy in force (its `name`, `version`, `sha256`): named when nothing was decided."""

    def evaluate_many(self, requests: Sequence[Mapping[str, Any]]) -> list[ProtectionDecision]: ...

    def commit(self, decision: ProtectionDecision) -> bool: ...

    def record_execution(self, asset: str, kind: Literal["open", "close"], at: int, size: float | None) -> Any: ...


# Approvals waiting for their fill, per rebalancer; older ones can no longer be filled through it
PENDING_CAPACITY = 10_000


@dataclass(frozen=True, slots=True)
class RebalanceSummary:
    """Counts of one rebalance. `approved` includes holds; `approval_rate` is approved / targets
    (the plan's figure; 0 for no targets); a denial counts once for each protection that blocked it."""

    targets: int
    evaluated: int
    approved: int
    denied: int
    holds: int
    overridden: int
    approval_rate: float
    denials_by_protection: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "denials_by_protection": dict(self.denials_by_protection)}


@dataclass(frozen=True, slots=True)
class RebalanceResult:
    """The targets of one rebalance, split by decision, each carrying it (None for a hold)."""

    current_date: int
    approved: tuple[RebalancingTarget, ...]
    denied: tuple[RebalancingTarget, ...]
    summary: RebalanceSummary
    trace_id: str | None  # of the batch; None when every target was a hold
    policy: PolicyRef

    @property
    def decisions(self) -> list[ProtectionDecision]:
        """The decisions made, approved ones first."""
        return [t.decision for t in (*self.approved, *self.denied) if t.decision is not None]

    @property
    def exit_code(self) -> int:
        """As `protect evaluate`: 0 all approved, 1 any denied, 3 an invalid request, 4 a failure."""
        return exit_code(self.decisions)

    def to_dict(self) -> dict[str, Any]:
        """The rebalance-report.v1 document."""
        return {
            "date": format_instant(self.current_date),
            "trace_id": self.trace_id,
            "policy": self.policy.to_dict(),
            "summary": self.summary.to_dict(),
            "approved": [_target_dict(t) for t in self.approved],
            "denied": [_target_dict(t) for t in self.denied],
        }


def _target_dict(target: RebalancingTarget) -> dict[str, Any]:
    return {**target.to_dict(), "decision": target.decision.to_dict() if target.decision else None}


class ProtectionAwareRebalancer:
    """Validates a rebalance's targets through an engine (or a client of the decision service,
    whose engine has a state store), and feeds executions back.

    An engine must have a state store (`StateError` otherwise). `hold_band`: a change of at most
    this share of the current allocation is a hold when a target gives no action (0.05: 5%).
    Safe to share between threads.
    """

    def __init__(self, engine: DecisionService, *, hold_band: float = HOLD_BAND, pending_capacity: int = PENDING_CAPACITY):
        if isinstance(engine, Engine) and engine.state is None:
            raise StateError(
                "the rebalancer needs an engine with a state store (positions, fills, grace periods and "
                "cooldowns live there): Engine.from_policy(..., state=SqliteStateStore(path)) or --state PATH"
            )
        if isinstance(hold_band, bool) or not isinstance(hold_band, (int, float)) or not 0 <= hold_band < 1:
            raise InputInvalid([Issue("schema-range", "$.hold_band", f"`hold_band` must be >= 0 and < 1, got `{hold_band!r}`")])
        self.engine = engine
        self.hold_band = hold_band
        self._capacity = pending_capacity
        self._pending: OrderedDict[str, RebalancingTarget] = OrderedDict()
        self._positions: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def positions(self) -> dict[str, float]:
        """The size of each position after the fills recorded through this rebalancer (a copy)."""
        with self._lock:
            return dict(self._positions)

    # ------------------------------------------------------------------------------ validate

    def validate(
        self, targets: Iterable[RebalancingTarget], current_date: Any, regime: Mapping[str, Any] | None = None
    ) -> RebalanceResult:
        """Decide every target that is not a hold, in one batch (one trace id, one audit write).

        `current_date`: a timezone-aware datetime, ISO text or epoch microseconds; `regime`: the
        request's regime object, carried by every request. A hold is approved with decision None,
        never evaluated. Raises `TargetInvalid` (a target that is not one, two for one asset) or
        `RequestInvalid` (a bad date or regime) before anything is decided.

        A denial's state changes (a grace period that starts or ends) are committed at once: no
        order follows it, and a failing asset's grace period counts from when it was first seen.
        An approval's are committed by `record_fill`, after the order executed.
        """
        now = _instant(current_date, "$.current_date", RequestInvalid)
        items = list(targets)
        wrong = [
            Issue("schema-type", f"$[{index}]", f"`{type(item).__name__}` is not a RebalancingTarget")
            for index, item in enumerate(items)
            if not isinstance(item, RebalancingTarget)
        ]
        if wrong or (wrong := duplicate_issues(items)):
            raise TargetInvalid(wrong)
        if regime is not None:
            if not isinstance(regime, Mapping):
                raise RequestInvalid([Issue("schema-type", "$.regime", "the regime must be an object (the request's `regime`)")])
            check_regime(regime, now)
        resolved = [target.resolved(self.hold_band) for target in items]
        moving = [target for target in resolved if target.action != "hold"]
        when = format_instant(now)
        decisions = iter(self.engine.evaluate_many([_request(t, when, regime) for t in moving]) if moving else [])
        decided = [dataclasses.replace(t, decision=None if t.action == "hold" else next(decisions)) for t in resolved]
        approved = tuple(t for t in decided if t.decision is None or t.decision.approved)
        denied = tuple(t for t in decided if t.decision is not None and not t.decision.approved)
        for target in denied:
            if target.decision.state_changes:  # type: ignore[union-attr]
                self.engine.commit(target.decision)  # type: ignore[arg-type]
        self._keep([t for t in approved if t.decision is not None])
        made = [t.decision for t in decided if t.decision is not None]
        # the batch was decided under one policy: name it, not one a reload put in force since
        policy = made[0].policy if made else self.engine.policy
        return RebalanceResult(
            current_date=now,
            approved=approved,
            denied=denied,
            summary=_summary(decided, approved, denied),
            trace_id=_trace(decided),
            policy=PolicyRef(policy.name, policy.version, policy.sha256),
        )

    def _keep(self, approvals: list[RebalancingTarget]) -> None:
        with self._lock:
            for target in approvals:
                self._pending[target.decision.decision_id] = target  # type: ignore[union-attr]
            while len(self._pending) > self._capacity:
                self._pending.popitem(last=False)

    # ------------------------------------------------------------------------------ fills

    def record_fill(self, target: RebalancingTarget, at: Any, size: float | None = None) -> None:
        """Record that an approved target executed at `at`, and commit its decision.

        An open or a close is recorded as an execution in the state store (the holding clock and
        whipsaw cycles count them); an increase or a decrease records none (it moves neither the
        entry date nor a cycle) and only updates `positions`. The decision's state changes (an
        override's cooldown, a grace period) are then committed. `size` is the position's size
        after the fill (for a close: the size closed), in the allocations' unit; default: the
        target's, a complete fill. Each approval is filled once.

        Raises `Refused` for a hold, a denied target, or one this rebalancer is not waiting to
        fill; `InputInvalid` for a bad `at` (or one before the decision) or size. A fill that
        failed can be recorded again: committing is idempotent.
        """
        decision = _approval(target)
        when = _instant(at, "$.at", InputInvalid)
        if decision.evaluated_at is not None and when < decision.evaluated_at:
            raise InputInvalid(
                [
                    Issue(
                        "fill-before-decision",
                        "$.at",
                        f"target `{target.asset}`: the fill at `{format_instant(when)}` is before its decision "
                        f"at `{format_instant(decision.evaluated_at)}`",
                    )
                ]
            )
        filled = _fill_size(target, size)
        with self._lock:
            kept = self._pending.pop(decision.decision_id, None)
        if kept is None or kept != target:
            if kept is not None:
                self._keep([kept])
            raise Refused(
                f"target `{target.asset}` ({target.action}, decision `{decision.decision_id}`) is not an approval this "
                f"rebalancer is waiting to fill: filled already, changed since, validated elsewhere, or older than "
                f"the last {self._capacity:,} approvals"
            )
        try:
            self.engine.commit(decision)
            if target.action in ("open", "close"):
                self.engine.record_execution(target.asset, target.action, when, filled)  # type: ignore[arg-type]
        except BaseException:
            self._keep([kept])  # not filled: it can be filled again
            raise
        with self._lock:
            if target.action == "close":
                self._positions.pop(target.asset, None)
            else:
                self._positions[target.asset] = filled


def _request(target: RebalancingTarget, when: str, regime: Mapping[str, Any] | None) -> dict[str, Any]:
    """The plan's mapping: allocations to sizes, score to `current_score`, priority into metadata."""
    request: dict[str, Any] = {
        "asset": target.asset,
        "action": target.action,
        "current_date": when,
        "current_size": target.current_allocation_pct,
        "target_size": target.target_allocation_pct,
        "metadata": {**target.metadata, "priority": target.priority, "rebalancing_context": True},
    }
    if target.score is not None:
        request["current_score"] = target.score
    if target.reason:
        request["reason"] = target.reason
    if regime is not None:
        request["regime"] = dict(regime)
    return request


def _summary(
    decided: list[RebalancingTarget], approved: tuple[RebalancingTarget, ...], denied: tuple[RebalancingTarget, ...]
) -> RebalanceSummary:
    blocked = Counter(system for t in denied for system in t.decision.blocking_systems)  # type: ignore[union-attr]
    return RebalanceSummary(
        targets=len(decided),
        evaluated=sum(t.decision is not None for t in decided),
        approved=len(approved),
        denied=len(denied),
        holds=sum(t.decision is None for t in decided),
        overridden=sum(t.decision is not None and t.decision.override_applied for t in approved),
        approval_rate=len(approved) / len(decided) if decided else 0.0,
        denials_by_protection=dict(sorted(blocked.items(), key=lambda item: (-item[1], item[0]))),
    )


def _trace(decided: list[RebalancingTarget]) -> str | None:
    return next((t.decision.trace_id for t in decided if t.decision is not None), None)


def _approval(target: RebalancingTarget) -> ProtectionDecision:
    if not isinstance(target, RebalancingTarget):
        raise Refused(f"`{type(target).__name__}` is not a RebalancingTarget")
    if target.action == "hold":
        raise Refused(f"target `{target.asset}` is a hold: nothing executes, so there is nothing to fill")
    decision = target.decision
    if not isinstance(decision, ProtectionDecision):
        raise Refused(f"target `{target.asset}` has no decision: validate it with this rebalancer first")
    if not decision.approved:
        blockers = ", ".join(decision.blocking_systems) or "the engine"
        raise Refused(f"target `{target.asset}` ({target.action}) was denied by {blockers}: a denied target cannot be filled")
    return decision


def _fill_size(target: RebalancingTarget, size: Any) -> float:
    if size is None:
        return target.current_allocation_pct if target.action == "close" else target.target_allocation_pct
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not 0 < size <= MAX_MAGNITUDE:
        raise InputInvalid(
            [Issue("size-invalid", "$.size", f"target `{target.asset}`: `{size!r}` is not a fill size (a finite number > 0)")]
        )
    return float(size)


def _instant(value: Any, path: str, error: type[InputInvalid]) -> int:
    try:
        return to_instant(value)
    except ValueError as exc:
        raise error([Issue("timestamp-invalid", path, str(exc))]) from None
