"""Compile a validated policy into a durable-rules ruleset (plain JSON) and its Python mirror.

Both come from one list of `CompiledRule`s, so the engine and the mirror cannot drift apart
silently: the engine decides, the mirror explains, and every request checks one against the
other (network.py, engine.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .conditions import COMPLEMENT, LISTS, ORDERING, PRESENCE, AllOf, AnyOf, Condition, Expr, Not, leaves, python_source
from .engine_json import engine_json
from .errors import Issue, PolicyInvalid
from .facts import FactSource, fact_sources
from .models import PolicyRef
from .network_limits import measure
from .policy import Policy
from .protections import Protection
from .protections.regime_override import RegimeOverride

FACT_KIND = "protection_request"
SENTINEL = "__sentinel__"
SENTINEL_PRI = 65001
# A coarse cap: the real limits are those of network_limits.py (durable-rules fails at 4096)
MAX_RULES = 250
_RULE_ID = re.compile(r"^[a-z][a-z0-9_.]{0,120}$")
_RESERVED = {"sid", "id", "_kind"}
_OPS = {"!=": "$neq", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
BASE_FACT_TYPES: Mapping[str, type] = {"action": str}


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    protection: str
    pri: int
    conditions: tuple[Expr, ...]

    def holds(self, fact: Mapping[str, Any]) -> bool:
        return all(condition.holds(fact) for condition in self.conditions)


@dataclass(frozen=True, slots=True)
class Step:
    """An enabled protection as assembling a decision reads it, in hierarchy order."""

    name: str
    protection: Protection
    blocking_rules: frozenset[str]
    short_circuits: bool
    overridable: bool
    changes_state: bool


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """Immutable product of `compile_policy`: the rules in firing order and the ruleset JSON."""

    policy: Policy
    rules: tuple[CompiledRule, ...]
    ruleset_name: str
    ruleset_json: str
    fact_types: Mapping[str, type]
    max_activations: int
    mirror: Callable[[Mapping[str, Any]], tuple[str, ...]]
    protection_of: Mapping[str, str]
    fact_sources: tuple[FactSource, ...]
    ref: PolicyRef
    approved_reason: str
    disabled_note: str
    steps: tuple[Step, ...]
    blocking_rules: frozenset[str]  # every step's, for the approvals that need no loop over blocks
    changing_steps: tuple[Step, ...]  # the steps that may change state
    # the regime override when it is enabled and in the hierarchy: what may bypass blocks
    override: RegimeOverride | None

    @property
    def sha256(self) -> str:
        return self.policy.sha256

    def expected(self, fact: Mapping[str, Any]) -> tuple[str, ...]:
        """The Python mirror: the rule ids the engine must fire for `fact`, in firing order."""
        return self.mirror(fact)

    def explain(self, fact: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Per protection, each rule with each condition: its text, the value seen, held or not."""
        out: dict[str, list[dict[str, Any]]] = {}
        for rule in self.rules:
            out.setdefault(rule.protection, []).append(
                {
                    "rule": rule.id,
                    "fired": rule.holds(fact),
                    "conditions": [condition.explain(fact) for condition in rule.conditions],
                }
            )
        return out


def compile_policy(policy: Policy) -> CompiledPolicy:
    rules: list[CompiledRule] = []
    fact_types: dict[str, type] = dict(BASE_FACT_TYPES)
    for position, name in enumerate(policy.hierarchy, start=1):
        protection = policy.protections[name]
        if not protection.enabled:
            continue
        fact_types.update(protection.fact_types)
        for index, spec in enumerate(protection.rules()):
            rules.append(CompiledRule(spec.id, name, position * 100 + index, spec.conditions))
    sources = fact_sources(policy)
    for source in sources:
        fact_types.update(source.fact_types)
    _check(policy, rules, fact_types)
    steps = _steps(policy)
    body: dict[str, Any] = {rule.id: _durable(rule) for rule in rules}
    body[SENTINEL] = {"pri": SENTINEL_PRI, "all": [{"m": {"_kind": FACT_KIND}}]}
    limits = measure(body)
    if limits.problems:
        protection_of = {rule.id: rule.protection for rule in rules}
        raise PolicyInvalid([_limit_issue(policy, protection_of.get(rule), message) for rule, message in limits.problems])
    ruleset_json = engine_json(body)
    digest = hashlib.sha256(ruleset_json.encode("utf-8")).hexdigest()[:12]
    return CompiledPolicy(
        policy=policy,
        rules=tuple(rules),
        ruleset_name=f"policy:{policy.name}@{policy.sha256[:12]}:{digest}",
        ruleset_json=ruleset_json,
        fact_types=fact_types,
        mirror=_generate_mirror(rules),
        protection_of={rule.id: rule.protection for rule in rules},
        fact_sources=sources,
        ref=PolicyRef(policy.name, policy.version, policy.sha256),
        approved_reason=_approved_reason(policy),
        disabled_note=_disabled_note(policy),
        steps=steps,
        blocking_rules=frozenset().union(*(step.blocking_rules for step in steps)),
        changing_steps=tuple(step for step in steps if step.changes_state),
        override=_override(policy),
        # each true path through an `$or` is one activation (network_limits.py)
        max_activations=limits.activations,
    )


