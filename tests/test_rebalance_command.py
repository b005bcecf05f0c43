"""`protect rebalance`: the adapter from the command line, its files and their schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from protection_rules.cli import cli
from protection_rules.resources import schema
from protection_rules.state import SqliteStateStore

ROOT = Path(__file__).resolve().parent.parent
TARGETS = str(ROOT / "examples" / "rebalance" / "targets.json")
REGIME = str(ROOT / "examples" / "rebalance" / "regime.json")
DATE = "2026-03-12T09:00:00Z"
README = (ROOT / "README.md").read_text()


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def state(tmp_path) -> str:
    """A state store where AAPL was opened two days before `DATE` (held less than 3 days)."""
    path = str(tmp_path / "state.sqlite")
    assert (
        run("state", "record", "open", "AAPL", "--at", "2026-03-10T14:30:00Z", "--size", "0.06", "--state", path).exit_code == 0
    )
    return path


def text_without_trace(output: str) -> str:
    return re.sub(r"trace [0-9a-f]{32}", "trace ...", output)


# What the README shows: worked out by hand. AAPL is failing (0.45 < 0.6): its grace period
# starts now and ends 5 days later; it was opened on 03-10T14:30, so it is held until 03-13T14:30.
EXPECTED_TEXT = """\
rebalance at 2026-03-12T09:00:00Z: 4 targets, 3 approved (1 hold, 0 overridden), 1 denied
  APPROVED  open      NVDA  0.00% -> 5.00%
  HOLD      hold      MSFT  4.00% -> 4.10%  not evaluated
  APPROVED  increase  TSLA  3.00% -> 5.00%
  DENIED    close     AAPL  6.00% -> 0.00%  blocked by grace_period, holding_period; unblocks at 2026-03-17T09:00:00Z
  denied by: grace_period 1, holding_period 1
  policy default 1.0.0 (0183b96819be)  trace ...
