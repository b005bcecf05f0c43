"""The state store contract, run over every backend (memory, SQLite, PostgreSQL), and the engine's use of it."""

from __future__ import annotations

import json
import sqlite3

import pytest

from protection_rules import Engine, RequestInvalid, StateError
from protection_rules.designations import CoreLimitError, designate, extend, revoke
from protection_rules.errors import AuditError, DecisionInvalid, InputInvalid
from protection_rules.models import AssetState, GraceState, PositionEvent
from protection_rules.policy import load_policy
from protection_rules.resources import default_policy_path
from protection_rules.state import MemoryStateStore, SqliteStateStore, open_state
from protection_rules.timestamps import parse_instant as at

NOW = "2026-03-12T09:00:00Z"
LATER = at("2026-12-01T00:00:00Z")  # the wall clock of the core designation tests
RULES = load_policy(default_policy_path()).protections["core_asset_immunity"]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "postgres":
        backend = open_state(request.getfixturevalue("postgres_url"))
    else:
        backend = MemoryStateStore() if request.param == "memory" else SqliteStateStore(tmp_path / "state.sqlite")
    yield backend
    backend.close()


@pytest.fixture
def engine(store):
    return Engine.from_policy(state=store, audit=None, clock=lambda: LATER)


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


def test_stored_instant_after_now_is_a_bad_request(engine, store):
    store.record_execution("AAPL", "open", at("2026-03-20T00:00:00Z"), None)  # as an old release could have
    decision = engine.evaluate({"asset": "AAPL", "action": "close", "current_date": NOW})
    assert not decision.approved and decision.blocking_systems == ("error",)
    assert decision.errors[0].code == "timestamp-future"
    assert decision.errors[0].path == "$.state.events[0].at"


@pytest.mark.parametrize(
    ("steps", "error"),
    [
        ([("add", "A"), ("add", "B"), ("add", "C"), ("add", "D")], "3 core assets are already in force"),
        ([("add", "A"), ("add", "A")], "already core"),
        ([("add", "A"), ("extend", "A"), ("extend", "A"), ("extend", "A")], "extended 2 times"),
        ([("extend", "A")], "not a core asset"),
        ([("revoke", "A")], "not a core asset"),
    ],
)
def test_core_limits(store, steps, error):
    when = at(NOW)
    actions = {
        "add": lambda asset: designate(store, RULES, asset, when, now=when),
        "extend": lambda asset: extend(store, RULES, asset, when, now=when),
        "revoke": lambda asset: revoke(store, asset),
    }
    for name, asset in steps[:-1]:
        actions[name](asset)
    with pytest.raises(CoreLimitError, match=error):
        actions[steps[-1][0]](steps[-1][1])


def test_core_designation_expires_and_extends(store):
    record = designate(store, RULES, "MSFT", at("2026-01-01T00:00:00Z"), "anchor", now=LATER)
    assert record.expires_at == at("2026-04-01T00:00:00Z")  # 90 days
    assert extend(store, RULES, "MSFT", at("2026-03-01T00:00:00Z"), now=LATER).expires_at == at("2026-06-30T00:00:00Z")
    # an expired designation frees its slot: a new one may start
    assert designate(store, RULES, "MSFT", at("2026-07-01T00:00:00Z"), now=LATER).extensions == 0


# Three designations from 2026-01-01 (90 days: in force until 2026-04-01T00:00Z, half-open).
ABC = [("add", "A", "2026-01-01T00:00:00Z"), ("add", "B", "2026-01-01T00:00:00Z"), ("add", "C", "2026-01-01T00:00:00Z")]


