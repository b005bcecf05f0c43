"""The `protect` command through click's CliRunner: output shapes and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from protection_rules.cli import cli
from protection_rules.resources import schema

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "requests"
DEFAULT = (ROOT / "policies" / "default.yaml").read_text()

HOLDING = {
    "asset": "AAPL",
    "action": "close",
    "current_date": "2026-03-12T07:00:00Z",
    "position_entry_date": "2026-03-10T09:00:00Z",
}
OPEN = {"asset": "AMZN", "action": "open", "current_date": "2026-03-12T09:00:00Z"}


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


# ------------------------------------------------------------------------------------- validate


def test_validate_default_policies_exit_0():
    result = run("validate", str(ROOT / "policies"))
    assert result.exit_code == 0
    assert "default.yaml: ok (default 1.0.0" in result.output


def test_validate_reports_three_mistakes_with_lines(tmp_path):
    text = (
        DEFAULT.replace("    min_days: 3\n", "    min_days: -3\n")  # line 46
        .replace("    period_days: 14\n", "    period_dayz: 14\n")  # line 53
        .replace("  - grace_period\n", "  - grace_perod\n", 1)  # line 14
    )
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run("validate", str(path))
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(str(path))]
    assert [line.split(": ")[0].split(":")[1:] for line in lines] == [["14", "5"], ["46", "15"], ["53", "5"]]
    assert "did you mean `grace_period`?" in lines[0]
    assert "`min_days` must be >= 0, got `-3`" in lines[1]
    assert "unknown field `period_dayz`; did you mean `period_days`?" in lines[2]


def test_validate_json_format_lists_every_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(DEFAULT.replace("max_cycles: 1", "max_cycles: 0"))
    result = run("validate", "--format", "json", str(path), str(ROOT / "policies" / "default.yaml"))
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["valid"] is False
    bad, good = report["files"]
    assert bad["errors"][0]["code"] == "schema-range"
    assert bad["errors"][0]["path"] == "$.protections.whipsaw_protection.max_cycles"
    assert good["valid"] is True and len(good["policy"]["sha256"]) == 64


def test_validate_missing_file_is_a_usage_error_not_a_traceback(tmp_path):
    result = run("validate", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert result.stderr == f"protect: {tmp_path / 'nope.yaml'}: no such file\n"


def test_validate_empty_folder_is_a_usage_error(tmp_path):
    assert run("validate", str(tmp_path)).exit_code == 2


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and "protect, version 0.1.0" in result.output


@pytest.mark.parametrize("command", [[], ["validate"], ["evaluate"]])
def test_every_command_has_help_with_an_example(command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    if command:
        assert "Example:" in result.output


# ------------------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize(
    ("example", "exit_code", "verdict"),
    [
        ("holding_close.json", 1, "DENIED"),
        ("plain_open.json", 0, "APPROVED"),
        ("critical_override.json", 0, "APPROVED"),
        ("core_asset_close.json", 1, "DENIED"),
    ],
)
def test_evaluate_example_text(example, exit_code, verdict):
    result = run("evaluate", str(EXAMPLES / example))
    assert result.exit_code == exit_code
    first = result.output.splitlines()[0]
    assert first.startswith(verdict)
    # one row per protection, in priority order
    rows = [line.split()[1] for line in result.output.splitlines()[1:] if line.strip()[:1].isdigit()]
    assert rows == ["core_asset_immunity", "regime_override", "grace_period", "holding_period", "whipsaw_protection"]


def test_evaluate_json_is_a_decision_v1(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(HOLDING))
    result = run("evaluate", "--format", "json", str(path))
    assert result.exit_code == 1
    decision = json.loads(result.output)
    jsonschema.Draft202012Validator(schema("decision")).validate(decision)
    assert decision["blocking_systems"] == ["holding_period"]
    assert decision["unblocks_at"] == "2026-03-13T09:00:00Z"


def test_evaluate_jsonl_keeps_order_and_survives_a_bad_line(tmp_path):
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join([json.dumps(OPEN), "{not json", json.dumps(HOLDING), json.dumps({**OPEN, "action": "sell"})]))
    result = run("evaluate", "--format", "json", str(path))
    assert result.exit_code == 3  # invalid input wins over a denial
    decisions = [json.loads(line) for line in result.output.splitlines()]
    assert [d["decision"] for d in decisions] == ["approve", "deny", "deny", "deny"]
    assert decisions[1]["blocking_systems"] == ["error"]
    assert decisions[1]["errors"][0]["code"] == "json-syntax"
    assert decisions[1]["errors"][0]["line"] == 2
    assert decisions[2]["blocking_systems"] == ["holding_period"]
    assert decisions[3]["errors"][0]["path"] == "$.action"


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        (json.dumps(OPEN, indent=2), ["approve"]),
        (json.dumps(OPEN) + "\n" + json.dumps(HOLDING) + "\n", ["approve", "deny"]),
    ],
)
def test_evaluate_stdin_takes_either_form(stdin, expected):
    result = run("evaluate", "--format", "json", "-", input=stdin)
    lines = result.output.strip().splitlines()
    decisions = [json.loads(result.output)] if len(expected) == 1 else [json.loads(line) for line in lines]
    assert [d["decision"] for d in decisions] == expected


def test_evaluate_now_replaces_current_date(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(HOLDING))
    # at the holding period's end the close is allowed (half-open window)
    result = run("evaluate", "--now", "2026-03-13T09:00:00Z", "--format", "json", str(path))
    assert result.exit_code == 0
    assert json.loads(result.output)["evaluated_at"] == "2026-03-13T09:00:00Z"


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [
        (["--now", "yesterday"], 2),
        (["--format", "xml"], 2),
        (["--policy", "/nonexistent/policy.yaml"], 2),
    ],
)
def test_evaluate_bad_options(args, exit_code):
    result = run("evaluate", *args, str(EXAMPLES / "plain_open.json"))
    assert result.exit_code == exit_code


def test_evaluate_invalid_policy_lists_errors_and_exits_3(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(DEFAULT.replace("days: 5", "days: 0"))
    result = CliRunner().invoke(cli, ["evaluate", "--policy", str(policy), str(EXAMPLES / "plain_open.json")])
    assert result.exit_code == 3
    assert "$.protections.grace_period.days" in result.output


@pytest.mark.parametrize(
    ("content", "code"),
    [("", "json-syntax"), ("[1, 2]", "schema-type"), ('{"asset": "A", "asset": "B"}', "json-syntax"), ("NaN", "json-syntax")],
)
def test_evaluate_bad_request_files_deny_with_exit_3(tmp_path, content, code):
    path = tmp_path / "r.json"
    path.write_text(content)
    result = run("evaluate", "--format", "json", str(path))
    assert result.exit_code == 3
    decision = json.loads(result.output)
    assert decision["approved"] is False and decision["blocking_systems"] == ["error"]
    assert decision["errors"][0]["code"] == code


def test_evaluate_missing_request_file_is_usage_error(tmp_path):
    assert run("evaluate", str(tmp_path / "missing.json")).exit_code == 2


def test_evaluate_explain_shows_conditions():
    result = run("evaluate", "--explain", str(EXAMPLES / "holding_close.json"))
    assert "fired holding_period.block: action in [close, decrease] [yes: 'close']" in result.output
    assert "quiet holding_period.review" in result.output


def test_evaluate_no_audit_is_accepted():
    assert run("evaluate", "--no-audit", str(EXAMPLES / "plain_open.json")).exit_code == 0


# ------------------------------------------------------------------------- the installed wheel


def test_installed_protect_works_outside_the_repository(tmp_path):
    """`pip install .` must ship the schemas and default policy inside the package."""
    protect = Path(sys.executable).parent / "protect"
    assert protect.exists(), "install the package first: pip install '.[test]' (README quick start)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(protect), "validate"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "default.yaml: ok" in done.stdout
    example = tmp_path / "r.json"
    example.write_text(json.dumps(OPEN))
    done = subprocess.run([str(protect), "evaluate", str(example)], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.startswith("APPROVED")
