"""The compiler: one list of rules, three evaluators (network, generated mirror, interpreter) that agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protection_rules import Engine, PolicyInvalid
from protection_rules.compiler import MAX_RULES, CompiledRule, _check, compile_policy
from protection_rules.policy import load_policy
from protection_rules.protections import Condition
from protection_rules.timestamps import MICROS_PER_DAY

ROOT = Path(__file__).resolve().parent.parent
ENGINE = Engine.from_policy(audit=None)
COMPILED = ENGINE.compiled

# values around every threshold the default policy bakes in (days in microseconds, scores, cycles)
_INTS = st.sampled_from([0, 1, 2, 3, 7, 30]).flatmap(
    lambda d: st.sampled_from([d * MICROS_PER_DAY - 1, d * MICROS_PER_DAY, d * MICROS_PER_DAY + 1, d])
)
_VALUES = {
    bool: st.booleans(),
    int: _INTS,
    float: st.sampled_from([0.0, 0.599999, 0.6, 0.600001, 1.0, 1e-05]),
    str: st.sampled_from(["open", "close", "increase", "decrease", "normal", "high", "critical"]),
}


@st.composite
def facts(draw: Any) -> dict[str, Any]:
    fact = {}
    for field, kind in COMPILED.fact_types.items():
        if draw(st.integers(0, 9)) == 0 and field != "action":
            continue  # a missing field makes every test on it false, in all three evaluators
        fact[field] = draw(_VALUES[kind])
    return fact


@settings(max_examples=400, deadline=None)
@given(facts())
def test_network_mirror_and_interpreter_agree(fact):
    interpreted = tuple(rule.id for rule in COMPILED.rules if rule.holds(fact))
    assert COMPILED.expected(fact) == interpreted
    assert ENGINE._network.fire(fact) == interpreted


@settings(max_examples=100, deadline=None)
@given(facts())
def test_explain_reports_each_condition_as_the_mirror_sees_it(fact):
    explained = COMPILED.explain(fact)
    fired = {check["rule"] for checks in explained.values() for check in checks if check["fired"]}
    assert fired == set(COMPILED.expected(fact))
    for checks in explained.values():
        for check in checks:
            assert check["fired"] == all(c["held"] for c in check["conditions"])


def test_rules_fire_in_hierarchy_order_with_unique_salience():
    priorities = [rule.pri for rule in COMPILED.rules]
    assert priorities == sorted(priorities) and len(set(priorities)) == len(priorities)
    order = [rule.protection for rule in COMPILED.rules]
    assert order == sorted(order, key=COMPILED.policy.hierarchy.index)


def test_ruleset_name_carries_the_policy_hash():
    assert COMPILED.ruleset_name.startswith(f"policy:default@{COMPILED.sha256[:12]}:")


def test_disabled_protection_compiles_no_rules(tmp_path):
    path = tmp_path / "p.yaml"
    default = (ROOT / "policies" / "default.yaml").read_text()
    path.write_text(default.replace("  whipsaw_protection:\n    enabled: true", "  whipsaw_protection:\n    enabled: false"))
    compiled = compile_policy(load_policy(path))
    assert not [rule for rule in compiled.rules if rule.protection == "whipsaw_protection"]
    assert "whipsaw_cycles" not in compiled.fact_types


@pytest.mark.parametrize(
    ("condition", "problem"),
    [
        (Condition("holding_held_us", "<", "3"), "does not fit fact `holding_held_us` of type int"),
        (Condition("core_active", "==", 1), "does not fit fact `core_active` of type bool"),
        (Condition("holding_held_us", "<", True), "does not fit"),
        (Condition("sid", "==", "x"), "reserved field `sid`"),
        (Condition("$s", "==", 1), "reserved field"),
        (Condition("nowhere", "==", 1), "undeclared fact `nowhere`"),
        (Condition("action", "<", "open"), "`<` on str fact `action`"),
        (Condition("action", "in", ()), "non-empty tuple"),
    ],
)
def test_guard_rails_reject_what_the_engine_would_answer_wrongly(condition, problem):
    rule = CompiledRule("holding_period.block", "holding_period", 400, (condition,))
    with pytest.raises(PolicyInvalid) as caught:
        _check(COMPILED.policy, [rule], COMPILED.fact_types)
    assert caught.value.issues[0].code == "compile-error"
    assert problem in caught.value.issues[0].message


def test_guard_rails_cap_the_rule_count():
    rule = CompiledRule("holding_period.block", "holding_period", 400, (Condition("core_active", "==", True),))
    many = [CompiledRule(f"{rule.id}{i}", rule.protection, rule.pri, rule.conditions) for i in range(MAX_RULES + 1)]
    with pytest.raises(PolicyInvalid) as caught:
        _check(COMPILED.policy, many, COMPILED.fact_types)
    assert f"the rule network takes at most {MAX_RULES}" in str(caught.value.issues)


@pytest.mark.parametrize("pri", [-1, 65001, 70000])
def test_guard_rails_refuse_salience_outside_0_to_65000(pri):
    # durable-rules keeps pri in an unsigned short: -1 would fire last, 70000 wrap to 4464
    rule = CompiledRule("holding_period.block", "holding_period", pri, (Condition("core_active", "==", True),))
    with pytest.raises(PolicyInvalid, match=f"salience {pri} outside 0..65000"):
        _check(COMPILED.policy, [rule], COMPILED.fact_types)
