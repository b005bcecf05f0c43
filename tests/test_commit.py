"""Committing applies only what the engine decided: the decision is looked up by id where the
engine put it (the audit trail, or its own memory without one) and applied as recorded."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from protection_rules import Engine
from protection_rules.audit import open_audit
from protection_rules.cli import cli
from protection_rules.errors import DecisionInvalid
from protection_rules.models import AssetState, GraceState
from protection_rules.state import MemoryStateStore, SqliteStateStore
from protection_rules.timestamps import parse_instant as at

NOW = "2026-03-12T09:00:00Z"
# score 0.4 < 0.6: a grace period starts now (`grace_started` for INTC at 2026-03-12T09:00:00Z)
FAILING = {"asset": "INTC", "action": "close", "current_date": NOW, "current_score": 0.4, "current_size": 0.05}


def _set(path: list[Any], value: Any) -> Callable[[dict], None]:
    def forge(document: dict) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return forge


# (forgery, the issue's code, the path it names)
FORGERIES = {
    "grace moved to another asset": (_set(["state_changes", 0, "asset"], "AAPL"), "decision-differs", "$.state_changes[0].asset"),
    "invented decision id": (_set(["decision_id"], "0" * 32), "decision-not-recorded", "$.decision_id"),
    "year-2999 instant": (_set(["state_changes", 0, "at"], "2999-01-01T00:00:00Z"), "decision-differs", "$.state_changes[0].at"),
    "negative size": (_set(["state_changes", 0, "original_size"], -5.0), "decision-differs", "$.state_changes[0].original_size"),
    "an invented override": (
        lambda d: d["state_changes"].append(
            {"type": "override_used", "asset": "INTC", "at": NOW, "severity": "critical", "bypassed": ["grace_period"]}
        ),
        "decision-differs",
        "$.state_changes",
    ),
    "approval flipped": (_set(["approved"], True), "decision-differs", "$.approved"),
    "a field added": (
        _set(["errors"], [{"code": "x", "path": "$", "message": "m", "file": None, "line": None, "column": None}]),
        "decision-differs",
        "$.errors",
    ),
}


@pytest.fixture(params=["audit.sqlite", "audit.jsonl", "postgres"])
def audited(request, tmp_path):
    target = request.getfixturevalue("postgres_url") if request.param == "postgres" else tmp_path / request.param
    sink = open_audit(target)
    store = MemoryStateStore()
    yield Engine.from_policy(state=store, audit=sink), store
    sink.close()


@pytest.mark.parametrize("forge, code, path", FORGERIES.values(), ids=FORGERIES.keys())
def test_a_forged_decision_is_refused_and_nothing_is_stored(audited, forge, code, path):
    engine, store = audited
    document = engine.evaluate(FAILING).to_dict()
    forge(document)
    with pytest.raises(DecisionInvalid) as caught:
        engine.commit(document)
    assert (caught.value.issues[0].code, caught.value.issues[0].path) == (code, path)
    assert store.load("INTC") is None and store.load("AAPL") is None


def test_the_real_decision_is_applied_once_as_recorded(audited):
    engine, store = audited
    decision = engine.evaluate(FAILING)
    printed = json.loads(json.dumps({**decision.to_dict(), "line": 3}))  # as `--format json` prints a batch line
    assert engine.commit(printed) is True
    assert engine.commit(decision) is False
    assert store.load("INTC") == AssetState(grace=GraceState(at(NOW), 0.05))


def test_a_decision_of_another_trail_is_not_committed(tmp_path):
    with open_audit(tmp_path / "other.sqlite") as other, open_audit(tmp_path / "audit.sqlite") as mine:
        decision = Engine.from_policy(audit=other).evaluate(FAILING)
        engine = Engine.from_policy(state=MemoryStateStore(), audit=mine)
        with pytest.raises(DecisionInvalid, match="is not in the audit trail"):
            engine.commit(decision)


def test_without_an_audit_trail_the_engine_commits_what_it_issued():
    store = MemoryStateStore()
    engine = Engine.from_policy(state=store, audit=None)
    decision = engine.evaluate(FAILING)
    forged = copy.deepcopy(decision.to_dict())
    forged["state_changes"][0]["asset"] = "AAPL"
    with pytest.raises(DecisionInvalid):
        engine.commit(forged)
    stranger = Engine.from_policy(audit=None).evaluate(FAILING)
    with pytest.raises(DecisionInvalid, match="not in the decisions this engine issued"):
        engine.commit(stranger)
    assert store.load("INTC") is None
    assert engine.commit(decision) is True
    assert store.load("INTC") == AssetState(grace=GraceState(at(NOW), 0.05))


def test_two_uncommitted_grace_starts_committed_in_turn_keep_the_first(audited):
    # both decisions saw no grace in the store, so both start one; the first committed wins
    engine, store = audited
    first = engine.evaluate(FAILING)
    second = engine.evaluate({**FAILING, "current_date": "2026-03-13T09:00:00Z", "current_size": 0.04})
    assert [c.type for c in second.state_changes] == ["grace_started"]
    assert engine.commit(first) and engine.commit(second)
    assert store.load("INTC") == AssetState(grace=GraceState(at(NOW), 0.05))


def _stored(path) -> AssetState | None:
    store = SqliteStateStore(path)
    try:
        return store.load("INTC")
    finally:
        store.close()


def test_cli_commit_refuses_a_forged_decision_with_exit_3(tmp_path):
    env = {"PROTECT_STATE": str(tmp_path / "state.sqlite"), "PROTECT_AUDIT": str(tmp_path / "audit.sqlite")}
    request = tmp_path / "r.json"
    request.write_text(json.dumps(FAILING))
    runner = CliRunner()
    printed = runner.invoke(cli, ["evaluate", "--no-state", "--format", "json", str(request)], env=env).stdout
    real, forged = tmp_path / "real.json", tmp_path / "forged.json"
    real.write_text(printed)
    document = json.loads(printed)
    document["state_changes"][0]["asset"] = "AAPL"
    forged.write_text(json.dumps(document))
    # a batch with one forged decision applies none of them
    both = tmp_path / "both.jsonl"
    both.write_text(json.dumps(json.loads(printed)) + "\n" + json.dumps(document) + "\n")
    for path in (forged, both):
        result = runner.invoke(cli, ["commit", str(path)], env=env)
        assert result.exit_code == 3, result.output
        assert "$.state_changes[0].asset" in result.stderr and "recorded decision" in result.stderr
        assert _stored(tmp_path / "state.sqlite") is None
    result = runner.invoke(cli, ["commit", str(real)], env=env)
    assert (result.exit_code, json.loads(result.output)["applied"]) == (0, True)


def test_a_decision_id_commits_the_recorded_decision_once(audited):
    engine, store = audited
    decision = engine.evaluate(FAILING)
    with pytest.raises(DecisionInvalid) as caught:
        engine.commit("0" * 32)
    assert caught.value.issues[0].code == "decision-not-recorded"
    assert store.load("INTC") is None
    assert engine.commit(decision.decision_id) is True
    assert engine.commit(decision.decision_id) is False
    assert store.load("INTC") == AssetState(grace=GraceState(at(NOW), 0.05))
