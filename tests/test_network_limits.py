"""The rule network's limits, worked out before durable-rules sees a ruleset (network_limits.py),
held against what durable-rules does: both sides of each limit, and random rulesets on which
the engine never fails where the model said it would not."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protection_rules import Engine, PolicyInvalid
from protection_rules.compiler import compile_policy
from protection_rules.engine_json import engine_json
from protection_rules.errors import EngineFailure
from protection_rules.network import RuleNetwork
from protection_rules.network_limits import MAX_GROUPS, MAX_STACK, measure
from protection_rules.policy import parse_policy

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = (ROOT / "policies" / "default.yaml").read_text(encoding="utf-8")
KIND, SENTINEL = "k", "__sentinel__"
_names = itertools.count()


def body_of(expressions: list[dict[str, Any]]) -> dict[str, Any]:
    """A ruleset as the compiler writes one: each rule the discriminator and an expression."""
    body: dict[str, Any] = {
        f"r{i}": {"pri": i, "all": [{"m": {"$and": [{"_kind": KIND}, expression]}}]} for i, expression in enumerate(expressions)
    }
    body[SENTINEL] = {"pri": 65001, "all": [{"m": {"_kind": KIND}}]}
    return body


def network(body: dict[str, Any], activations: int = 10_000) -> RuleNetwork:
    return RuleNetwork(
        f"limits-{next(_names)}",
        engine_json(body),
        kind=KIND,
        sentinel=SENTINEL,
        fact_types={"a": float, "b": float, "c": float, "action": str},
        max_activations=activations,
    )


# ------------------------------------------------------------------ both sides, raw rulesets


@pytest.mark.parametrize("count", [MAX_STACK, MAX_STACK + 1])
def test_tests_that_can_all_hold_at_once_are_counted_exactly(count):
    # every rule's test follows the discriminator, and all of them hold for a = 1000
    body = body_of([{"$gt": {"a": float(i)}} for i in range(count)])
    assert measure(body).stack == count
    fired = lambda: network(body).fire({"a": 1000.0})  # noqa: E731
    if count <= MAX_STACK:
        assert len(fired()) == count
    else:
        with pytest.raises(EngineFailure, match="303"):
            fired()


@pytest.mark.parametrize("count", [MAX_STACK, MAX_STACK + 1])
def test_any_branches_cost_a_place_each_even_when_nothing_holds(count):
    # an `$or` leaves a pass-through node on the stack for every branch that reaches it
    body = body_of(
        [{"$and": [{"$or": [{"action": "open"}, {"action": "increase"}]}, {"$gt": {"a": float(i)}}]} for i in range(count)]
    )
    assert measure(body).stack == count
    fired = lambda: network(body).fire({"a": -1.0, "action": "open"})  # noqa: E731
    if count <= MAX_STACK:
        assert fired() == ()
    else:
        with pytest.raises(EngineFailure, match="303"):
            fired()


def test_equality_tests_on_one_field_exclude_each_other():
    # 100 different values of one field: at most one holds, so they take one place
    body = body_of([{"a": float(i)} for i in range(100)])
    assert measure(body).stack == 1
    assert network(body).fire({"a": 7.0}) == ("r7",)


def test_an_absence_test_and_the_tests_on_a_present_value_exclude_each_other():
    # `not (a > i)` is `a absent or a <= i`: per rule one of the two can hold
    body = body_of([{"$or": [{"$nex": {"a": 1}}, {"$lte": {"a": float(i)}}]} for i in range(40)])
    # a absent: the one absence test, shared, then its 40 pass-throughs; a present: 40 `<=`
    # tests, one pass-through each; never both
    assert measure(body).stack == 40
    assert network(body).fire({}) == tuple(f"r{i}" for i in range(40))


@pytest.mark.parametrize("groups", [MAX_GROUPS, MAX_GROUPS + 1])
def test_a_rule_takes_at_most_fifteen_groups(groups):
    expression: dict[str, Any] = {"$gt": {"a": 0.0}}
    for _ in range(groups - 1):  # the rule's own `$and` is one group
        expression = {"$or": [expression, {"$lt": {"a": -5.0}}]}
    body = body_of([expression])
    problems = measure(body).problems
    if groups <= MAX_GROUPS:
        assert problems == ()
        assert network(body).fire({"a": 1.0}) == ("r0",)
    else:
        assert problems == (
            (
                "r0",
                f"rule `r0` has {groups} `all`/`any` groups (`in`, `not_in` and `not` of a comparison count as one each); the rule network takes at most {MAX_GROUPS} per rule",
            ),
        )
        with pytest.raises(EngineFailure, match="rejected ruleset"):
            network(body)


def test_activations_multiply_through_all_and_add_through_any():
    ors = lambda n: {"$or": [{"$gt": {"a": float(i)}} for i in range(n)]}  # noqa: E731
    body = body_of([{"$and": [ors(3), ors(4)]}, {"$or": [ors(2), ors(5)]}])
    assert measure(body).activations == 3 * 4 + (2 + 5) + 1  # the sentinel's too
    assert network(body, activations=measure(body).activations).fire({"a": 100.0}) == ("r0", "r1")
    with pytest.raises(EngineFailure, match="more than 19 activations"):
        network(body, activations=measure(body).activations - 1).fire({"a": 100.0})


# ------------------------------------------------------------------ both sides, policies


def policy_with_custom(count: int) -> str:
    """The default policy and `count` custom protections that can all block one open at once."""
    names = [f"custom_{i:02d}" for i in range(count)]
    text = DEFAULT.replace("  - whipsaw_protection\n", "  - whipsaw_protection\n" + "".join(f"  - {n}\n" for n in names))
    for i, name in enumerate(names):
        text += f"\n  {name}:\n    type: condition\n    enabled: true\n    blocks: [open]\n    when: {{fact: target_size, gt: {i / 1000}}}\n    reason: r\n"
    return text


def test_a_policy_at_the_limit_compiles_and_one_past_it_is_refused_saying_why():
    # 60 custom tests under `action == open`, plus the built-ins' 4 first tests that can hold
    # with them (on `action`, `regime_changed`, `grace_has_score`, `holding_has_entry`)
    at_limit = compile_policy(parse_policy(policy_with_custom(60), "p.yaml"))
    assert len(at_limit.rules) == 72
    decision = Engine(at_limit, audit=None).evaluate(
        {"asset": "A", "action": "open", "current_date": "2026-03-20T12:00:00Z", "target_size": 1.0, "current_score": 0.1}
    )
    assert not decision.errors and len(decision.blocking_systems) == 60
    past = policy_with_custom(61)
    with pytest.raises(PolicyInvalid) as caught:
        compile_policy(parse_policy(past, "p.yaml"))
    [issue] = caught.value.issues
    assert (issue.code, issue.path, issue.file) == ("compile-limit", "$.protections", "p.yaml")
    assert (issue.line, issue.column) == (past.splitlines().index("protections:") + 1, 1)
    assert issue.message.startswith(
        "one request could leave 65 tests pending at once in the rule network, which holds at most 64 (durable-rules error 303)"
    )


def test_a_condition_with_too_many_groups_is_refused_at_its_when():
    # the rule's own `$and`, its `all`, and 14 `in` tests of two values (an `$or` each): 16
    tests = ", ".join(f"{{fact: target_size, in: [{i}, {i + 0.5}]}}" for i in range(14))
    text = policy_with_custom(0).replace("  - whipsaw_protection\n", "  - whipsaw_protection\n  - deep\n")
    text += (
        f"\n  deep:\n    type: condition\n    enabled: true\n    blocks: [open]\n    when: {{all: [{tests}]}}\n    reason: r\n"
    )
    with pytest.raises(PolicyInvalid) as caught:
        compile_policy(parse_policy(text, "p.yaml"))
    [issue] = caught.value.issues
    assert (issue.code, issue.path) == ("compile-limit", "$.protections.deep.when")
    assert issue.line == len(text.splitlines()) - 1
    assert (
        issue.message.startswith("rule `deep.block` has 16 `all`/`any` groups")
        and f"at most {MAX_GROUPS} per rule" in issue.message
    )


def test_the_default_policy_is_well_inside_the_limits():
    compiled = Engine.from_policy(audit=None).compiled
    assert measure(_body(compiled.ruleset_json)).stack <= 8


def _body(text: str) -> dict[str, Any]:
    import json

    return json.loads(text)


# ------------------------------------------------------------------ random rulesets


FIELDS = ("a", "b", "c")
VALUES = st.integers(0, 30).map(float)  # enough different tests for 64 of them to hold at once


@st.composite
def expressions(draw: Any, depth: int = 0) -> dict[str, Any]:
    kind = draw(st.sampled_from(["test", "test", "test", "and", "or"] if depth < 2 else ["test"]))
    if kind in ("and", "or"):
        return {f"${kind}": draw(st.lists(expressions(depth + 1), min_size=1, max_size=3))}
    field = draw(st.sampled_from(FIELDS))
    operator = draw(st.sampled_from(["$eq", "$neq", "$gt", "$gt", "$lt", "$lt", "$ex", "$nex"]))
    if operator == "$eq":
        return {field: draw(VALUES)}
    if operator in ("$ex", "$nex"):
        return {operator: {field: 1}}
    return {operator: {field: draw(VALUES)}}


# values past either end make every `$gt` (or every `$lt`) on the field hold at once
facts = st.fixed_dictionaries({}, optional={field: st.sampled_from([-1.0, 31.0]) | VALUES for field in FIELDS})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(expressions(), min_size=40, max_size=200), st.lists(facts, min_size=1, max_size=5))
def test_the_engine_never_fails_where_the_model_says_it_cannot(rules, samples):
    body = body_of(rules)
    measured = measure(body)
    if any(rule is not None for rule, _ in measured.problems):
        return  # a rule the compiler would refuse on its own
    net = network(body, activations=measured.activations)
    for fact in samples:
        try:
            net.fire(fact)
        except EngineFailure as exc:  # error 303 only, and only where the model allowed more than 64
            assert "303" in str(exc) and measured.stack > MAX_STACK, (exc, measured.stack)
