"""Assemble a decision from the rules that fired (docs/semantics.md section 5), or a fail-closed deny."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from .compiler import CompiledPolicy, Step
from .errors import EXIT_APPROVED, EXIT_DENIED, EXIT_INTERNAL, EXIT_INVALID_INPUT, INTERNAL_CODES, Issue
from .models import (
    LazyTrace,
    ProtectionDecision,
    ProtectionRequest,
    ProtectionResult,
    StateChange,
)
from .protections import Context
from .timestamps import parse_instant


def assemble(
    compiled: CompiledPolicy,
    ctx: Context,
    fact: Mapping[str, Any],
    fired: Sequence[str],
    *,
    trace_id: str,
    decision_id: str,
    engine_version: str,
    explain: bool = False,
    started: float,
) -> ProtectionDecision:
    """The decision from the rules that fired. Which protections block, what they bypass and
    change follows from the rule ids alone; the trace (each protection's reason and facts) is
    written only when it is read (`LazyTrace`), from the same inputs."""
    fired_set = frozenset(fired)
    override = compiled.override
    severity = override.available(fired_set) if override is not None else None
    bypass = override.bypass[severity] if override is not None and severity else ()
    blocking: list[Step] = []
    overridden: list[str] = []
    changes: list[StateChange] = []
    # when no block rule fired, only the steps that may change state have anything to say
    steps = compiled.changing_steps if fired_set.isdisjoint(compiled.blocking_rules) else compiled.steps
    for step in steps:
        if step.changes_state:
            changes.extend(step.protection.state_changes(ctx, fired_set))
        if step.blocking_rules.isdisjoint(fired_set):
            continue
        if step.short_circuits:
            blocking = [step]
            break
        if step.overridable and step.name in bypass:
            overridden.append(step.name)
        else:
            blocking.append(step)

    request = ctx.request
    approved = not blocking
    override_applied = approved and bool(overridden)
    override_reason = None
    if approved:
        reason = compiled.approved_reason
    else:
        reason = "Action blocked by: " + ", ".join(step.name for step in blocking)
    if override_applied:
        regime = request.regime
        moves = " to ".join(r for r in (regime.old_regime, regime.new_regime) if r) if regime else ""
        transition = f", {moves} transition" if moves else ""
        override_reason = (
            "; ".join(f"regime override bypassed {name}" for name in overridden) + f" ({severity} severity{transition})"
        )
        reason = (
            f"Approved by regime override ({severity}{': ' + moves if moves else ''}): "
            f"bypassed {', '.join(overridden)}{compiled.disabled_note}"
        )
        changes.append(StateChange("override_used", request.asset, ctx.now, severity=severity, bypassed=tuple(overridden)))
    unblocks_at = None
    if blocking:
        times = [step.protection.unblocks_at(ctx, fact) for step in blocking]
        if None not in times:
            unblocks_at = max(times)  # type: ignore[type-var]
    # by position, in the order of its fields: a Struct built from 18 keywords costs ~5x more
    return ProtectionDecision(
        approved,
        reason,
        tuple(step.name for step in blocking),  # blocking_systems
        override_applied,
        override_reason,
        unblocks_at,
        LazyTrace(partial(_trace, compiled, ctx, fact, fired, fired_set, bypass, explain)),  # trace
        tuple(changes),  # state_changes
        compiled.ref,  # policy
        request.request_id,
        trace_id,
        elapsed_ms(started),  # decision_time_ms
        request.asset,
        request.action,
        ctx.now,  # evaluated_at
        engine_version,
        decision_id,
        ctx.state_source,
    )


def _trace(
    compiled: CompiledPolicy,
    ctx: Context,
    fact: Mapping[str, Any],
    fired: Sequence[str],
    fired_set: frozenset[str],
    bypass: Sequence[str],
    explain: bool,
) -> tuple[ProtectionResult, ...]:
    """Each protection of the hierarchy with its status, reason, facts, fired rules and
    `unblocks_at`, as `explain` writes them (docs/semantics.md section 5)."""
    policy = compiled.policy
    explanation = compiled.explain(fact) if explain else None
    trace: list[ProtectionResult] = []
    stopped_by: str | None = None
    fired_by: dict[str, list[str]] = {}
    for rule in fired:
        fired_by.setdefault(compiled.protection_of[rule], []).append(rule)
    for priority, name in enumerate(policy.hierarchy, start=1):
        protection = policy.protections[name]
        rules = tuple(fired_by.get(name, ()))
        if stopped_by:
            trace.append(ProtectionResult(name, priority, "skipped", f"not evaluated: {stopped_by} denied the request"))
            continue
        if not protection.enabled:
            trace.append(ProtectionResult(name, priority, "skipped", "disabled in this policy"))
            continue
        outcome = protection.explain(ctx, fact, fired_set)
        status = outcome.status
        if status == "block":
            if protection.short_circuits:
                stopped_by = name
            elif protection.overridable and name in bypass:
                status = "overridden"
        facts = outcome.facts
        if explanation is not None:
            facts = {**facts, "checks": explanation.get(name, [])}
        trace.append(ProtectionResult(name, priority, status, outcome.reason, facts, rules, outcome.unblocks_at))
    return tuple(trace)


def failed_closed(
    compiled: CompiledPolicy,
    reason: str,
    issues: Sequence[Issue],
    *,
    request: Any,
    trace_id: str,
    decision_id: str,
    engine_version: str,
    started: float,
) -> ProtectionDecision:
    """docs/semantics.md section 5 (fail closed): any error or invalid request is a deny with `error` in `blocking_systems`."""
    policy = compiled.policy
    trace = tuple(ProtectionResult(name, priority, "error", reason) for priority, name in enumerate(policy.hierarchy, start=1))
    asset, action, request_id, evaluated_at = _salvage(request)
    return ProtectionDecision(
        approved=False,
        reason=reason,
        blocking_systems=("error",),
        override_applied=False,
        override_reason=None,
        unblocks_at=None,
        trace=trace,
        state_changes=(),
        policy=compiled.ref,
        request_id=request_id,
        trace_id=trace_id,
        decision_time_ms=elapsed_ms(started),
        asset=asset,
        action=action,
        evaluated_at=evaluated_at,
        engine_version=engine_version,
        decision_id=decision_id,
        errors=tuple(issues),
    )


def exit_code(decisions: Sequence[ProtectionDecision]) -> int:
    """0 all approved, 1 any denied, 3 any invalid input, 4 any internal failure (worst wins)."""
    code = EXIT_APPROVED
    for decision in decisions:
        if decision.approved:
            continue
        if any(issue.code in INTERNAL_CODES for issue in decision.errors):
            return EXIT_INTERNAL
        code = max(code, EXIT_INVALID_INPUT if decision.errors else EXIT_DENIED)
    return code


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 4)


def _salvage(request: Any) -> tuple[str | None, str | None, str | None, int | None]:
    """Echo what can safely be read from a request that failed, for the audit trail."""
    if isinstance(request, ProtectionRequest):
        return request.asset, request.action, request.request_id, request.current_date
    if not isinstance(request, dict):
        return None, None, None, None

    def text(key: str) -> str | None:
        value = request.get(key)
        if not isinstance(value, str):
            return None
        # only what any output can carry: not half of a UTF-16 pair
        return value[:128] if value.isascii() else value[:128].encode("utf-8", "replace").decode("utf-8")

    raw = request.get("current_date")
    try:
        when = parse_instant(raw) if isinstance(raw, str) else None
    except ValueError:
        when = None
    return text("asset"), text("action"), text("request_id"), when
