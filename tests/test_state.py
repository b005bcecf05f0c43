"""The state store contract, run over both backends, and the engine's use of it."""

from __future__ import annotations

import sqlite3

import pytest

from protection_rules import Engine, RequestInvalid, StateError
from protection_rules.designations import CoreLimitError, designate, extend, revoke
from protection_rules.errors import DecisionInvalid
from protection_rules.models import AssetState, GraceState, PositionEvent
from protection_rules.state import MemoryStateStore, SqliteStateStore
from protection_rules.timestamps import parse_instant as at

NOW = "2026-03-12T09:00:00Z"


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    backend = MemoryStateStore() if request.param == "memory" else SqliteStateStore(tmp_path / "state.sqlite")
    yield backend
    backend.close()


@pytest.fixture
def engine(store):
    with Engine.from_policy(state=store) as engine:
        yield engine


def failing_close(**extra):
    return {"asset": "INTC", "action": "close", "current_date": NOW, "current_score": 0.4, "current_size": 0.05, **extra}


def test_empty_store_gives_no_state(store):
    assert store.load("AAPL") is None


def test_evaluate_never_writes_state(engine, store):
    engine.evaluate(failing_close())
    assert store.load("INTC") is None


def test_commit_applies_grace_once(engine, store):
    decision = engine.evaluate(failing_close())
    assert [c.type for c in decision.state_changes] == ["grace_started"]
    assert engine.commit(decision) is True
    assert engine.commit(decision) is False  # same decision id: nothing changes
    assert store.load("INTC") == AssetState(grace=GraceState(at(NOW), 0.05))


def test_reevaluation_reads_the_committed_grace(engine):
    engine.commit(engine.evaluate(failing_close()))
    later = engine.evaluate(failing_close(current_date="2026-03-14T09:00:00Z"))
    assert later.state_source == "store"
    grace = later.trace[2]
    assert grace.status == "block"
    # grace began at the first decision (03-12 09:00), so it ends 5 days later, not 5 days after 03-14
    assert grace.facts["grace_started_at"] == "2026-03-12T09:00:00Z"
    assert later.unblocks_at == at("2026-03-17T09:00:00Z")


def test_recovery_commit_ends_grace(engine, store):
    engine.commit(engine.evaluate(failing_close()))
    recovered = engine.evaluate(failing_close(current_date="2026-03-13T09:00:00Z", current_score=0.7))
    assert [c.type for c in recovered.state_changes] == ["grace_ended"]
    engine.commit(recovered)
    assert store.load("INTC") is None


def test_override_commit_starts_cooldown_in_trace(engine):
    request = {
        "asset": "NVDA",
        "action": "close",
        "current_date": NOW,
        "position_entry_date": "2026-03-11T09:00:00Z",
        "regime": {"changed": True, "severity": "high"},
    }
    first = engine.evaluate(request)
    assert first.override_applied
    engine.commit(first)
    second = engine.evaluate({**request, "current_date": "2026-03-12T10:00:00Z"})
    assert not second.approved
    override = second.trace[1]
    assert override.facts["cooldown_until"] == "2026-04-11T09:00:00Z"  # 30 days after 03-12 09:00
    assert "cooldown" in override.reason


def test_recorded_executions_drive_holding_and_whipsaw(engine):
    engine.record_execution("TSLA", "open", "2026-03-02T14:30:00Z", 0.04)
    engine.record_execution("TSLA", "close", "2026-03-06T15:00:00Z", 0.04)
    reopen = engine.evaluate({"asset": "TSLA", "action": "open", "current_date": NOW})
    assert reopen.blocking_systems == ("whipsaw_protection",)
    assert reopen.unblocks_at == at("2026-03-16T14:30:00Z")
    engine.record_execution("TSLA", "open", "2026-03-11T09:00:00Z")
    close = engine.evaluate({"asset": "TSLA", "action": "close", "current_date": NOW})
    assert close.trace[3].facts["entry_source"] == "open event"
    assert close.blocking_systems == ("holding_period",)


def test_recording_a_close_ends_grace(engine, store):
    engine.commit(engine.evaluate(failing_close()))
    engine.record_execution("INTC", "close", "2026-03-12T10:00:00Z")
    assert store.load("INTC") == AssetState(events=(PositionEvent("close", at("2026-03-12T10:00:00Z")),))


def test_request_state_wins_over_the_store(engine):
    engine.record_execution("TSLA", "open", "2026-03-02T14:30:00Z")
    engine.record_execution("TSLA", "close", "2026-03-06T15:00:00Z")
    decision = engine.evaluate({"asset": "TSLA", "action": "open", "current_date": NOW, "state": {}})
    assert decision.state_source == "request" and decision.approved


def test_stored_instant_after_now_is_a_bad_request(engine):
    engine.record_execution("AAPL", "open", "2026-03-20T00:00:00Z")
    decision = engine.evaluate({"asset": "AAPL", "action": "close", "current_date": NOW})
    assert not decision.approved and decision.blocking_systems == ("error",)
    assert decision.errors[0].code == "timestamp-future"
    assert decision.errors[0].path == "$.state.events[0].at"


