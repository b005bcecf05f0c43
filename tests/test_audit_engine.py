"""The engine and the CLI on the audit trail: every decision on record, or no approval at all."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from protection_rules import Engine
from protection_rules.audit import open_audit
from protection_rules.cli import cli
from protection_rules.state import MemoryStateStore

ROOT = Path(__file__).resolve().parent.parent
OPEN = {"asset": "AMZN", "action": "open", "current_date": "2026-03-12T09:00:00Z"}
FAILING = {"asset": "INTC", "action": "close", "current_date": "2026-03-12T09:00:00Z", "current_score": 0.4, "current_size": 0.05}
HOLDING = {
    "asset": "AAPL",
    "action": "close",
    "current_date": "2026-03-12T07:00:00Z",
    "position_entry_date": "2026-03-10T09:00:00Z",
}


def stored(path: Path) -> list[dict]:
    with open_audit(path, mode="read") as log:
        return list(log.records())


@pytest.fixture(params=["audit.sqlite", "audit.jsonl"])
def audit_path(request, tmp_path):
    return tmp_path / request.param


def test_every_evaluation_appends_exactly_one_record(audit_path):
    sink = open_audit(audit_path, clock=lambda: 1_773_306_000.0)
    engine = Engine.from_policy(audit=sink)
    decisions = [engine.evaluate(OPEN), engine.evaluate({**OPEN, "action": "sell"}), engine.evaluate(FAILING)]
    sink.close()
    records = stored(audit_path)
    assert [r["decision_id"] for r in records] == [d.decision_id for d in decisions]
    assert [r["decision"] for r in records] == ["approve", "deny", "deny"]
    assert records[1]["decision_record"]["blocking_systems"] == ["error"]
    assert records[0]["recorded_at"] == "2026-03-12T09:00:00Z"  # the injected clock


def test_a_batch_is_one_write_with_one_trace_id(audit_path):
    sink = open_audit(audit_path)
    engine = Engine.from_policy(audit=sink)
    calls = []
    original = sink.append
    sink.append = lambda records: calls.append(len(records)) or original(records)  # type: ignore[method-assign]
    decisions = engine.evaluate_many([OPEN, FAILING, HOLDING])
    sink.close()
    assert calls == [3]
    assert len({d.trace_id for d in decisions}) == 1
    assert [r["decision_id"] for r in stored(audit_path)] == [d.decision_id for d in decisions]


def unwritable(tmp_path: Path) -> Path:
    # works as root too: the audit file's parent folder is a regular file
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    return blocker / "audit.sqlite"


class FailingSink:
    path = "broken.sqlite"

    def append(self, records):
        from protection_rules.errors import AuditError

        raise AuditError("broken.sqlite: database disk image is malformed")

    def close(self):
        return None


def test_an_approval_that_cannot_be_recorded_is_a_deny():
    engine = Engine.from_policy(audit=FailingSink())
    decision = engine.evaluate(OPEN)
    assert not decision.approved
    assert decision.blocking_systems == ("error",)
    assert decision.errors[0].code == "audit-error"
    assert "could not be recorded" in decision.reason


def test_cli_exits_4_when_the_audit_file_is_unwritable(tmp_path):
    result = CliRunner().invoke(
        cli,
        ["evaluate", "--format", "json", "--audit", str(unwritable(tmp_path)), str(ROOT / "examples/requests/plain_open.json")],
    )
    assert result.exit_code == 4
    decision = json.loads(result.output)
    assert decision["approved"] is False and decision["blocking_systems"] == ["error"]
    assert decision["errors"][0]["code"] == "audit-error"


def test_a_record_replays_to_the_same_decision(audit_path):
    store = MemoryStateStore()
    store.record_execution("AAPL", "open", 1_773_133_200_000_000, 0.05)  # 2026-03-10T09:00:00Z
    sink = open_audit(audit_path)
    original = Engine.from_policy(state=store, audit=sink).evaluate(
        {k: v for k, v in HOLDING.items() if k != "position_entry_date"}
    )
    sink.close()
    (record,) = stored(audit_path)
    assert record["state_source"] == "store"
    # replay: the request as received, with the state snapshot that was used, under the same policy
    with Engine.from_policy() as engine:
        replayed = engine.evaluate({**record["request"], "state": record["state"]})
    volatile = {"decision_id", "trace_id", "decision_time_ms", "state_source"}
    assert {k: v for k, v in replayed.to_dict().items() if k not in volatile} == {
        k: v for k, v in record["decision_record"].items() if k not in volatile
    }
    assert record["policy"]["sha256"] == replayed.policy.sha256
    assert original.blocking_systems == ("holding_period",)


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_evaluate_audits_by_default_under_the_state_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    invoke("evaluate", str(ROOT / "examples/requests/plain_open.json"))
    default = tmp_path / "protection-rules" / "audit.sqlite"
    assert [r["asset"] for r in stored(default)] == ["AMZN"]
    invoke("evaluate", "--no-audit", str(ROOT / "examples/requests/plain_open.json"))
    assert len(stored(default)) == 1


def test_cli_state_commit_reevaluate_flow(tmp_path):
    """The issue's 'done when': evaluate with state from the store, commit, re-evaluate."""
    env = {"PROTECT_STATE": str(tmp_path / "state.sqlite"), "PROTECT_AUDIT": str(tmp_path / "audit.sqlite")}
    request = tmp_path / "r.json"
    request.write_text(json.dumps(FAILING))
    assert invoke("state", "record", "open", "INTC", "--at", "2026-03-01T10:00:00Z", env=env).exit_code == 0
    first = invoke("evaluate", "--format", "json", str(request), env=env)
    decision = tmp_path / "d.json"
    decision.write_text(first.output)
    assert json.loads(first.output)["state_source"] == "store"
    assert json.loads(invoke("commit", str(decision), env=env).output)["applied"] is True
    assert json.loads(invoke("commit", str(decision), env=env).output)["applied"] is False
    later = invoke("evaluate", "--now", "2026-03-14T09:00:00Z", str(request), env=env)
    assert "state: read from the state store" in later.output
    assert "in grace for 2d of 5 days" in later.output and "allowed from 2026-03-17T09:00:00Z" in later.output
    verify = invoke("audit", "verify", env=env)
    assert verify.exit_code == 0