@pytest.mark.parametrize(
    ("steps", "refused_at"),
    [
        # the issue's case: a fourth backdated to 2025-12-15 would be in force with all three from 01-01
        (ABC + [("add", "D", "2025-12-15T00:00:00Z")], "2026-01-01T00:00:00Z"),
        (ABC + [("add", "D", "2026-03-31T23:59:59Z")], "2026-03-31T23:59:59Z"),
        (ABC + [("add", "D", "2026-04-01T00:00:00Z")], None),  # all three end at 04-01: half-open
        # A, B from 01-01 and C from 02-01; D from 03-01 meets all three at 03-01
        (ABC[:2] + [("add", "C", "2026-02-01T00:00:00Z"), ("add", "D", "2026-03-01T00:00:00Z")], "2026-03-01T00:00:00Z"),
        # an extension counts too: D, E from 04-01, A extended on 03-01 into [04-01, 06-30): 3 in force,
        # allowed; then F from 04-02 would make four
        (
            ABC
            + [
                ("add", "D", "2026-04-01T00:00:00Z"),
                ("add", "E", "2026-04-01T00:00:00Z"),
                ("extend", "A", "2026-03-01T00:00:00Z"),
            ]
            + [("add", "F", "2026-04-02T00:00:00Z")],
            "2026-04-02T00:00:00Z",
        ),
        # ... and an extension itself is refused when it would overlap max_assets others
        (
            ABC
            + [("add", "D", "2026-04-01T00:00:00Z"), ("add", "E", "2026-04-01T00:00:00Z"), ("add", "F", "2026-04-01T00:00:00Z")]
            + [("extend", "A", "2026-03-01T00:00:00Z")],
            "2026-04-01T00:00:00Z",
        ),
    ],
    ids=["backdated", "one-second-before-expiry", "at-expiry", "staggered", "after-an-extension", "the-extension"],
)
def test_max_assets_holds_at_every_instant(store, steps, refused_at):
    run = {
        "add": lambda asset, when: designate(store, RULES, asset, when, now=LATER),
        "extend": lambda asset, when: extend(store, RULES, asset, when, now=LATER),
    }
    for name, asset, when in steps[:-1]:
        run[name](asset, at(when))
    name, asset, when = steps[-1]
    if refused_at is None:
        run[name](asset, at(when))
        return
    before = store.cores()
    with pytest.raises(CoreLimitError, match=f"at {refused_at} 3 core assets are already in force"):
        run[name](asset, at(when))
    assert store.cores() == before


def test_core_from_store_blocks_close(engine, store):
    designate(store, RULES, "MSFT", at("2026-03-01T00:00:00Z"), now=at(NOW))
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
    with pytest.raises(RequestInvalid):
        designate(store, RULES, "x y", at(NOW), now=at(NOW))
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


# ------------------------------------------------------------------ recording and corrections


@pytest.mark.parametrize(
    ("when", "accepted"),
    [
        ("2026-03-12T09:00:00Z", True),
        ("2026-03-12T09:01:00Z", True),  # the 60 s tolerance, inclusive
        ("2026-03-12T09:01:00.000001Z", False),
        ("2999-12-31T00:00:00Z", False),
    ],
)
def test_recording_refuses_instants_after_the_wall_clock(store, when, accepted):
    engine = Engine.from_policy(state=store, audit=None, clock=lambda: at(NOW))
    if accepted:
        engine.record_execution("QQQ", "open", when)
        assert [e.at for e in store.events("QQQ")] == [at(when)]
        return
    with pytest.raises(InputInvalid) as caught:
        engine.record_execution("QQQ", "open", when)
    assert (caught.value.issues[0].code, caught.value.issues[0].path) == ("timestamp-future", "$.at")
    assert store.events("QQQ") == []


def test_executions_recorded_out_of_time_order_load_in_time_order(store):
    store.record_execution("TSLA", "close", at("2026-03-06T15:00:00Z"), 0.04)
    store.record_execution("TSLA", "open", at("2026-03-02T14:30:00Z"), 0.04)
    loaded = store.load("TSLA")
    assert [(e.type, e.at) for e in loaded.events] == [
        ("open", at("2026-03-02T14:30:00Z")),
        ("close", at("2026-03-06T15:00:00Z")),
    ]
    # so the position is flat: a close has no entry date, and a re-open is a whipsaw
    engine = Engine.from_policy(state=store, audit=None)
    assert engine.evaluate({"asset": "TSLA", "action": "close", "current_date": NOW}).trace[3].status == "not_applicable"
    assert engine.evaluate({"asset": "TSLA", "action": "open", "current_date": NOW}).blocking_systems == ("whipsaw_protection",)


def test_a_mistaken_event_is_removed_and_the_correction_audited(store, tmp_path):
    from protection_rules.audit import open_audit
    from protection_rules.recording import Recorder

    store.record_execution("QQQ", "open", at("2026-03-01T00:00:00Z"), None)
    store.record_execution("QQQ", "open", at("2999-12-31T00:00:00Z"), None)  # the mistake, as an old release let it in
    engine = Engine.from_policy(state=store, audit=None)
    poisoned = engine.evaluate({"asset": "QQQ", "action": "close", "current_date": NOW})
    assert poisoned.errors[0].code == "timestamp-future"
    bad = store.events("QQQ")[-1]
    with open_audit(tmp_path / "audit.jsonl") as trail:
        recorder = Recorder(store, audit=trail, clock=lambda: at(NOW))
        removed = recorder.remove_event("QQQ", bad.id, "typed the wrong year", operator="ops")
        (record,) = [r for r in trail.records() if r.get("kind") == "state_correction"]
        assert trail.verify().ok
    assert removed == bad
    assert (record["asset"], record["action"], record["reason"]) == ("QQQ", "event_removed", "typed the wrong year")
    assert record["detail"]["at"] == "2999-12-31T00:00:00Z"
    assert [e.at for e in store.events("QQQ")] == [at("2026-03-01T00:00:00Z")]
    assert engine.evaluate({"asset": "QQQ", "action": "close", "current_date": NOW}).blocking_systems == ()


