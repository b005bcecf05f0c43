"""Every file the tool writes has a JSON Schema, and real outputs validate against it.

Outputs come from running `protect` (click's CliRunner) on the shipped examples: the validate
report, audit records of each kind (from a log written now and from a log written before kinds
existed), the audit stats, the verify result and the error report.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from protection_rules import errors
from protection_rules.cli import cli
from protection_rules.resources import schema

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "requests").glob("*.json"))
DEFAULT = (ROOT / "policies" / "default.yaml").read_text()
REPORT_SCHEMAS = ["validate-report", "audit-record", "audit-stats", "audit-verify", "error"]


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), input=input, env=env, catch_exceptions=False)


def valid(name: str, document: object) -> None:
    jsonschema.Draft202012Validator(schema(name)).validate(document)


def invalid(name: str, document: object) -> bool:
    return not jsonschema.Draft202012Validator(schema(name)).is_valid(document)


@pytest.fixture
def log(tmp_path) -> Path:
    """A JSON Lines log with decisions (one of an unreadable request), a state correction and a rollback."""
    path = tmp_path / "audit.jsonl"
    state = tmp_path / "state.sqlite"
    for example in EXAMPLES:
        run("evaluate", "--audit", str(path), str(example))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert run("evaluate", "--audit", str(path), str(broken)).exit_code == 3
    assert run("state", "record", "open", "AAPL", "--at", "2026-03-10T09:00:00Z", "--state", str(state)).exit_code == 0
    (event,) = [json.loads(line) for line in run("state", "events", "list", "AAPL", "--state", str(state)).stdout.splitlines()]
    removed = run(
        "state", "events", "remove", "AAPL", str(event["id"]), "--reason", "typo", "--state", str(state), "--audit", str(path)
    )
    assert removed.exit_code == 0
    with path.open("ab") as handle:  # an interrupted append: the next append rolls it back
        handle.write(b'{"action":"close","asset":"AA')
    run("evaluate", "--audit", str(path), str(EXAMPLES[0]))
    return path


def records(path: Path) -> list[dict]:
    result = run("audit", "query", "--audit", str(path), "--format", "json")
    assert result.exit_code == 0
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("name", REPORT_SCHEMAS)
def test_each_report_schema_ships(name):
    assert schema(name)["$id"].endswith(f"/{name}.v1.schema.json")


def test_audit_records_of_every_kind_validate(log):
    found = records(log)
    assert {r.get("kind") for r in found} == {"decision", "state_correction", "rollback"}
    for record in found:
        valid("audit-record", record)
        if record["kind"] == "decision":
            valid("decision", record["decision_record"])
    unreadable = [r for r in found if r["kind"] == "decision" and r["asset"] is None]
    assert unreadable and unreadable[0]["request"] == {"unparsed": "{not json"}


def test_records_of_a_log_written_before_kinds_validate():
    lines = (ROOT / "tests" / "audit_v1" / "audit.jsonl").read_text().splitlines()
    for line in lines:
        record = json.loads(line)
        assert "kind" not in record and "batch" not in record
        valid("audit-record", record)
        valid("decision", record["decision_record"])


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda r: r.update(kind="note"), "an unknown kind"),
        (lambda r: r.pop("hash"), "a record without its hash"),
        (lambda r: r.update(prev_hash="0" * 63), "a short hash"),
        (lambda r: r.update(decision="maybe"), "a decision that is neither"),
        (lambda r: r.update(colour="red"), "an unknown field in a decision record"),
    ],
)
def test_the_record_schema_refuses(log, change, why):
    record = next(r for r in records(log) if r["kind"] == "decision")
    change(record)
    assert invalid("audit-record", record), why


def test_stats_validate_with_and_without_decisions(log, tmp_path):
    for args in ([], ["--asset", "NOSUCH"]):
        result = run("audit", "stats", "--audit", str(log), "--format", "json", *args)
        assert result.exit_code == 0
        valid("audit-stats", json.loads(result.stdout))
    assert json.loads(run("audit", "stats", "--audit", str(log), "--format", "json").stdout)["count"] == len(EXAMPLES) + 2


def test_verify_results_validate_valid_torn_and_broken(log, tmp_path):
    outcomes = []
    torn = tmp_path / "torn.jsonl"
    shutil.copy(log, torn)
    with torn.open("ab") as handle:
        handle.write(b'{"half')
    broken = tmp_path / "broken.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    broken.write_text("".join([lines[0], lines[2], lines[1], *lines[3:]]))  # two records swapped
    for path, code in ((log, 0), (torn, 0), (broken, 1)):
        result = run("audit", "verify", "--audit", str(path), "--format", "json")
        assert result.exit_code == code
        report = json.loads(result.stdout)
        valid("audit-verify", report)
        outcomes.append((report["ok"], report["torn_tail"] is not None, report["first_bad"]))
    # the second line now holds record #3, the first that does not follow its predecessor
    assert outcomes == [(True, False, None), (True, True, None), (False, False, 3)]


def test_validate_reports_validate(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT.replace("max_cycles: 1", "max_cycles: -1"))
    result = run("validate", "--format", "json", str(ROOT / "policies"), str(bad))
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    valid("validate-report", report)
    assert [f["valid"] for f in report["files"]] == [True, False]
    report["files"][1]["errors"] = []  # an invalid file must name an error
    assert invalid("validate-report", report)


@pytest.mark.parametrize(
    ("args", "code", "exit_code"),
    [
        (["evaluate", "--format", "json", "--policy", "{bad}", "{request}"], "policy-invalid", 3),
        (["evaluate", "--format", "json", "{missing}"], "usage", 2),
        (["evaluate", "--format", "json", "--now", "yesterday", "{request}"], "usage", 2),
        (["evaluate", "--format", "json", "--frobnicate", "{request}"], "usage", 2),
        (["validate", "--format", "json", "{missing}"], "usage", 2),
        (["audit", "query", "--format", "jsonl", "--audit", "{not_a_log}"], "audit-error", 4),
        (["audit", "stats", "--format", "json", "--since", "soon", "--audit", "{not_a_log}"], "usage", 2),
        (["commit", "--format", "json", "{request}"], "usage", 2),  # commit has no --format: asked for anyway
    ],
)
def test_error_reports_validate(tmp_path, args, code, exit_code):
    paths = {
        "bad": tmp_path / "bad.yaml",
        "request": EXAMPLES[0],
        "missing": tmp_path / "missing.json",
        "not_a_log": tmp_path / "notes.jsonl",
    }
    paths["bad"].write_text(DEFAULT.replace("days: 5", "days: 0"))
    paths["not_a_log"].write_text("hello\n")
    result = run(*[arg.format(**paths) for arg in args])
    assert result.exit_code == exit_code
    report = json.loads(result.stdout)
    valid("error", report)
    assert (report["error"]["code"], report["error"]["exit_code"]) == (code, exit_code)
    assert result.stderr.strip()  # and a line for people


def test_every_error_class_has_a_code_the_schema_names():
    classes = [errors.ProtectionRulesError]
    for cls in classes:
        classes.extend(cls.__subclasses__())
    codes = set(schema("error")["properties"]["error"]["properties"]["code"]["enum"])
    assert len(classes) >= 11
    assert {cls.code for cls in classes} <= codes
    assert {"usage", "error"} <= codes  # click's usage errors and its other errors


def test_every_schema_has_the_same_issue_definition():
    # an Issue is one shape everywhere it is written
    decision_issue = schema("decision")["properties"]["errors"]["items"]
    for name in ("error", "validate-report"):
        own = dict(schema(name)["$defs"]["issue"])
        own.pop("description")
        assert own == decision_issue, name
