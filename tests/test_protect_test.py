"""`protect test` and the library under it: comparing decisions with expectations, the engine
cache, coverage by rule id, the text, JSON and JUnit reports, and exit codes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from protection_rules.case_coverage import measure_coverage
from protection_rules.case_reporting import junit_xml
from protection_rules.cases import load_case_files, load_cases
from protection_rules.cli import cli
from protection_rules.paths import state_home
from protection_rules.resources import default_policy_path, schema
from protection_rules.testing import CaseResult, Engines, Mismatch, compare, deep_merge, run_cases, same_value

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-03-20T12:00:00Z"
# held 1 of 3 days: holding_period blocks the close until 2026-03-22T12:00:00Z (docs/semantics.md section 4)
HOLDING_CLOSE = {"asset": "NVDA", "action": "close", "current_date": NOW, "position_entry_date": "2026-03-19T12:00:00Z"}
PLAIN_OPEN = {"asset": "AMZN", "action": "open", "current_date": NOW}
WITHOUT_WHIPSAW = ("core_asset_immunity", "regime_override", "grace_period", "holding_period")
RULES = (
    "core_asset_immunity.block",
    "regime_override.available.high",
    "regime_override.available.high.cooled_down",
    "regime_override.available.critical",
    "regime_override.available.critical.cooled_down",
    "grace_period.starts",
    "grace_period.recovers",
    "grace_period.block.failing",
    "grace_period.block.carried",
    "holding_period.review",
    "holding_period.block",
    "whipsaw_protection.block",
)


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def case_file(folder: Path, cases: list[dict], name: str = "cases.yaml", policy: str | None = None) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    # through JSON: PyYAML writes an object met twice as an anchor and an alias, which case files refuse
    document = json.loads(json.dumps(({"policy": policy} if policy else {}) | {"cases": cases}))
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def engines():
    with Engines() as cache:
        yield cache


# ---------------------------------------------------------------------------------- comparing

# (expect, [(field, expected, actual)]) for HOLDING_CLOSE under the default policy, by hand
COMPARISONS = {
    "all-match": (
        {
            "decision": "deny",
            "blocking_systems": ["holding_period"],
            "statuses": {"holding_period": "block", "whipsaw_protection": "not_applicable"},
            "unblocks_at": "2026-03-22T12:00:00Z",
            "trace_unblocks_at": {"holding_period": "2026-03-22T12:00:00Z", "whipsaw_protection": None},
            "override_applied": False,
            "state_changes": [],
            "reason_contains": ["Action blocked by", "holding_period"],
            "facts": {"holding_period": {"days_held": 1, "review": False}},
        },
        [],
    ),
    "decision": ({"decision": "approve"}, [("decision", "approve", "deny")]),
    "blocking": ({"blocking_systems": []}, [("blocking_systems", [], ["holding_period"])]),
    "status": ({"statuses": {"holding_period": "pass"}}, [("statuses.holding_period", "pass", "block")]),
    "same-instant-other-offset": ({"unblocks_at": "2026-03-22T13:00:00+01:00"}, []),
    "other-instant": ({"unblocks_at": "2026-03-22"}, [("unblocks_at", "2026-03-22", "2026-03-22T12:00:00Z")]),
    "null-instant": ({"unblocks_at": None}, [("unblocks_at", None, "2026-03-22T12:00:00Z")]),
    "trace-instant": (
        {"trace_unblocks_at": {"holding_period": None}},
        [("trace_unblocks_at.holding_period", None, "2026-03-22T12:00:00Z")],
    ),
    "override": ({"override_applied": True}, [("override_applied", True, False)]),
    "override-reason": ({"override_reason_contains": "bypassed"}, [("override_reason_contains", "bypassed", None)]),
    "state-changes": ({"state_changes": ["grace_started"]}, [("state_changes", ["grace_started"], [])]),
    "reason": (
        {"reason_contains": ["Action blocked by", "grace"]},
        [("reason_contains", "grace", "Action blocked by: holding_period")],
    ),
    "fact-int-as-float": ({"facts": {"holding_period": {"days_held": 1.0}}}, []),
    "facts": (
        {"facts": {"holding_period": {"days_held": 2, "nope": 1}}},
        [("facts.holding_period.days_held", 2, 1), ("facts.holding_period.nope", 1, None)],
    ),
    "bool-is-not-a-number": ({"facts": {"holding_period": {"review": 0}}}, [("facts.holding_period.review", 0, False)]),
}


@pytest.mark.parametrize(("expect", "expected"), list(COMPARISONS.values()), ids=list(COMPARISONS))
def test_compare_names_each_field_that_differs(engines, expect, expected):
    decision = engines.get(default_policy_path()).evaluate(HOLDING_CLOSE)
    assert [(m.field, m.expected, m.actual) for m in compare(expect, decision)] == expected


@pytest.mark.parametrize(
    ("expect", "message"),
    [
        ({"decision": "approve"}, 'decision: expected "approve", got "deny"'),
        ({"facts": {"holding_period": {"nope": 1}}}, "facts.holding_period.nope: expected 1, got no such fact"),
        (
            {"reason_contains": "grace"},
            'reason: expected a text containing "grace", got "Action blocked by: holding_period"',
        ),
        (
            {"statuses": {"whipsaw_protection": "pass"}},
            'statuses.whipsaw_protection: expected "pass", got no trace entry for this protection',
        ),
    ],
)
def test_mismatch_messages(engines, expect, message):
    # whipsaw disabled and out of the hierarchy: no trace entry at all
    overrides = {
        "hierarchy": list(WITHOUT_WHIPSAW),
        "protections": {
            "whipsaw_protection": {"enabled": False},
            "regime_override": {"bypass": {"critical": ["grace_period", "holding_period"]}},
        },
    }
    decision = engines.get(default_policy_path(), overrides).evaluate(HOLDING_CLOSE)
    assert [m.message for m in compare(expect, decision)] == [message]


@pytest.mark.parametrize(
    ("seen", "wanted", "same"),
    [
        (512.0000000001, 512.0, True),
        (512.01, 512.0, False),
        (1, 1.0, True),
        (True, 1, False),
        (True, 1.0, False),
        ("1", 1, False),
        (None, None, True),
        ([1, 2], [1, 2], True),
    ],
)
def test_same_value(seen, wanted, same):
    assert same_value(seen, wanted) is same


@pytest.mark.parametrize(
    ("base", "overrides", "merged"),
    [
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}, {"a": {"b": 3, "c": 2}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": {"b": 1}}, {"a": 5}, {"a": 5}),
        ({"a": 1}, {"b": {"c": 1}}, {"a": 1, "b": {"c": 1}}),
    ],
)
def test_deep_merge(base, overrides, merged):
    before = json.dumps(base)
    assert deep_merge(base, overrides) == merged
    assert json.dumps(base) == before  # the base is not changed


# ------------------------------------------------------------------------------- the engines


def test_engines_are_built_once_per_policy_and_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    with Engines() as cache:
        plain = cache.get(default_policy_path())
        assert cache.get("policies/default.yaml") is plain
        five = cache.get(default_policy_path(), {"protections": {"holding_period": {"min_days": 5}}})
        assert five is cache.get(default_policy_path(), {"protections": {"holding_period": {"min_days": 5}}})
        assert five is not plain and five.policy.protections["holding_period"].min_days == 5
        assert plain.audit is None and plain.state is None


def test_running_cases_records_nothing():
    results = run_cases(load_cases(ROOT / "examples" / "cases" / "holding_period.yaml").cases)
    assert results and all(r.passed for r in results)
    assert not state_home().exists() or list(state_home().iterdir()) == []


def test_results_keep_the_order_of_the_cases(tmp_path):
    cases = [{"name": f"c{i}", "request": PLAIN_OPEN, "expect": {"decision": "approve"}} for i in range(5)]
    results = run_cases(load_cases(case_file(tmp_path, cases)).cases)
    assert [r.case.name for r in results] == ["c0", "c1", "c2", "c3", "c4"]


# ------------------------------------------------------------------------------------ coverage

TWO = [
    {"name": "holding", "request": HOLDING_CLOSE, "expect": {"decision": "deny"}},
    {"name": "open", "request": PLAIN_OPEN, "expect": {"decision": "approve"}},
]
NORMAL_BYPASS = {
    "name": "normal-override",
    "policy_overrides": {"protections": {"regime_override": {"bypass": {"normal": ["holding_period"]}}}},
    "request": HOLDING_CLOSE | {"regime": {"changed": True, "severity": "normal", "change_date": "2026-03-19T00:00:00Z"}},
    "expect": {"decision": "approve", "override_applied": True},
}


def test_coverage_counts_rule_ids_outcomes_and_gaps(tmp_path):
    coverage = measure_coverage(run_cases(load_cases(case_file(tmp_path, TWO)).cases))
    (policy,) = coverage.policies
    assert policy.rules == {rule: int(rule == "holding_period.block") for rule in RULES}
    assert (coverage.fired, coverage.compiled, coverage.percent) == (1, 12, 8.33)
    assert policy.outcomes["holding_period"] == {"close": {"block": 1}, "open": {"not_applicable": 1}}
    assert policy.outcomes["whipsaw_protection"] == {"close": {"not_applicable": 1}, "open": {"pass": 1}}
    assert policy.overrides_applied == {}
    assert policy.gaps() == [f"rule `{rule}` never fired" for rule in RULES if rule != "holding_period.block"] + [
        "core_asset_immunity never blocked a `close`",
        "core_asset_immunity never blocked a `decrease`",
        "core_asset_immunity never passed a `decrease`",
        "grace_period never blocked a `close`",
        "grace_period was never overridden on a `close`",
        "holding_period never passed a `close`",
        "holding_period was never overridden on a `close`",
        "holding_period never blocked a `decrease`",
        "holding_period never passed a `decrease`",
        "holding_period was never overridden on a `decrease`",
        "whipsaw_protection never blocked an `open`",
        "whipsaw_protection was never overridden on an `open`",
        "no `high` regime override was ever applied",
        "no `critical` regime override was ever applied",
    ]


def test_cases_with_overrides_count_toward_their_own_variant(tmp_path):
    coverage = measure_coverage(run_cases(load_cases(case_file(tmp_path, [*TWO, NORMAL_BYPASS])).cases))
    (policy,) = coverage.policies
    base, variant = policy.variants.values()
    assert (base.cases, base.overridden, variant.cases, variant.overridden) == (2, False, 1, True)
    # the variant compiles two more rule ids (a `normal` bypass list is no longer empty) and fires
    # one of them, and the holding block it overrode
    assert len(base.compiled.rules) == 12 and len(variant.compiled.rules) == 14
    assert {rule for rule, count in variant.fired.items() if count} == {
        "regime_override.available.normal",
        "holding_period.block",
    }
    assert policy.rules["holding_period.block"] == 2 and policy.rules["regime_override.available.normal.cooled_down"] == 0
    assert (coverage.fired, coverage.compiled, coverage.percent) == (2, 14, 14.29)
    assert policy.overrides_applied == {"normal": 1}
    assert "holding_period was never overridden on a `close`" not in policy.gaps()
    assert "no `normal` regime override was ever applied" not in policy.gaps()


def test_overall_coverage_sums_the_policy_files(tmp_path):
    policy = (tmp_path / "policies" / "no-whipsaw.yaml").resolve()
    policy.parent.mkdir()
    policy.write_text(
        default_policy_path()
        .read_text()
        .replace("  whipsaw_protection:\n    enabled: true", "  whipsaw_protection:\n    enabled: false")
    )
    case_file(tmp_path, TWO[:1], "a.yaml")
    case_file(tmp_path, TWO[1:], "b.yaml", policy="policies/no-whipsaw.yaml")
    results = run_cases(case for file in load_case_files([tmp_path]) for case in file.cases)
    coverage = measure_coverage(results)
    assert [(p.file, p.fired, len(p.rules)) for p in coverage.policies] == [
        (str(default_policy_path()), 1, 12),
        (str(policy), 0, 11),
    ]
    assert (coverage.fired, coverage.compiled, coverage.percent) == (1, 23, 4.35)


def test_min_coverage_compares_the_exact_figure(tmp_path):
    coverage = measure_coverage(run_cases(load_cases(case_file(tmp_path, TWO)).cases))
    assert coverage.percent == 8.33  # 1 of 12, rounded
    assert coverage.meets(8.333) and coverage.meets(100 / 12)
    assert not coverage.meets(8.334)


@pytest.mark.parametrize(("minimum", "code"), [("8", 0), ("9", 1)])
def test_min_coverage_fails_below(tmp_path, minimum, code):
    result = run("test", "--min-coverage", minimum, str(case_file(tmp_path, TWO)))
    assert result.exit_code == code
    assert "coverage: 8.33% of rule ids fired (1 of 12)" in result.output
    assert ("is below --min-coverage 9" in result.output) is (code == 1)
    assert result.output.splitlines()[-1] == "2 passed, 0 failed"


def test_coverage_text_says_what_was_exercised(tmp_path):
    result = run("test", "--coverage", str(case_file(tmp_path, [*TWO, NORMAL_BYPASS])))
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert f"coverage of {default_policy_path()}: 2 of 14 rule ids fired (14.29%), 3 cases, 2 compiled variants" in lines
    assert "  holding_period       close: block 1, overridden 1; open: not_applicable 1" in lines
    assert "  overrides applied: normal 1" in lines
    assert "    rule `grace_period.block.carried` never fired" in lines
    assert "    holding_period never blocked a `decrease`" in lines


def test_the_starter_cases_pass_with_full_coverage():
    result = run("test", "--min-coverage", "100", str(ROOT / "examples" / "cases"))
    assert result.exit_code == 0, result.output
    assert "coverage: 100% of rule ids fired (12 of 12)" in result.output
    assert "  gaps: none" in result.output


# ------------------------------------------------------------------------------- the command


def hand_picked_cases(count: int) -> list[dict]:
    """`count` shipped cases (tests/cases, hand-checked), renamed to be unique in one file."""
    picked = []
    for file in load_case_files([ROOT / "tests" / "cases"]):
        for case in file.cases:
            item = {"name": f"{Path(case.file).stem}.{case.name}", "request": case.request, "expect": dict(case.expect)}
            if case.policy_overrides:
                item["policy_overrides"] = case.policy_overrides
            picked.append(item)
    return picked[:count]


def test_done_when_32_cases_pass_and_one_wrong_expectation_fails(tmp_path):
    cases = hand_picked_cases(32)
    good = case_file(tmp_path, cases, "good.yaml")
    result = run("test", str(good))
    assert (result.exit_code, result.output) == (0, "32 passed, 0 failed\n")

    wrong = cases[20]
    wrong["expect"]["decision"] = {"approve": "deny", "deny": "approve"}[wrong["expect"]["decision"]]
    bad = case_file(tmp_path, cases, "bad.yaml")
    line = bad.read_text().splitlines().index(f"- name: {wrong['name']}") + 1
    result = run("test", str(bad))
    assert result.exit_code == 1
    assert f"FAIL {bad}:{line} {wrong['name']}" in result.output.splitlines()
    assert "  decision: expected" in result.output
    assert result.output.splitlines()[-1] == "31 passed, 1 failed"


def test_policy_option_replaces_the_files_policy(tmp_path):
    # a position held exactly 3 days: approved under the default policy, denied under min_days 5
    (tmp_path / "five.yaml").write_text(default_policy_path().read_text().replace("min_days: 3", "min_days: 5"))
    held = HOLDING_CLOSE | {"position_entry_date": "2026-03-17T12:00:00Z"}
    path = case_file(tmp_path, [{"name": "three-days", "request": held, "expect": {"decision": "approve"}}], policy="five.yaml")
    assert run("test", str(path)).exit_code == 1
    assert run("test", "--policy", str(default_policy_path()), str(path)).exit_code == 0


@pytest.mark.parametrize(
    ("make", "code", "stderr"),
    [
        ("missing-case-file", 2, "protect: {tmp}/nope.yaml: no such file"),
        ("missing-policy-option", 2, "protect: {tmp}/nope-policy.yaml: no such file"),
        ("invalid-case-file", 3, '{tmp}/cases.yaml:4:24: $.cases[0].expect.decision: `"aprove"` is not one of'),
        ("invalid-policy", 3, "{tmp}/broken.yaml:1:1: $.apiVersion: missing required field `apiVersion`"),
    ],
)
def test_exit_codes(tmp_path, make, code, stderr):
    path = case_file(tmp_path, TWO)
    args = [str(path)]
    if make == "missing-case-file":
        args = [str(tmp_path / "nope.yaml")]
    elif make == "missing-policy-option":
        args = ["--policy", str(tmp_path / "nope-policy.yaml"), str(path)]
    elif make == "invalid-case-file":
        path.write_text("cases:\n  - name: a\n    request: {}\n    expect: {decision: aprove}\n")
    else:
        (tmp_path / "broken.yaml").write_text("metadata: {}\n")
        args = ["--policy", str(tmp_path / "broken.yaml"), str(path)]
    result = CliRunner().invoke(cli, ["test", *args])
    assert result.exit_code == code
    assert stderr.format(tmp=tmp_path) in result.stderr
    assert "passed" not in result.stdout


def test_json_report_follows_its_schema(tmp_path):
    cases = [*TWO, NORMAL_BYPASS | {"expect": {"decision": "deny", "blocking_systems": ["holding_period"]}}]
    path = case_file(tmp_path, cases)
    line = path.read_text().splitlines().index("- name: normal-override") + 1
    result = run("test", "--format", "json", "--min-coverage", "50", str(path))
    assert result.exit_code == 1
    report = json.loads(result.output)
    jsonschema.validate(report, schema("test-report"))
    assert (report["passed"], report["failed"], report["ok"]) == (2, 1, False)
    (file,) = report["files"]
    failing = file["cases"][2]
    assert (failing["name"], failing["line"], failing["passed"], failing["overridden"]) == ("normal-override", line, False, True)
    assert [(m["field"], m["expected"], m["actual"]) for m in failing["mismatches"]] == [
        ("decision", "deny", "approve"),
        ("blocking_systems", ["holding_period"], []),
    ]
    assert report["coverage"]["min_coverage"] == 50 and report["coverage"]["percent"] == 14.29


def test_junit_xml_has_a_suite_per_file_and_a_failure_per_failing_case(tmp_path):
    case_file(tmp_path, TWO, "a.yaml")
    case_file(
        tmp_path, [{"name": 'needs <escaping> & "quotes"', "request": PLAIN_OPEN, "expect": {"decision": "deny"}}], "b.yaml"
    )
    report = tmp_path / "out" / "junit.xml"
    report.parent.mkdir()
    result = run("test", "--junit-xml", str(report), str(tmp_path))
    assert result.exit_code == 1
    root = ET.parse(report).getroot()
    assert (root.tag, root.get("tests"), root.get("failures")) == ("testsuites", "3", "1")
    suites = root.findall("testsuite")
    assert [(s.get("name"), s.get("tests"), s.get("failures")) for s in suites] == [
        (str(tmp_path / "a.yaml"), "2", "0"),
        (str(tmp_path / "b.yaml"), "1", "1"),
    ]
    assert [c.get("name") for c in suites[0].findall("testcase")] == ["holding", "open"]
    assert suites[0].find("testcase/failure") is None
    (case,) = suites[1].findall("testcase")
    assert (case.get("name"), case.get("line")) == ('needs <escaping> & "quotes"', "2")
    failure = case.find("failure")
    assert failure.get("message") == 'decision: expected "deny", got "approve"'
    assert f'{tmp_path / "b.yaml"}:2 needs <escaping> & "quotes"' in failure.text


def test_junit_xml_shows_what_xml_cannot_hold_as_escapes(engines, tmp_path):
    (case,) = load_cases(case_file(tmp_path, TWO[:1])).cases
    engine = engines.get(default_policy_path())
    mismatch = Mismatch("reason_contains", "\x01", "r", "reason: \x01 and \ud800")
    document = junit_xml([CaseResult(case, engine.evaluate(HOLDING_CLOSE), engine.compiled, (mismatch,))])
    failure = ET.fromstring(document).find("testsuite/testcase/failure")
    assert failure.get("message") == "reason: \\x01 and \\ud800"


def test_junit_xml_that_cannot_be_written_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["test", "--junit-xml", str(tmp_path / "no" / "dir.xml"), str(case_file(tmp_path, TWO))])
    assert result.exit_code == 2
    assert "cannot write" in result.stderr


def test_help_says_how_coverage_is_measured():
    result = run("test", "--help")
    assert "Coverage % = rule ids fired / rule ids compiled" in " ".join(result.output.split())


def test_the_readme_case_example_passes(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Testing a policy\n", 1)[1].split("\n## ", 1)[0]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "default.yaml").write_text(default_policy_path().read_text())
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / "readme.yaml").write_text(example)
    result = run("test", str(tmp_path / "cases"))
    assert (result.exit_code, result.output) == (0, "1 passed, 0 failed\n")
    # every expectation the format has is in the example
    assert set(load_cases(tmp_path / "cases" / "readme.yaml").cases[0].expect) == set(
        schema("cases")["$defs"]["expect"]["properties"]
    )
