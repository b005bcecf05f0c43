"""Condition trees and what absent facts do, in the three evaluators that must agree.

Each row of `TABLE` is a custom protection's `when` and, per request, whether it holds, worked
out by hand from the rule in docs/semantics.md section 8: a comparison on an absent fact is false,
`exists` tests presence, `not` is plain negation (so `not` of a comparison holds on an absent
fact). Every row is checked against the interpreter (`holds`), the generated Python mirror and
the rule network (which gets `not` pushed down to the leaves), and through a whole decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from protection_rules import Engine
from protection_rules.compiler import compile_policy
from protection_rules.engine_json import engine_json
from protection_rules.facts import enrich, resolve_context
from protection_rules.parsing import parse_request
from protection_rules.policy import parse_policy
from protection_rules.protections.condition import parse_template, show
from protection_rules.timestamps import MICROS_PER_DAY

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = (ROOT / "policies" / "default.yaml").read_text(encoding="utf-8")
NOW = "2026-03-20T12:00:00Z"


def policy_with(conditions: dict[str, str], *, blocks: str = "[open]", reason: str = "r") -> str:
    """The default policy with one custom protection per entry (`when` in flow style), placed last."""
    names = "".join(f"  - {name}\n" for name in conditions)
    text = DEFAULT.replace("  - whipsaw_protection\n", "  - whipsaw_protection\n" + names)
    for name, when in conditions.items():
        text += (
            f"\n  {name}:\n    type: condition\n    enabled: true\n    blocks: {blocks}\n    when: {when}\n    reason: {reason}\n"
        )
    return text


# samples: the request fields of each column
SIZE = {"0.2": {"target_size": 0.2}, "0.1": {"target_size": 0.1}, "0.05": {"target_size": 0.05}, "absent": {}}
SEVERITY = {
    "high": {"regime": {"changed": True, "severity": "high"}},
    "normal": {"regime": {"changed": False}},
    "absent": {},
}
CHANGED = {"true": {"regime": {"changed": True}}, "false": {"regime": {"changed": False}}, "absent": {}}

T, F = True, False
# (id, when, samples, holds per sample in the samples' order)
TABLE: list[tuple[str, str, dict[str, dict[str, Any]], tuple[bool, ...]]] = [
    ("gt", "{fact: target_size, gt: 0.1}", SIZE, (T, F, F, F)),
    ("ge", "{fact: target_size, ge: 0.1}", SIZE, (T, T, F, F)),
    ("lt", "{fact: target_size, lt: 0.1}", SIZE, (F, F, T, F)),
    ("le", "{fact: target_size, le: 0.1}", SIZE, (F, T, T, F)),
    ("eq", "{fact: target_size, eq: 0.1}", SIZE, (F, T, F, F)),
    ("ne", "{fact: target_size, ne: 0.1}", SIZE, (T, F, T, F)),
    ("in", "{fact: target_size, in: [0.1, 0.2]}", SIZE, (T, T, F, F)),
    ("not_in", "{fact: target_size, not_in: [0.1, 0.2]}", SIZE, (F, F, T, F)),
    ("exists", "{fact: target_size, exists: true}", SIZE, (T, T, T, F)),
    ("exists-false", "{fact: target_size, exists: false}", SIZE, (F, F, F, T)),
    ("not-gt", "{not: {fact: target_size, gt: 0.1}}", SIZE, (F, T, T, T)),
    ("not-ge", "{not: {fact: target_size, ge: 0.1}}", SIZE, (F, F, T, T)),
    ("not-lt", "{not: {fact: target_size, lt: 0.1}}", SIZE, (T, T, F, T)),
    ("not-le", "{not: {fact: target_size, le: 0.1}}", SIZE, (T, F, F, T)),
    ("not-eq", "{not: {fact: target_size, eq: 0.1}}", SIZE, (T, F, T, T)),
    ("not-ne", "{not: {fact: target_size, ne: 0.1}}", SIZE, (F, T, F, T)),
    ("not-in", "{not: {fact: target_size, in: [0.1, 0.2]}}", SIZE, (F, F, T, T)),
    ("not-not_in", "{not: {fact: target_size, not_in: [0.1, 0.2]}}", SIZE, (T, T, F, T)),
    ("not-exists", "{not: {fact: target_size, exists: true}}", SIZE, (F, F, F, T)),
    ("not-exists-false", "{not: {fact: target_size, exists: false}}", SIZE, (T, T, T, F)),
    ("not-not", "{not: {not: {fact: target_size, gt: 0.1}}}", SIZE, (T, F, F, F)),
    ("all", "{all: [{fact: target_size, gt: 0.05}, {fact: target_size, lt: 0.2}]}", SIZE, (F, T, F, F)),
    ("not-all", "{not: {all: [{fact: target_size, gt: 0.05}, {fact: target_size, lt: 0.2}]}}", SIZE, (T, F, T, T)),
    ("any", "{any: [{fact: target_size, lt: 0.1}, {fact: target_size, gt: 0.15}]}", SIZE, (T, F, T, F)),
    ("not-any", "{not: {any: [{fact: target_size, lt: 0.1}, {fact: target_size, gt: 0.15}]}}", SIZE, (F, T, F, T)),
    ("absent-or-low", "{any: [{fact: target_size, exists: false}, {fact: target_size, lt: 0.1}]}", SIZE, (F, F, T, T)),
    (
        "present-and-not-high",
        "{all: [{fact: target_size, exists: true}, {not: {fact: target_size, gt: 0.1}}]}",
        SIZE,
        (F, T, T, F),
    ),
    (
        "nested",
        "{any: [{all: [{fact: target_size, ge: 0.1}, {not: {fact: target_size, in: [0.1]}}]}, {fact: target_size, exists: false}]}",
        SIZE,
        (T, F, F, T),
    ),
    ("string-eq", "{fact: regime.severity, eq: high}", SEVERITY, (T, F, F)),
    ("string-ne", "{fact: regime.severity, ne: high}", SEVERITY, (F, T, F)),
    ("string-not-eq", "{not: {fact: regime.severity, eq: high}}", SEVERITY, (F, T, T)),
    ("string-in", "{fact: regime.severity, in: [high, critical]}", SEVERITY, (T, F, F)),
    ("string-not_in", "{fact: regime.severity, not_in: [high, critical]}", SEVERITY, (F, T, F)),
    ("string-not-not_in", "{not: {fact: regime.severity, not_in: [high, critical]}}", SEVERITY, (T, F, T)),
    ("bool-eq-true", "{fact: regime.changed, eq: true}", CHANGED, (T, F, F)),
    ("bool-eq-false", "{fact: regime.changed, eq: false}", CHANGED, (F, T, F)),
    ("bool-ne-true", "{fact: regime.changed, ne: true}", CHANGED, (F, T, F)),
    ("bool-not-eq-true", "{not: {fact: regime.changed, eq: true}}", CHANGED, (F, T, T)),
]


def _name(row: str) -> str:
    return f"row_{[r[0] for r in TABLE].index(row)}"


ENGINE = Engine(compile_policy(parse_policy(policy_with({_name(r[0]): r[1] for r in TABLE}), "table")), audit=None)


def _fact(request: dict[str, Any]) -> dict[str, Any]:
    return enrich(ENGINE.compiled.fact_sources, resolve_context(parse_request(request)))


@pytest.mark.parametrize(("row", "when", "samples", "holds"), TABLE, ids=[r[0] for r in TABLE])
def test_absent_fact_semantics_in_every_evaluator(row, when, samples, holds):
    rule = f"{_name(row)}.block"
    [compiled_rule] = [r for r in ENGINE.compiled.rules if r.id == rule]
    assert len(samples) == len(holds)
    for (label, fields), expected in zip(samples.items(), holds, strict=True):
        request = {"asset": "AAPL", "action": "open", "current_date": NOW, **fields}
        fact = _fact(request)
        where = f"{row} with {label}"
        assert compiled_rule.holds(fact) is expected, where  # the interpreter
        assert (rule in ENGINE.compiled.expected(fact)) is expected, where  # the generated mirror
        assert (rule in ENGINE._network.fire(fact)) is expected, where  # the rule network
        decision = ENGINE.evaluate(request)
        assert not decision.errors, decision.errors  # the engine checks network == mirror on each request
        [entry] = [e for e in decision.trace if e.system == _name(row)]
        assert entry.status == ("block" if expected else "pass"), where


def test_the_network_gets_negation_pushed_down_and_no_unknown_operator():
    body = ENGINE.compiled.ruleset_json
    # `not` of a comparison: absent or the complement; of a group: De Morgan
    assert '{"$or":[{"$nex":{"fact_target_size":1}},{"$lte":{"fact_target_size":0.1}}]}' in body
    assert '"$not"' not in body and '"not"' not in body


def test_a_rule_with_two_true_branches_fires_once_within_the_activation_bound():
    # `any` of two true tests activates the rule twice in durable-rules; reported once
    engine = Engine(
        compile_policy(
            parse_policy(policy_with({"twice": "{any: [{fact: target_size, gt: 0.1}, {fact: target_size, gt: 0.15}]}"}), "p")
        ),
        audit=None,
    )
    fact = enrich(
        engine.compiled.fact_sources,
        resolve_context(parse_request({"asset": "A", "action": "open", "current_date": NOW, "target_size": 0.2})),
    )
    assert engine._network.fire(fact).count("twice.block") == 1
    # 12 built-in rules (default: 15 activations with the sentinel) plus 2 for the two branches
    assert engine.compiled.max_activations == 15 + 2


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "(absent)"),
        (True, "true"),
        (False, "false"),
        (0.15, "0.15"),
        (30.0, "30"),
        (1e-05, "1e-05"),
        (1e16, "1e+16"),
        ("AAPL", "AAPL"),
    ],
)
def test_values_in_reasons(value, shown):
    assert show(value) == shown


@pytest.mark.parametrize(
    ("template", "parts"),
    [
        ("size {target_size} over", ["size ", ("target_size",), " over"]),
        ("{regime.severity}", [("regime.severity",)]),
        ("braces {{ and }}", ["braces ", "{", " and ", "}"]),
        ("{{literal}}", ["{", "literal", "}"]),
    ],
)
def test_reason_templates_parse(template, parts):
    assert parse_template(template) == parts


def test_a_reason_renders_an_absent_fact_visibly():
    engine = Engine(
        compile_policy(
            parse_policy(
                policy_with({"probe": "{fact: asset, eq: AAPL}"}, reason="'size {target_size}, severity {regime.severity}'"), "p"
            )
        ),
        audit=None,
    )
    decision = engine.evaluate({"asset": "AAPL", "action": "open", "current_date": NOW, "target_size": 0.25})
    [entry] = [e for e in decision.trace if e.system == "probe"]
    assert (entry.status, entry.reason, entry.unblocks_at) == ("block", "size 0.25, severity (absent)", None)
    # the trace: each fact read, then the condition as written with the value seen and whether it held
    assert entry.facts == {
        "asset": "AAPL",
        "target_size": 0.25,
        "regime.severity": None,
        "when": {"fact": "asset", "eq": "AAPL", "value": "AAPL", "held": True},
    }


def test_the_trace_mirrors_the_condition_tree():
    engine = Engine(
        compile_policy(
            parse_policy(
                policy_with({"probe": "{all: [{fact: target_size, gt: 0.1}, {not: {fact: current_score, exists: true}}]}"}), "p"
            )
        ),
        audit=None,
    )
    decision = engine.evaluate({"asset": "AAPL", "action": "open", "current_date": NOW, "target_size": 0.05})
    [entry] = [e for e in decision.trace if e.system == "probe"]
    assert entry.status == "pass"
    assert entry.reason == "its condition does not hold"
    assert entry.facts["when"] == {
        "all": [
            {"fact": "target_size", "gt": 0.1, "value": 0.05, "held": False},
            {"not": {"fact": "current_score", "exists": True, "value": None, "held": False}, "held": True},
        ],
        "held": False,
    }


# days_held counts whole days, rounded down (as holding_period does): at 3 days less 1 µs it is 2
@pytest.mark.parametrize(
    ("held_us", "days"),
    [
        (0, 0.0),
        (3 * MICROS_PER_DAY - 1, 2.0),
        (3 * MICROS_PER_DAY, 3.0),
        (3 * MICROS_PER_DAY + 1, 3.0),
        (400 * MICROS_PER_DAY, 400.0),
    ],
)
def test_days_held_is_whole_days(held_us, days):
    engine = Engine(compile_policy(parse_policy(policy_with({"probe": "{fact: days_held, lt: 3}"}), "p")), audit=None)
    now = 1_800_000_000_000_000
    request = msgspec.structs.replace(
        parse_request({"asset": "A", "action": "open", "current_date": NOW}), current_date=now, position_entry_date=now - held_us
    )
    fact = enrich(engine.compiled.fact_sources, resolve_context(request))
    assert fact["fact_days_held"] == days and type(fact["fact_days_held"]) is float
    assert ("probe.block" in engine._network.fire(fact)) is (days < 3)


def test_number_facts_are_floats_and_integers_compare_as_numbers():
    engine = Engine(compile_policy(parse_policy(policy_with({"cap": "{fact: active_positions, ge: 30}"}), "p")), audit=None)
    for positions, blocked in ((29, False), (30, True), (31, True)):
        fact = enrich(
            engine.compiled.fact_sources,
            resolve_context(parse_request({"asset": "A", "action": "open", "current_date": NOW, "active_positions": positions})),
        )
        assert type(fact["fact_active_positions"]) is float
        assert ("cap.block" in engine._network.fire(fact)) is blocked


def test_only_the_facts_a_custom_protection_uses_are_computed():
    engine = Engine(
        compile_policy(parse_policy(policy_with({"probe": "{fact: size_change, gt: 0.1}"}, reason="'{asset}'"), "p")), audit=None
    )
    fact = enrich(
        engine.compiled.fact_sources,
        resolve_context(
            parse_request(
                {
                    "asset": "A",
                    "action": "open",
                    "current_date": NOW,
                    "current_size": 0.1,
                    "target_size": 0.3,
                    "current_score": 0.9,
                }
            )
        ),
    )
    assert {key for key in fact if key.startswith("fact_")} == {"fact_size_change", "fact_asset"}
    assert fact["fact_size_change"] == pytest.approx(0.2)
    default = Engine.from_policy(audit=None)
    assert not [key for key in _fact_of(default) if key.startswith("fact_")]


def _fact_of(engine: Engine) -> dict[str, Any]:
    return enrich(
        engine.compiled.fact_sources,
        resolve_context(parse_request({"asset": "A", "action": "open", "current_date": NOW, "target_size": 0.3})),
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"a": 1e-05}, '{"a":1.0e-05}'),
        ({"a": -2e-07, "b": [3e16]}, '{"a":-2.0e-07,"b":[3.0e+16]}'),
        ({"a": 1.5e-05}, '{"a":1.5e-05}'),
        # a symbol that looks like a number keeps its text
        ({"asset": "BRK:1e5", "n": 1e-05}, '{"asset":"BRK:1e5","n":1.0e-05}'),
        ({"asset": 'x":1e5'}, '{"asset":"x\\":1e5"}'),
    ],
)
def test_engine_json_gives_bare_exponents_a_dot_outside_strings(value, text):
    assert engine_json(value) == text