def test_removing_needs_an_audit_trail_a_reason_and_a_real_event(store, tmp_path):
    from protection_rules.audit import open_audit
    from protection_rules.recording import Recorder

    store.record_execution("QQQ", "open", at("2026-03-01T00:00:00Z"), None)
    (event,) = store.events("QQQ")
    with pytest.raises(AuditError):
        Recorder(store).remove_event("QQQ", event.id, "why")
    with open_audit(tmp_path / "audit.sqlite") as trail:
        recorder = Recorder(store, audit=trail)
        with pytest.raises(InputInvalid, match="no recorded event #999"):
            recorder.remove_event("QQQ", 999, "why")
        with pytest.raises(InputInvalid, match="say why"):
            recorder.remove_event("QQQ", event.id, " ")
        with pytest.raises(InputInvalid, match="no recorded event"):
            recorder.remove_event("AAPL", event.id, "the id of another asset")
        assert list(trail.records()) == []
    assert store.events("QQQ") == [event]


def test_cli_refuses_a_future_record_and_corrects_a_mistake(tmp_path):
    from click.testing import CliRunner

    from protection_rules.cli import cli

    env = {"PROTECT_STATE": str(tmp_path / "state.sqlite"), "PROTECT_AUDIT": str(tmp_path / "audit.sqlite")}
    runner = CliRunner()
    future = runner.invoke(cli, ["state", "record", "open", "QQQ", "--at", "2999-12-31T00:00:00Z"], env=env)
    assert future.exit_code == 3 and "only what already happened can be recorded" in future.stderr
    assert runner.invoke(cli, ["state", "record", "open", "QQQ", "--at", "2026-03-01T00:00:00Z"], env=env).exit_code == 0
    store = SqliteStateStore(tmp_path / "state.sqlite")
    store.record_execution("QQQ", "close", at("2999-12-31T00:00:00Z"), None)  # a mistake from before the check
    store.close()
    listed = [json.loads(line) for line in runner.invoke(cli, ["state", "events", "list", "QQQ"], env=env).output.splitlines()]
    assert [(e["type"], e["at"]) for e in listed] == [("open", "2026-03-01T00:00:00Z"), ("close", "2999-12-31T00:00:00Z")]
    removed = runner.invoke(cli, ["state", "events", "remove", "QQQ", str(listed[1]["id"]), "--reason", "wrong year"], env=env)
    assert removed.exit_code == 0, removed.output
    assert [
        e["type"] for e in map(json.loads, runner.invoke(cli, ["state", "events", "list", "QQQ"], env=env).output.splitlines())
    ] == ["open"]
    query = runner.invoke(cli, ["audit", "query", "--kind", "state_correction", "--format", "jsonl"], env=env)
    (record,) = [json.loads(line) for line in query.stdout.splitlines()]
    assert record["detail"]["at"] == "2999-12-31T00:00:00Z" and record["reason"] == "wrong year"


def test_a_second_override_re_anchors_the_cooldown(engine):
    def close_nvda(now: str, entered: str) -> dict:
        regime = {"changed": True, "severity": "high", "change_date": now}
        return {"asset": "NVDA", "action": "close", "current_date": now, "position_entry_date": entered, "regime": regime}

    # held 1 day of the 3-day minimum each time: only the override lets the close through
    first = engine.evaluate(close_nvda("2026-03-12T09:00:00Z", "2026-03-11T09:00:00Z"))
    assert first.override_applied
    engine.commit(first)
    # 30 days later to the microsecond the cooldown (half-open) is over: a second override
    second = engine.evaluate(close_nvda("2026-04-11T09:00:00Z", "2026-04-10T09:00:00Z"))
    assert second.override_applied
    engine.commit(second)
    third = engine.evaluate(close_nvda("2026-04-12T09:00:00Z", "2026-04-11T09:00:00Z"))
    assert third.blocking_systems == ("holding_period",)
    # counted from the second override (04-11), not the first (which would end on 04-11)
    assert third.trace[1].facts["cooldown_until"] == "2026-05-11T09:00:00Z"
