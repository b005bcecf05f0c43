"""Compile a validated policy into a durable-rules ruleset (plain JSON) and its Python mirror.

Both come from one list of `CompiledRule`s, so the engine and the mirror cannot drift apart
silently: the engine decides, the mirror explains, and every request checks one against the
other (network.py, engine.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import Issue, PolicyInvalid
from .models import PolicyRef
from .policy import Policy
from .protections import Condition, Protection

FACT_KIND = "protection_request"
SENTINEL = "__sentinel__"
SENTINEL_PRI = 65001
MAX_RULES = 60  # durable-rules fails (error 303) past 64 simultaneously true alpha nodes
_RULE_ID = re.compile(r"^[a-z][a-z0-9_.]{0,120}$")
_RESERVED = {"sid", "id", "_kind"}
_OPS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
BASE_FACT_TYPES: Mapping[str, type] = {"action": str}


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    protection: str
    pri: int
    conditions: tuple[Condition, ...]

    def holds(self, fact: Mapping[str, Any]) -> bool:
        return all(condition.holds(fact) for condition in self.conditions)


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
    ref: PolicyRef
    approved_reason: str
    disabled_note: str

    @property
    def sha256(self) -> str:
        return self.policy.sha256

    def enabled_protections(self) -> list[Protection]:
        return [self.policy.protections[name] for name in self.policy.hierarchy if self.policy.protections[name].enabled]

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
                    "conditions": [
                        {"condition": c.text(), "value": fact.get(c.field), "held": c.holds(fact)} for c in rule.conditions
                    ],
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
    _check(policy, rules, fact_types)
    body: dict[str, Any] = {rule.id: _durable(rule) for rule in rules}
    body[SENTINEL] = {"pri": SENTINEL_PRI, "all": [{"m": {"_kind": FACT_KIND}}]}
    ruleset_json = json.dumps(body, separators=(",", ":"), sort_keys=False)
    digest = hashlib.sha256(ruleset_json.encode("utf-8")).hexdigest()[:12]
    return CompiledPolicy(
        policy=policy,
        rules=tuple(rules),
        ruleset_name=f"policy:{policy.name}@{policy.sha256[:12]}:{digest}",
        ruleset_json=ruleset_json,
        fact_types=fact_types,
        # an `in` expands to OR branches; each true branch is one activation
        mirror=_generate_mirror(rules),
        protection_of={rule.id: rule.protection for rule in rules},
        ref=PolicyRef(policy.name, policy.version, policy.sha256),
        approved_reason=_approved_reason(policy),
        disabled_note=_disabled_note(policy),
        max_activations=1 + sum(math.prod(len(c.value) for c in r.conditions if c.op == "in") for r in rules),
    )


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
    type-checked scalars (`_check`), rendered with `repr`. Missing fields make a test false,
    as in durable-rules. `CompiledRule.holds` walks the same conditions for explanations, and
    the tests hold the two against each other.
    """
    lines = ["def mirror(f):", "    fired = []"]
    for rule in rules:
        tests = " and ".join(_python_test(c) for c in rule.conditions) or "True"
        lines.append(f"    if {tests}:")
        lines.append(f"        fired.append({rule.id!r})")
    lines.append("    return tuple(fired)")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<policy mirror>", "exec"), namespace)  # safe: see the docstring
    return namespace["mirror"]


def _python_test(condition: Condition) -> str:
    seen = f"f[{condition.field!r}]"
    if condition.op == "in":
        test = f"{seen} in {tuple(condition.value)!r}"
    elif condition.op == "==":
        test = f"{seen} == {condition.value!r}"
    else:
        test = f"{seen} {condition.op} {condition.value!r}"
    return f"({condition.field!r} in f and {test})"


def _durable(rule: CompiledRule) -> dict[str, Any]:
    return {"pri": rule.pri, "all": [{"m": {"$and": [{"_kind": FACT_KIND}] + [_leaf(c) for c in rule.conditions]}}]}


def _leaf(condition: Condition) -> dict[str, Any]:
    if condition.op == "==":
        return {condition.field: condition.value}
    if condition.op == "in":
        branches = [{condition.field: value} for value in condition.value]
        return branches[0] if len(branches) == 1 else {"$or": branches}
    return {_OPS[condition.op]: {condition.field: condition.value}}


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
        for condition in rule.conditions:
            problems.extend(_check_condition(rule.id, condition, fact_types))
    if problems:
        raise PolicyInvalid([Issue("compile-error", "$", message, policy.source) for message in problems])


def _check_condition(rule_id: str, condition: Condition, fact_types: Mapping[str, type]) -> list[str]:
    field = condition.field
    if field in _RESERVED or field.startswith("$"):
        return [f"rule `{rule_id}` tests reserved field `{field}`"]
    if field not in fact_types:
        return [f"rule `{rule_id}` tests undeclared fact `{field}`"]
    wanted = fact_types[field]
    values = condition.value if condition.op == "in" else (condition.value,)
    if condition.op == "in" and (not isinstance(condition.value, tuple) or not condition.value):
        return [f"rule `{rule_id}`: `in` needs a non-empty tuple"]
    for value in values:
        if not _literal_fits(value, wanted):
            return [f"rule `{rule_id}`: literal `{value!r}` does not fit fact `{field}` of type {wanted.__name__}"]
    if condition.op in _OPS and wanted in (bool, str):
        return [f"rule `{rule_id}`: `{condition.op}` on {wanted.__name__} fact `{field}`"]
    return []


def _literal_fits(value: Any, wanted: type) -> bool:
    if wanted is bool:
        return type(value) is bool
    if wanted is int:
        return type(value) is int
    if wanted is float:
        return type(value) in (int, float)
    return type(value) is wanted
