"""The example policy with four custom protections decides as the built-ins plus those four
conditions evaluated by hand, and the custom protections go through test, diff, lint and fmt.

The oracle is written here, independently of the engine: the built-ins' verdicts come from the
same policy with the four custom protections taken out, and the four conditions, their place in
the hierarchy and the overrides of those below `regime_override` are applied by hand, from the
policy's text as a person reads it (policies/examples/custom.yaml).
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from protection_rules import Engine
from protection_rules.case_coverage import measure_coverage
from protection_rules.cases import load_case_files
from protection_rules.cli import cli
from protection_rules.compiler import compile_policy
from protection_rules.lint import lint_policy
from protection_rules.loading import SourceMap
from protection_rules.policy import load_policy, parse_policy, policy_from_data
from protection_rules.policy_diff import diff_policies
from protection_rules.testing import run_cases
from protection_rules.timestamps import MICROS_PER_DAY, format_instant, parse_instant

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "policies" / "examples" / "custom.yaml"
CASES = ROOT / "policies" / "examples" / "cases"
POLICY = load_policy(EXAMPLE)
ENGINE = Engine.from_policy(POLICY, audit=None)

# --------------------------------------------------------------------------------- the oracle

CUSTOM = ("blacklist", "concentration_limit", "max_open_positions", "minimum_score_to_open")
HIERARCHY = (
    "core_asset_immunity",
    "blacklist",
    "regime_override",
    "grace_period",
    "holding_period",
    "concentration_limit",
    "whipsaw_protection",
    "max_open_positions",
    "minimum_score_to_open",
)
BLOCKS = {
    "blacklist": {"open", "increase"},
    "concentration_limit": {"open", "increase"},
    "max_open_positions": {"open"},
    "minimum_score_to_open": {"open"},
}
# the custom protections each severity's bypass list names (all of them below regime_override)
BYPASSED = {"normal": set(), "high": {"max_open_positions"}, "critical": {"concentration_limit", "max_open_positions"}}


def holds(name: str, request: dict[str, Any]) -> bool:
    """Each condition as the policy states it; an absent field is `None` here."""
    size, positions, score = request.get("target_size"), request.get("active_positions"), request.get("current_score")
    if name == "blacklist":
        return request["asset"] in ("ACME", "FRAUDCO", "SANCTN")
    if name == "concentration_limit":
        return size is not None and size > 0.1 and request["asset"] not in ("SPY", "QQQ")
    if name == "max_open_positions":
        return positions is not None and positions >= 30
    return score is None or score < 0.5


def builtins_only() -> Engine:
    document = copy.deepcopy(POLICY.document)
    document["hierarchy"] = [name for name in document["hierarchy"] if name not in CUSTOM]
    for name in CUSTOM:
        del document["protections"][name]
    for severity, names in document["protections"]["regime_override"]["bypass"].items():
        document["protections"]["regime_override"]["bypass"][severity] = [n for n in names if n not in CUSTOM]
    return Engine(compile_policy(policy_from_data(document, SourceMap(None))), audit=None)


BUILTINS = builtins_only()


def oracle(request: dict[str, Any]) -> dict[str, Any]:
    """decision, blocking_systems, override_applied and every status, by hand."""
    builtin = BUILTINS.evaluate(request)
    status = {entry.system: entry.status for entry in builtin.trace}
    regime = next(entry for entry in builtin.trace if entry.system == "regime_override")
    bypassed = BYPASSED[regime.facts["severity"]] if regime.facts.get("available") else set()
    core_blocks = status["core_asset_immunity"] == "block"
    for name in CUSTOM:
        if core_blocks:
            status[name] = "skipped"  # core ends the decision; every custom one stands after it
        elif request["action"] not in BLOCKS[name]:
            status[name] = "not_applicable"
        elif not holds(name, request):
            status[name] = "pass"
        else:
            status[name] = "overridden" if name in bypassed else "block"
    blocking = [name for name in HIERARCHY if status[name] == "block"]
    approved = not blocking
    return {
        "decision": "approve" if approved else "deny",
        "blocking_systems": blocking,
        "override_applied": approved and "overridden" in status.values(),
        "statuses": status,
    }


NOW = parse_instant("2026-03-20T12:00:00Z")


def _at(days: float) -> str:
    return format_instant(NOW - int(days * MICROS_PER_DAY))


def corpus(count: int, seed: int) -> list[dict[str, Any]]:
    """Requests around every threshold of the example policy, absent fields included."""
    pick = random.Random(seed).choice
    requests = []
    for index in range(count):
        request: dict[str, Any] = {
            "request_id": f"r{index}",
            "asset": pick(["ACME", "FRAUDCO", "SANCTN", "SPY", "QQQ", "AAPL", "NVDA"]),
            "action": pick(["open", "close", "increase", "decrease"]),
            "current_date": format_instant(NOW),
        }
        for field, values in (
            ("target_size", [None, 0.05, 0.1, 0.1000001, 0.12, 0.5]),
            ("current_size", [None, 0.02, 0.2]),
            ("active_positions", [None, 0, 29, 30, 31]),
            ("current_score", [None, 0.1, 0.4999, 0.5, 0.59, 0.6, 0.9]),
            ("position_entry_date", [None, _at(1), _at(3), _at(100)]),
        ):
            value = pick(values)
            if value is not None:
                request[field] = value
        severity = pick([None, "none", "normal", "high", "critical"])
        if severity == "none":
            request["regime"] = {"changed": False}
        elif severity is not None:
            request["regime"] = {"changed": True, "severity": severity, "change_date": _at(pick([1, 6, 8]))}
        state = pick(["none", "core", "expired-core", "grace", "cycle", "cooldown", "cooled"])
        request["state"] = {
            "none": {},
            "core": {"core": {"designated_at": _at(10)}},
            "expired-core": {"core": {"designated_at": _at(100), "expires_at": _at(10)}},
            "grace": {"grace": {"started_at": _at(2)}},
            "cycle": {"events": [{"type": "open", "at": _at(10)}, {"type": "close", "at": _at(8)}]},
            "cooldown": {"last_override_at": _at(10)},
            "cooled": {"last_override_at": _at(40)},
        }[state]
        requests.append(request)
    return requests


def test_the_example_policy_decides_as_the_built_ins_plus_the_conditions_by_hand():
    requests = corpus(4000, seed=9)
    decisions = ENGINE.evaluate_many(requests)
    seen = {"block": set(), "overridden": set(), "pass": set()}
    for request, decision in zip(requests, decisions, strict=True):
        assert not decision.errors, (request, decision.errors)
        expected = oracle(request)
        got = {
            "decision": decision.decision,
            "blocking_systems": list(decision.blocking_systems),
            "override_applied": decision.override_applied,
            "statuses": {entry.system: entry.status for entry in decision.trace},
        }
        assert got == expected, request
        for name in CUSTOM:
            seen.setdefault(got["statuses"][name], set()).add(name)
    # the corpus reaches every outcome: each custom protection blocks and passes, and the two a
    # bypass list names are overridden
    assert seen["block"] == seen["pass"] == set(CUSTOM)
    assert seen["overridden"] == {"concentration_limit", "max_open_positions"}


# ------------------------------------------------------------------- protect test, fmt, lint


def test_the_example_cases_pass_and_fire_every_custom_rule():
    results = run_cases(case for file in load_case_files([CASES]) for case in file.cases)
    assert [r.case.name for r in results if not r.passed] == []
    [coverage] = measure_coverage(results).policies
    assert {f"{name}.block": coverage.rules[f"{name}.block"] > 0 for name in CUSTOM} == dict.fromkeys(
        (f"{name}.block" for name in CUSTOM), True
    )
    gaps = coverage.gaps()
    assert not [gap for gap in gaps if any(name in gap for name in CUSTOM) and "never overridden" not in gap]


def test_coverage_names_a_custom_protection_that_never_blocked():
    results = run_cases(load_case_files([CASES / "blacklist.yaml"])[0].cases)
    gaps = measure_coverage(results).policies[0].gaps()
    assert "rule `concentration_limit.block` never fired" in gaps
    assert "concentration_limit never blocked an `increase`" in gaps
    assert "max_open_positions was never overridden on an `open`" in gaps


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_the_example_policy_validates_strictly_and_is_in_the_canonical_layout():
    assert lint_policy(POLICY) == []
    assert run("validate", "--strict", str(EXAMPLE)).exit_code == 0
    assert run("fmt", "--check", str(EXAMPLE)).exit_code == 0
    result = run("test", str(CASES))
    assert result.exit_code == 0 and "21 passed, 0 failed" in result.output


def test_lint_warns_about_a_comparison_on_an_optional_fact_without_an_exists_test():
    text = EXAMPLE.read_text().replace("        - {fact: target_size, exists: true}\n", "")
    warnings = lint_policy(parse_policy(text, "p.yaml"))
    assert [(w.code, w.path, w.line) for w in warnings] == [
        ("fact-absent-unguarded", "$.protections.concentration_limit.when.all[0].fact", 70)
    ]
    assert "`target_size` may be absent" in warnings[0].message
    # asset is never absent: no warning for `asset not_in [...]`; an `exists` test anywhere in
    # the condition says absence was thought about (minimum_score_to_open's `exists: false`)


def test_the_layout_of_a_condition_keeps_every_comment(tmp_path):
    messy = EXAMPLE.read_text().replace(
        "    when:\n      all:\n        - {fact: target_size, exists: true}\n        - {fact: target_size, gt: 0.1}\n"
        "        - {fact: asset, not_in: [SPY, QQQ]}\n",
        "    when:   # what is limited\n      all: [{fact: target_size, exists: true},  # guard\n"
        "            {fact: target_size,\n             gt: 0.1},  # ten\n"
        "            # index funds\n            {fact: asset, not_in: [SPY, QQQ]}]\n",
    )
    path = tmp_path / "messy.yaml"
    path.write_text(messy)
    result = run("fmt", str(path))
    assert result.exit_code == 0
    assert (
        "    when:  # what is limited\n"
        "      all:  # guard\n"  # a comment after a value stays on the line that value starts
        "        - {fact: target_size, exists: true}\n"
        "        - {fact: target_size, gt: 0.1}  # ten\n"
        "        # index funds\n"
        "        - {fact: asset, not_in: [SPY, QQQ]}\n"
    ) in result.stdout
    assert parse_policy(result.stdout, "x").sha256 == POLICY.sha256


# ---------------------------------------------------------------------------- protect diff


def test_the_static_diff_names_the_test_that_changed_and_added_custom_protections():
    text = EXAMPLE.read_text()
    new = parse_policy(text.replace("gt: 0.1}", "gt: 0.12}").replace("in: [ACME, FRAUDCO, SANCTN]", "in: [ACME, FRAUDCO]"), "new")
    changes = [str(c) for c in diff_policies(POLICY, new).changes]
    assert changes == [
        'protections.blacklist.when.in: ["ACME", "FRAUDCO", "SANCTN"] -> ["ACME", "FRAUDCO"]',
        "protections.concentration_limit.when.all[1].gt: 0.1 -> 0.12",
    ]
    assert [c.kind for c in diff_policies(POLICY, new).changes] == ["condition", "condition"]
    default = load_policy(ROOT / "policies" / "default.yaml")
    added = [(c.kind, c.path) for c in diff_policies(default, POLICY).changes if c.kind == "added"]
    assert added == [(kind, f"protections.{name}") for kind, name in (("added", n) for n in ["blacklist", *CUSTOM[1:]])]


def test_the_impact_of_a_custom_change_is_grouped_by_its_cause(tmp_path):
    new = tmp_path / "new.yaml"
    new.write_text(EXAMPLE.read_text().replace("ge: 30}", "ge: 20}").replace("version: 1.0.0", "version: 1.1.0"))
    requests = tmp_path / "requests.jsonl"
    requests.write_text("\n".join(json.dumps(r) for r in corpus(300, seed=3)) + "\n")
    result = run("diff", "--format", "json", "--workers", "1", str(EXAMPLE), str(new), "--requests", str(requests))
    report = json.loads(result.stdout)
    groups = report["impact"]["groups"]
    assert groups and {g["change"] for g in groups} <= {"approve-to-deny", "blocking-systems", "override-applied"}
    for group in groups:
        assert {p["name"] for p in group["protections"]} == {"max_open_positions"}
        assert [p["path"] for p in group["parameters"]] == ["protections.max_open_positions.when.all[1].ge"]


@pytest.mark.parametrize("count", [50])
def test_a_policy_with_fifty_custom_protections_compiles_and_decides(count):
    default = (ROOT / "policies" / "default.yaml").read_text()
    names = [f"limit_{i:02d}" for i in range(count)]
    text = default.replace("  - whipsaw_protection\n", "  - whipsaw_protection\n" + "".join(f"  - {n}\n" for n in names))
    for i, name in enumerate(names):
        text += (
            f"\n  {name}:\n    type: condition\n    enabled: true\n    blocks: [open, increase]\n"
            f"    when: {{all: [{{fact: target_size, gt: {(i + 1) / 100}}}, {{fact: asset, ne: SPY}}]}}\n    reason: r\n"
        )
    engine = Engine(compile_policy(parse_policy(text, "fifty")), audit=None)
    for size, blockers in ((0.005, 0), (0.255, 25), (0.9, 50)):
        decision = engine.evaluate(
            {"asset": "AAPL", "action": "open", "current_date": "2026-03-20T12:00:00Z", "target_size": size}
        )
        assert not decision.errors
        assert list(decision.blocking_systems) == names[:blockers]