"""


def test_the_table_lists_approved_and_denied_targets_with_blockers_and_unblocks_at(state):
    result = run("rebalance", TARGETS, "--date", DATE, "--state", state, "--no-audit")
    assert result.exit_code == 1
    assert text_without_trace(result.stdout) == EXPECTED_TEXT


def test_the_readme_shows_what_the_command_prints():
    shown = README.split("protect rebalance examples/rebalance/targets.json --date 2026-03-12T09:00:00Z", 1)[1]
    block = re.search(r"```\n(rebalance at .*?)```", shown, re.S).group(1)  # the output block after the command
    assert text_without_trace(block) == EXPECTED_TEXT


def test_a_denials_grace_period_is_stored_for_the_next_rebalance(state):
    assert run("rebalance", TARGETS, "--date", DATE, "--state", state, "--no-audit").exit_code == 1
    later = run("rebalance", TARGETS, "--date", "2026-03-14T09:00:00Z", "--state", state, "--no-audit")
    # held 3 days by now; the grace period started at the first rebalance still runs
    assert "AAPL  6.00% -> 0.00%  blocked by grace_period; unblocks at 2026-03-17T09:00:00Z" in later.stdout


def test_a_critical_regime_change_overrides_and_quiet_prints_the_summary(state):
    result = run("rebalance", TARGETS, "--date", DATE, "--state", state, "--no-audit", "--regime", REGIME, "-q")
    assert result.exit_code == 0
    assert result.stdout == "rebalance at 2026-03-12T09:00:00Z: 4 targets, 4 approved (1 hold, 1 overridden), none denied\n"


def test_verbose_names_the_policy_state_and_audit_used_on_stderr(state):
    result = run("rebalance", TARGETS, "--date", DATE, "--state", state, "--no-audit", "-v")
    assert result.stderr.splitlines()[1] == f"state {state}; audit none"
    assert result.stderr.startswith("policy ") and "(default 1.0.0, sha256 0183b968" in result.stderr
    assert text_without_trace(result.stdout) == EXPECTED_TEXT


def test_the_json_report_follows_its_schema_and_every_decision_the_decision_schema(state, tmp_path):
    audit = str(tmp_path / "audit.jsonl")
    report_path = tmp_path / "report.json"
    result = run(
        "rebalance", TARGETS, "--date", DATE, "--state", state, "--audit", audit, "--format", "json", "-o", str(report_path)
    )
    assert (result.exit_code, result.stdout) == (1, "")
    report = json.loads(report_path.read_text())
    jsonschema.Draft202012Validator(schema("rebalance-report")).validate(report)
    decisions = [t["decision"] for t in report["approved"] + report["denied"] if t["decision"]]
    for decision in decisions:
        jsonschema.Draft202012Validator(schema("decision")).validate(decision)
    assert [(t["asset"], t["action"]) for t in report["approved"]] == [("NVDA", "open"), ("MSFT", "hold"), ("TSLA", "increase")]
    assert [(t["asset"], t["decision"]["blocking_systems"]) for t in report["denied"]] == [
        ("AAPL", ["grace_period", "holding_period"])
    ]
    assert report["summary"] == {
        "targets": 4,
        "evaluated": 3,
        "approved": 3,
        "denied": 1,
        "holds": 1,
        "overridden": 0,
        "approval_rate": 0.75,
        "denials_by_protection": {"grace_period": 1, "holding_period": 1},
    }
    # the batch is in the audit trail under one trace id, and `protect commit` takes its decisions
    records = [json.loads(line) for line in Path(audit).read_text().splitlines()]
    assert {(r["trace_id"], r["asset"]) for r in records} == {(report["trace_id"], a) for a in ("NVDA", "TSLA", "AAPL")}
    approved = "\n".join(json.dumps(t["decision"]) for t in report["approved"] if t["decision"])
    assert run("commit", "-", "--state", state, "--audit", audit, input=approved).exit_code == 0


@pytest.mark.parametrize(
    ("content", "code", "expected"),
    [
        (
            '{"targets": [{"asset": "X", "action": "clse", "current_allocation_pct": 0, "target_allocation_pct": 0.1}]}',
            3,
            "did you mean `close`?",
        ),
        (
            '{"targets": [{"asset": "X", "current_allocation_pct": 5, "target_allocation_pct": 0}]}',
            3,
            "targets.json: $.targets[0].current_allocation_pct: target `X`: `current_allocation_pct` must be <= 1, got `5`",
        ),
        (
            '{"targets": [{"asset": "X", "action": "increase", "current_allocation_pct": 0.1, "target_allocation_pct": 0}]}',
            3,
            "$.targets[0].action: target `X`: `increase` needs a target above a current allocation above 0, got 0.1 to 0",
        ),
        (
            '{"targets": [{"asset": "X", "current_allocation_pct": 0, "target_allocation_pct": 0.1},'
            ' {"asset": "X", "current_allocation_pct": 0, "target_allocation_pct": 0.2}]}',
            3,
            "$.targets[1].asset: target `X`: a second target for `X` (the first is $.targets[0])",
        ),
        ('{"targets": [{"asset": "X"}]}', 3, "missing required field `current_allocation_pct`"),
        (
            '{"targets": [{"asset": "X", "current_allocation_pct": NaN, "target_allocation_pct": 0}]}',
            3,
            "not a valid JSON number",
        ),
        ("[]", 3, "must be of type object"),
        ("{not json", 3, "json: expecting property name"),
    ],
)
def test_a_bad_targets_file_names_the_file_the_path_and_the_target(tmp_path, state, content, code, expected):
    path = tmp_path / "targets.json"
    path.write_text(content)
    result = run("rebalance", str(path), "--date", DATE, "--state", state, "--no-audit")
    assert result.exit_code == code
    assert expected in result.stderr
    assert result.stdout == ""


def test_every_problem_of_a_targets_file_is_reported_at_once_and_under_json_as_json(tmp_path, state):
    path = tmp_path / "targets.json"
    path.write_text(
        '{"targets": [{"asset": "X", "action": "clse", "current_allocation_pct": 5, "target_alocation_pct": 0},'
        ' {"asset": "X", "action": "increase", "current_allocation_pct": 0.1, "target_allocation_pct": 0}]}'
    )
    result = run("rebalance", str(path), "--date", DATE, "--state", state, "--format", "json")
    assert result.exit_code == 3
    error = json.loads(result.stdout)["error"]
    jsonschema.Draft202012Validator(schema("error")).validate({"error": error})
    assert error["code"] == "target-invalid"
    assert [(i["code"], i["path"]) for i in error["issues"]] == [
        ("schema-enum", "$.targets[0].action"),
        ("schema-range", "$.targets[0].current_allocation_pct"),
        ("schema-unknown-field", "$.targets[0].target_alocation_pct"),
        ("action-mismatch", "$.targets[1].action"),
        ("target-duplicate", "$.targets[1].asset"),
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"changed": true, "severity": "criticl"}', 'regime.json: $.severity: `"criticl"` is not one of'),
        (
            '{"changed": true, "change_date": "2026-03-13"}',
            "regime.json: $.change_date: `2026-03-13T00:00:00Z` is after `current_date`",
        ),
        ('{"severity": "high"}', "regime.json: $.changed: missing required field `changed`"),
        ("null", "regime.json: $: a regime must be a JSON object"),
    ],
)
def test_a_bad_regime_file_is_invalid_input(tmp_path, state, content, expected):
    path = tmp_path / "regime.json"
    path.write_text(content)
    result = run("rebalance", TARGETS, "--date", DATE, "--state", state, "--no-audit", "--regime", str(path))
    assert result.exit_code == 3
    assert expected in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["missing.json", "--date", DATE], "missing.json: no such file"),
        ([TARGETS, "--date", DATE, "--regime", "missing.json"], "missing.json: no such file"),
        ([TARGETS, "--date", "2026-03-32"], "Invalid value for --date"),
        ([TARGETS], "Missing option '--date'"),
        ([TARGETS, "--date", DATE, "--hold-band", "1"], "Invalid value for '--hold-band'"),
    ],
)
def test_usage_errors(tmp_path, state, args, expected):
    result = run("rebalance", *[str(tmp_path / a) if a == "missing.json" else a for a in args], "--state", state, "--no-audit")
    assert result.exit_code == 2
    assert expected in result.stderr


def test_an_explicit_state_store_must_exist_the_default_one_is_created(tmp_path, monkeypatch):
    missing = tmp_path / "typo.sqlite"
    result = run("rebalance", TARGETS, "--date", DATE, "--state", str(missing), "--no-audit")
    assert (result.exit_code, missing.exists()) == (2, False)
    assert f"{missing}: no such file" in result.stderr
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "home"))
    assert run("rebalance", TARGETS, "--date", DATE, "--no-audit").exit_code == 1
    store = SqliteStateStore(tmp_path / "home" / "protection-rules" / "state.sqlite", create=False)
    try:
        assert store.load("AAPL").grace is not None  # the denial's grace period was committed there
    finally:
        store.close()


def test_the_hold_band_decides_what_is_a_hold(state):
    result = run("rebalance", TARGETS, "--date", DATE, "--state", state, "--no-audit", "--hold-band", "0", "-q")
    assert result.stdout.startswith("rebalance at 2026-03-12T09:00:00Z: 4 targets, 3 approved (0 holds, 0 overridden), 1 denied")


# ------------------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("name", ["rebalance-targets", "rebalance-report", "regime"])
def test_each_rebalance_schema_ships(name):
    assert schema(name)["$id"].endswith(f"/{name}.v1.schema.json")


def test_the_regime_file_is_the_requests_regime_object():
    request = schema("request")["properties"]["regime"]
    regime = schema("regime")
    for key in ("properties", "required", "additionalProperties"):
        assert regime[key] == request[key]


def test_a_targets_asset_is_a_requests_asset():
    assert schema("rebalance-targets")["$defs"]["target"]["properties"]["asset"] == schema("request")["properties"]["asset"]


def test_the_example_files_validate():
    jsonschema.Draft202012Validator(schema("rebalance-targets")).validate(json.loads(Path(TARGETS).read_text()))
    jsonschema.Draft202012Validator(schema("regime")).validate(json.loads(Path(REGIME).read_text()))