@pytest.mark.parametrize(
    ("steps", "error"),
    [
        ([("add", "A"), ("add", "B"), ("add", "C"), ("add", "D")], "already 3 core assets"),
        ([("add", "A"), ("add", "A")], "already core"),
        ([("add", "A"), ("extend", "A"), ("extend", "A"), ("extend", "A")], "extended 2 times"),
        ([("extend", "A")], "not a core asset"),
        ([("revoke", "A")], "not a core asset"),
    ],
)
def test_core_limits(store, steps, error):
    rules = Engine.from_policy(audit=None).policy.protections["core_asset_immunity"]
    when = at(NOW)
    actions = {
        "add": lambda asset: designate(store, rules, asset, when),
        "extend": lambda asset: extend(store, rules, asset, when),
        "revoke": lambda asset: revoke(store, asset),
    }
    for name, asset in steps[:-1]:
        actions[name](asset)
    with pytest.raises(CoreLimitError, match=error):
        actions[steps[-1][0]](steps[-1][1])


def test_core_designation_expires_and_extends(store):
    rules = Engine.from_policy(audit=None).policy.protections["core_asset_immunity"]
    record = designate(store, rules, "MSFT", at("2026-01-01T00:00:00Z"), "anchor")
    assert record.expires_at == at("2026-04-01T00:00:00Z")  # 90 days
    assert extend(store, rules, "MSFT", at("2026-03-01T00:00:00Z")).expires_at == at("2026-06-30T00:00:00Z")
    # an expired designation frees its slot: a new one may start
    assert designate(store, rules, "MSFT", at("2026-07-01T00:00:00Z")).extensions == 0


def test_core_from_store_blocks_close(engine, store):
    rules = engine.policy.protections["core_asset_immunity"]
    designate(store, rules, "MSFT", at("2026-03-01T00:00:00Z"))
    decision = engine.evaluate({"asset": "MSFT", "action": "close", "current_date": NOW})
    assert decision.blocking_systems == ("core_asset_immunity",)
    assert decision.unblocks_at == at("2026-05-30T00:00:00Z")


def test_commit_rejects_a_decision_that_does_not_validate(engine):
    with pytest.raises(DecisionInvalid):
        engine.commit({"approved": True})


def test_commit_without_store_is_a_state_error():
    with pytest.raises(StateError, match="no state store"):
        with Engine.from_policy() as engine:
            engine.commit(engine.evaluate(failing_close()))


def _foreign_database(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE orders (id INTEGER)")
    db.commit()
    db.close()


@pytest.mark.parametrize(
    "prepare",
    [
        lambda path: path.write_text("not a database, just text\n" * 100),
        lambda path: _foreign_database(path),
    ],
    ids=["text-file", "foreign-sqlite"],
)
def test_a_file_that_is_not_a_state_store_is_refused(tmp_path, prepare):
    path = tmp_path / "state.sqlite"
    prepare(path)
    before = path.read_bytes()
    with pytest.raises(StateError, match=str(path)):
        SqliteStateStore(path)
    assert path.read_bytes() == before  # nothing already stored is lost


def test_newer_schema_version_is_refused(tmp_path):
    path = tmp_path / "state.sqlite"
    SqliteStateStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="schema version 99"):
        SqliteStateStore(path)


def test_store_failure_during_evaluate_is_a_deny(tmp_path):
    store = SqliteStateStore(tmp_path / "state.sqlite")
    with Engine.from_policy(state=store) as engine:
        store.close()  # the connection is gone: every read fails
        decision = engine.evaluate(failing_close())
    assert not decision.approved and decision.blocking_systems == ("error",)
    assert decision.errors[0].code == "state-error"


@pytest.mark.parametrize(
    ("asset", "size", "code"),
    [
        ("AA PL", 0.05, "asset-invalid"),
        ("AAPL\n", None, "asset-invalid"),
        ("", None, "asset-invalid"),
        ("AAPL", float("nan"), "size-invalid"),
        ("AAPL", float("inf"), "size-invalid"),
        ("AAPL", -5.0, "size-invalid"),
        ("AAPL", True, "size-invalid"),
    ],
)
def test_bad_executions_are_refused_and_nothing_is_stored(store, asset, size, code):
    with pytest.raises(RequestInvalid) as caught:
        store.record_execution(asset, "open", at(NOW), size)
    assert caught.value.issues[0].code == code
    assert store.load("AAPL") is None and store.load(asset) is None


def test_a_core_designation_needs_a_valid_asset(store):
    rules = Engine.from_policy(audit=None).policy.protections["core_asset_immunity"]
    with pytest.raises(RequestInvalid):
        designate(store, rules, "x y", at(NOW))
    assert store.cores() == []


def test_cli_refuses_a_bad_execution_with_exit_3(tmp_path):
    from click.testing import CliRunner

    from protection_rules.cli import cli

    path = tmp_path / "state.sqlite"
    result = CliRunner().invoke(cli, ["state", "record", "open", "AA PL", "--size", "nan", "--state", str(path)])
    assert result.exit_code == 3
    assert "not a valid asset symbol" in result.output and "not a size" in result.output
    store = SqliteStateStore(path)
    assert store.load("AA PL") is None
    store.close()