def _steps(policy: Policy) -> tuple[Step, ...]:
    enabled = [policy.protections[name] for name in policy.hierarchy if policy.protections[name].enabled]
    return tuple(
        Step(
            protection.name,
            protection,
            protection.blocking_rules(),
            protection.short_circuits,
            protection.overridable,
            type(protection).state_changes is not Protection.state_changes,
        )
        for protection in enabled
    )


def _override(policy: Policy) -> RegimeOverride | None:
    override = policy.protections.get("regime_override")
    if isinstance(override, RegimeOverride) and override.enabled and "regime_override" in policy.hierarchy:
        return override
    return None


def _limit_issue(policy: Policy, protection: str | None, message: str) -> Issue:
    """A limit of the rule network, located at the protection it is about (a custom one's
    condition), or at `protections` for the policy as a whole."""
    if protection is None:
        return policy.source_map.issue("compile-limit", ("protections",), message, key=True)
    where = (
        ("protections", protection, "when")
        if "when" in policy.document["protections"][protection]
        else ("protections", protection)
    )
    return policy.source_map.issue("compile-limit", where, message, key=True)


def _disabled(policy: Policy) -> list[str]:
    return [name for name, protection in policy.protections.items() if not protection.enabled]


def _disabled_note(policy: Policy) -> str:
    """What an approval must not hide: the protections this policy switched off."""
    disabled = _disabled(policy)
    return f"; disabled in this policy: {', '.join(disabled)}" if disabled else ""


def _approved_reason(policy: Policy) -> str:
    """The reason of an approval that needed no override, fixed per policy."""
    can_block = [name for name in policy.hierarchy if policy.protections[name].enabled and policy.protections[name].can_block]
    if not can_block:
        return "Approved without checks: no protection that can block is enabled in this policy" + _disabled_note(policy)
    if _disabled(policy):
        return "All enabled protection checks passed" + _disabled_note(policy)
    return "All protection checks passed"


def _generate_mirror(rules: list[CompiledRule]) -> Callable[[Mapping[str, Any]], tuple[str, ...]]:
    """Straight-line Python for the same conditions (about 20x cheaper than walking them).

    Safe to `exec`: fields and rule ids match `_RULE_ID`-like plain names and literals are
    type-checked scalars (`_check`), rendered with `repr`. Missing fields make a comparison
    false, as in durable-rules. Negation is Python's `not` here, while the engine gets it
    pushed down to the leaves (`_durable_expression`), so every request checks the push-down.
    `CompiledRule.holds` walks the same conditions for explanations, and the tests hold the
    three against each other.
    """
    lines = ["def mirror(f):", "    fired = []"]
    for rule in rules:
        tests = " and ".join(python_source(c) for c in rule.conditions) or "True"
        lines.append(f"    if {tests}:")
        lines.append(f"        fired.append({rule.id!r})")
    lines.append("    return tuple(fired)")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<policy mirror>", "exec"), namespace)  # safe: see the docstring
    return namespace["mirror"]


def _durable(rule: CompiledRule) -> dict[str, Any]:
    tests = [_durable_expression(c) for c in rule.conditions]
    return {"pri": rule.pri, "all": [{"m": {"$and": [{"_kind": FACT_KIND}, *tests]}}]}