def test_audit_verify_names_a_record_changed_with_sqlite(tmp_path):
    path = tmp_path / "audit.sqlite"
    for example in ("plain_open", "holding_close", "grace_close"):
        invoke("evaluate", "--audit", str(path), str(ROOT / f"examples/requests/{example}.json"))
    assert invoke("audit", "verify", "--audit", str(path)).exit_code == 0
    db = sqlite3.connect(path)
    db.execute("UPDATE audit_records SET body = replace(body, '\"AAPL\"', '\"AAPM\"') WHERE sequence = 2")
    db.commit()
    db.close()
    result = invoke("audit", "verify", "--audit", str(path))
    assert result.exit_code == 1
    assert "record #2" in result.output


def test_the_api_records_by_default_and_audit_none_records_nothing(tmp_path, monkeypatch):
    path = tmp_path / "env-audit.sqlite"
    monkeypatch.setenv("PROTECT_AUDIT", str(path))
    with Engine.from_policy() as engine:
        engine.evaluate(OPEN)
    Engine.from_policy(audit=None).evaluate(OPEN)
    assert [r["asset"] for r in stored(path)] == ["AMZN"]


def test_an_unopenable_default_audit_log_denies_through_the_api(tmp_path, monkeypatch):
    monkeypatch.setenv("PROTECT_AUDIT", str(unwritable(tmp_path)))
    with Engine.from_policy() as engine:
        decision = engine.evaluate(OPEN)
    assert decision.blocking_systems == ("error",) and decision.errors[0].code == "audit-error"


def _evaluate_many_times(path: str, worker: int, count: int) -> None:
    from protection_rules import Engine
    from protection_rules.audit import open_audit

    sink = open_audit(path)
    engine = Engine.from_policy(audit=sink)
    for n in range(count):
        engine.evaluate({**OPEN, "request_id": f"w{worker}-{n}"})
    sink.close()


@pytest.mark.parametrize("name", ["audit.sqlite", "audit.jsonl"])
def test_four_processes_evaluating_at_once_lose_nothing(tmp_path, name):
    import multiprocessing

    path = str(tmp_path / name)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_evaluate_many_times, args=(path, w, 500)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0
    records = stored(Path(path))
    assert len(records) == 2000
    assert {r["request"]["request_id"] for r in records} == {f"w{w}-{n}" for w in range(4) for n in range(500)}
    with open_audit(path, mode="read") as log:
        assert log.verify().ok


def test_an_engine_closes_only_the_audit_log_it_opened(tmp_path, monkeypatch):
    monkeypatch.setenv("PROTECT_AUDIT", str(tmp_path / "default.sqlite"))
    with Engine.from_policy() as engine:
        engine.evaluate(OPEN)
    after = engine.evaluate(OPEN)  # its own log is closed: nothing can be recorded, so no approval
    assert after.blocking_systems == ("error",) and "closed" in after.errors[0].message
    sink = open_audit(tmp_path / "mine.sqlite")
    with Engine.from_policy(audit=sink) as engine:
        engine.evaluate(OPEN)
    assert len(list(sink.records())) == 1  # the caller's sink is still open
    sink.close()
