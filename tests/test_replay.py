"""`protect audit replay`: every recorded decision, decided again under the policy it names,
with the request as received and the state recorded beside it, is the decision recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from protection_rules import Engine
from protection_rules.audit import open_audit
from protection_rules.cli import cli
from protection_rules.loading import read_requests
from protection_rules.resources import schema
from protection_rules.state import SqliteStateStore
from protection_rules.timestamps import parse_instant

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = ROOT / "policies" / "default.yaml"
NOW = "2026-03-12T09:00:00Z"
CLOCK = parse_instant("2026-03-12T09:30:00Z")

FAILING = {"asset": "INTC", "action": "close", "current_date": NOW, "current_score": 0.4, "current_size": 0.05}
HIGH = {"changed": True, "severity": "high", "change_date": "2026-03-11T00:00:00Z"}


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def write_log(folder: Path, name: str) -> Path:
    """Decisions of every kind, written by the engine with a state store, committed as they go."""
    path = folder / name
    store = SqliteStateStore(folder / "state.sqlite")
    with open_audit(path) as sink:
        engine = Engine.from_policy(DEFAULT_PATH, state=store, audit=sink, clock=lambda: CLOCK)
        engine.record_execution("TSLA", "open", "2026-03-02T14:30:00Z", 0.04)
        engine.record_execution("TSLA", "close", "2026-03-06T15:00:00Z", 0.04)
        engine.record_execution("NVDA", "open", "2026-03-11T09:00:00Z", 0.02)
        engine.commit(engine.evaluate(FAILING))  # a grace period starts, and is stored
        engine.evaluate({**FAILING, "current_date": "2026-03-14T09:00:00Z"})  # in grace, from the store
        override = engine.evaluate({"asset": "NVDA", "action": "close", "current_date": NOW, "regime": HIGH})
        assert override.override_applied and override.state_source == "store"
        engine.commit(override)  # the cooldown starts
        engine.evaluate({"asset": "NVDA", "action": "close", "current_date": "2026-03-12T10:00:00Z", "regime": HIGH})
        engine.evaluate({"asset": "TSLA", "action": "open", "current_date": NOW})  # whipsaw, from the store
        engine.evaluate({"asset": "TSLA", "action": "open", "current_date": NOW, "state": {}})  # its own state
        engine.evaluate({"asset": "MSFT", "action": "close", "current_date": NOW, "position_entry_date": "2026-03-11T00:00:00Z"})
        engine.evaluate({"asset": "AMZN", "action": "sell", "current_date": NOW})  # invalid request
        engine.evaluate({"asset": "TSLA", "action": "open", "current_date": "2026-03-01T00:00:00Z"})  # stored state is later
        engine.evaluate(
            {"asset": "AAPL", "action": "open", "current_date": datetime(2026, 3, 12, 9, tzinfo=UTC)}
        )  # a Python caller's datetime
        batch = read_requests(
            [b'{"asset": "AAPL", "action": "open", "current_date": "2026-03-12"}\n{broken\n'], "b.jsonl", lines=True
        )
        list(engine.evaluate_documents(batch.documents))  # a JSON Lines batch with a line that is not JSON
    store.close()
    return path


@pytest.fixture(params=["audit.sqlite", "audit.jsonl"])
def log(request, tmp_path):
    return write_log(tmp_path, request.param)


def test_an_untouched_log_replays_without_a_difference(log):
    result = run("audit", "replay", "--audit", str(log), "--policy", str(DEFAULT_PATH), "--workers", "1")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        f"audit log {log}: 12 decision record(s), 11 replayed, 0 differ; skipped: 1 unparsed-request"
    )


def test_the_replay_runs_on_several_workers_too(log):
    result = run("audit", "replay", "--audit", str(log), "--policy", str(DEFAULT_PATH), "--workers", "2", "--format", "json")
    report = json.loads(result.output)
    assert result.exit_code == 0
    assert (report["records"], report["replayed"], report["differ"]) == (12, 11, 0)
    jsonschema.validate(report, schema("audit-replay"))


def test_a_replay_that_decided_nothing_proves_nothing(tmp_path):
    # every record is under a policy not given: exit 1, not a pass
    other = tmp_path / "other.yaml"
    other.write_text(DEFAULT_PATH.read_text().replace("min_days: 3", "min_days: 4"))
    log = tmp_path / "audit.jsonl"
    with open_audit(log) as sink:
        Engine.from_policy(DEFAULT_PATH, audit=sink).evaluate({"asset": "AAPL", "action": "open", "current_date": NOW})
    result = run("audit", "replay", "--audit", str(log), "--policy", str(other), "--format", "json")
    report = json.loads(result.output)
    assert (report["records"], report["replayed"], result.exit_code) == (1, 0, 1)
    jsonschema.validate(report, schema("audit-replay"))


def test_a_request_refused_for_its_stored_state_keeps_that_state_on_record(log):
    with open_audit(log, mode="read") as opened:
        (record,) = [r for r in opened.records() if r.get("request", {}).get("current_date") == "2026-03-01T00:00:00Z"]
    assert record["decision_record"]["errors"][0]["code"] == "timestamp-future"
    # what the store held then, so that the replay is refused for the same reason
    assert record["state"] == {
        "events": [
            {"type": "open", "at": "2026-03-02T14:30:00Z", "size": 0.04},
            {"type": "close", "at": "2026-03-06T15:00:00Z", "size": 0.04},
        ]
    }


def edit_records(path: Path, edit) -> None:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(edit(record)) + "\n" for record in lines))


def test_a_changed_decision_is_reported_with_the_fields_that_differ(tmp_path):
    log = write_log(tmp_path, "audit.jsonl")

    def approve_the_whipsaw_denial(record):
        if record.get("request", {}).get("action") == "open" and record.get("blocking_systems") == ["whipsaw_protection"]:
            record["decision_record"].update(approved=True, decision="approve", blocking_systems=[])
        return record

    edit_records(log, approve_the_whipsaw_denial)
    result = run("audit", "replay", "--audit", str(log), "--policy", str(DEFAULT_PATH), "--format", "json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    jsonschema.validate(report, schema("audit-replay"))
    (difference,) = report["differences"]
    assert (difference["asset"], difference["action"]) == ("TSLA", "open")
    assert sorted(difference["fields"], key=lambda f: f["path"]) == [
        {"path": "$.approved", "recorded": True, "replayed": False},
        {"path": "$.blocking_systems", "recorded": [], "replayed": ["whipsaw_protection"]},
        {"path": "$.decision", "recorded": "approve", "replayed": "deny"},
    ]
    text = run("audit", "replay", "--audit", str(log), "--policy", str(DEFAULT_PATH))
    assert '  $.decision: recorded "approve", replayed "deny"' in text.output


def test_a_changed_state_snapshot_changes_the_replayed_decision(tmp_path):
    log = write_log(tmp_path, "audit.jsonl")

    def forget_the_events(record):
        if record.get("decision_record", {}).get("blocking_systems") == ["whipsaw_protection"]:
            record["state"] = {}
        return record

    edit_records(log, forget_the_events)
    report = json.loads(run("audit", "replay", "--audit", str(log), "--policy", str(DEFAULT_PATH), "--format", "json").output)
    assert report["differ"] == 1
    assert {"path": "$.decision", "recorded": "deny", "replayed": "approve"} in report["differences"][0]["fields"]


def test_a_snapshot_that_is_no_state_is_a_difference_never_a_pass(tmp_path):
    log = write_log(tmp_path, "audit.jsonl")

    def break_snapshot(record):
        if record.get("decision_record", {}).get("blocking_systems") == ["whipsaw_protection"]:
            record["state"] = {"events": [{"type": "open", "at": "not a time"}]}
        return record

    edit_records(log, break_snapshot)
    report = json.loads(run("audit", "replay", "--audit", str(log), "--policy", str(DEFAULT_PATH), "--format", "json").output)
    (difference,) = report["differences"]
    assert {"path": "$.blocking_systems", "recorded": ["whipsaw_protection"], "replayed": ["error"]} in difference["fields"]


def test_records_under_a_policy_not_given_are_counted_as_skipped(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(DEFAULT_PATH.read_text().replace("min_days: 3", "min_days: 4"))
    log = tmp_path / "audit.jsonl"
    with open_audit(log) as sink:
        Engine.from_policy(DEFAULT_PATH, audit=sink).evaluate({"asset": "AAPL", "action": "open", "current_date": NOW})
        engine = Engine.from_policy(other, audit=sink)
        engine.evaluate_many([{"asset": "AAPL", "action": "open", "current_date": NOW}] * 2)
    result = run("audit", "replay", "--audit", str(log), "--policy", str(DEFAULT_PATH))
    assert result.exit_code == 0
    assert "3 decision record(s), 1 replayed, 0 differ; skipped: 2 policy-not-given" in result.output
    assert f"  policy not given: sha256 {engine.policy.sha256} (2 record(s))" in result.output
    both = run("audit", "replay", "--audit", str(log), "--policy", str(DEFAULT_PATH), "--policy", str(other))
    assert "3 decision record(s), 3 replayed, 0 differ; skipped: none" in both.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--audit", "{tmp}/nope.sqlite", "--policy", str(DEFAULT_PATH)], "nope.sqlite: no such file"),
        (["--audit", "{log}", "--policy", "{tmp}/nope.yaml"], "nope.yaml: no such file"),
        (["--audit", "{log}"], "Missing option '--policy'"),
    ],
)
def test_usage_errors_are_exit_2(tmp_path, args, message):
    log = tmp_path / "audit.jsonl"
    with open_audit(log) as sink:
        Engine.from_policy(DEFAULT_PATH, audit=sink).evaluate({"asset": "AAPL", "action": "open", "current_date": NOW})
    result = run("audit", "replay", *[a.format(tmp=tmp_path, log=log) for a in args])
    assert result.exit_code == 2
    assert message in result.output