def _durable_expression(expr: Expr, negated: bool = False) -> dict[str, Any]:
    """durable-rules JSON for `expr` (or for its negation): the engine has no `not` over a
    test or a group, so negation goes down to the leaves by De Morgan, and a negated
    comparison is `absent or the complement` (a comparison on an absent field is false, so its
    negation holds there)."""
    if isinstance(expr, Not):
        return _durable_expression(expr.item, not negated)
    if isinstance(expr, (AllOf, AnyOf)):
        items = [_durable_expression(item, negated) for item in expr.items]
        conjunction = isinstance(expr, AllOf) != negated
        return items[0] if len(items) == 1 else {"$and" if conjunction else "$or": items}
    if not negated:
        return _test(expr.field, expr.op, expr.value)
    complement = _test(expr.field, COMPLEMENT[expr.op], expr.value)
    if expr.op in PRESENCE:
        return complement
    return {"$or": [{"$nex": {expr.field: 1}}, complement]}


def _test(field: str, op: str, value: Any) -> dict[str, Any]:
    if op == "exists":
        return {"$ex": {field: 1}}
    if op == "absent":
        return {"$nex": {field: 1}}
    if op == "==":
        return {field: value}
    if op in LISTS:
        single = "==" if op == "in" else "!="
        branches = [_test(field, single, v) for v in value]
        return branches[0] if len(branches) == 1 else {"$or" if op == "in" else "$and": branches}
    return {_OPS[op]: {field: value}}


def _check(policy: Policy, rules: list[CompiledRule], fact_types: Mapping[str, type]) -> None:
    """Guard-rails the engine does not enforce and that would otherwise answer silently wrong."""
    problems = []
    if len(rules) > MAX_RULES:
        problems.append(f"{len(rules)} rules; the rule network takes at most {MAX_RULES}")
    ids = [rule.id for rule in rules]
    if len(set(ids)) != len(ids):
        problems.append("duplicate rule ids")
    for rule in rules:
        if not _RULE_ID.match(rule.id):
            problems.append(f"rule id `{rule.id}` is not a plain dotted name")
        if not 0 <= rule.pri <= 65000:
            problems.append(f"rule `{rule.id}` has salience {rule.pri} outside 0..65000")
        for expr in rule.conditions:
            if _has_empty_group(expr):
                problems.append(f"rule `{rule.id}` has an empty `all` or `any`")
            for condition in leaves(expr):
                problems.extend(_check_condition(rule.id, condition, fact_types))
    if problems:
        raise PolicyInvalid([Issue("compile-error", "$", message, policy.source) for message in problems])


def _has_empty_group(expr: Expr) -> bool:
    if isinstance(expr, Condition):
        return False
    if isinstance(expr, Not):
        return _has_empty_group(expr.item)
    return not expr.items or any(_has_empty_group(item) for item in expr.items)


def _check_condition(rule_id: str, condition: Condition, fact_types: Mapping[str, type]) -> list[str]:
    field, op = condition.field, condition.op
    if field in _RESERVED or field.startswith("$"):
        return [f"rule `{rule_id}` tests reserved field `{field}`"]
    if field not in fact_types:
        return [f"rule `{rule_id}` tests undeclared fact `{field}`"]
    if op in PRESENCE:
        return [] if condition.value is None else [f"rule `{rule_id}`: `{op}` takes no literal"]
    wanted = fact_types[field]
    if op in LISTS and (not isinstance(condition.value, tuple) or not condition.value):
        return [f"rule `{rule_id}`: `{op}` needs a non-empty tuple"]
    for value in condition.value if op in LISTS else (condition.value,):
        if not _literal_fits(value, wanted):
            return [f"rule `{rule_id}`: literal `{value!r}` does not fit fact `{field}` of type {wanted.__name__}"]
    if op in ORDERING and wanted in (bool, str):
        return [f"rule `{rule_id}`: `{op}` on {wanted.__name__} fact `{field}`"]
    return []


def _literal_fits(value: Any, wanted: type) -> bool:
    if wanted is bool:
        return type(value) is bool
    if wanted is int:
        return type(value) is int
    if wanted is float:
        return type(value) in (int, float)
    return type(value) is wanted
