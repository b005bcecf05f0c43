"""`Engine.reload(path)` (README, "Operations"): a policy goes in force atomically only once it
validates, compiles and has its rule network; a call that decides takes the policy in force
once, so each of its decisions is made wholly under one policy."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from spec_helpers import DEFAULT_POLICY, comparable

from protection_rules import Engine, PolicyInvalid
from protection_rules.errors import UsageError
from protection_rules.state import MemoryStateStore

NOW = "2026-03-20T12:00:00Z"
# held 2 days: denied by holding_period under min_days 3, approved under min_days 1
HELD_TWO_DAYS = {"asset": "AAPL", "action": "close", "current_date": NOW, "position_entry_date": "2026-03-18T12:00:00Z"}


def variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    assert text.count(old) == 1
    target = tmp_path / f"{name}.yaml"
    target.write_text(text.replace(old, new), encoding="utf-8")
    return target


@pytest.fixture()
def loose(tmp_path: Path) -> Path:
    return variant(tmp_path, "loose", "min_days: 3", "min_days: 1")


def test_a_valid_policy_goes_in_force(loose: Path) -> None:
    engine = Engine.from_policy(audit=None)
    old_sha = engine.policy.sha256
    assert engine.evaluate(HELD_TWO_DAYS).blocking_systems == ("holding_period",)
    new = engine.reload(loose)
    assert new.sha256 != old_sha and engine.policy.sha256 == new.sha256
    decision = engine.evaluate(HELD_TWO_DAYS)
    assert decision.approved and decision.policy.sha256 == new.sha256
    health = engine.health()
    assert health["policy"]["sha256"] == new.sha256 and health["reloads"] == 1


@pytest.mark.parametrize(
    ("old", "new", "codes"),
    [
        # two schema errors in one file: both reported
        ("min_days: 3", "min_days: -1\n    max_dayz: 90", {"schema-range", "schema-unknown-field"}),
        ("max_cycles: 1", "max_cycles: [", {"yaml-syntax"}),
        ("max_days: 90", "max_days: 2", {"range-order"}),
    ],
)
def test_an_invalid_policy_leaves_the_one_in_force(tmp_path: Path, old: str, new: str, codes: set[str]) -> None:
    engine = Engine.from_policy(audit=None)
    in_force = engine.policy.sha256
    with pytest.raises(PolicyInvalid) as raised:
        engine.reload(variant(tmp_path, "broken", old, new))
    assert {issue.code for issue in raised.value.issues} >= codes
    assert all(issue.file and issue.file.endswith("broken.yaml") for issue in raised.value.issues)
    assert engine.policy.sha256 == in_force and engine.health()["policy"]["sha256"] == in_force
    assert engine.health()["reloads"] == 0
    assert engine.evaluate(HELD_TWO_DAYS).policy.sha256 == in_force


def test_a_missing_file_is_a_usage_error_and_changes_nothing(tmp_path: Path) -> None:
    engine = Engine.from_policy(audit=None)
    in_force = engine.policy.sha256
    with pytest.raises(UsageError, match=r"absent\.yaml: no such file"):
        engine.reload(tmp_path / "absent.yaml")
    assert engine.policy.sha256 == in_force


def test_reloading_a_policy_seen_before_reuses_its_rule_network(loose: Path) -> None:
    engine = Engine.from_policy(audit=None)
    first = engine._network
    engine.reload(loose)
    assert engine._network is not first
    engine.reload(DEFAULT_POLICY)
    assert engine._network is first  # no new ruleset: the retired one was kept, never freed
    assert len(engine._networks) == 2


class GatedStore(MemoryStateStore):
    """Holds a decision inside the state store until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.gate = threading.Event(), threading.Event()

    def load(self, asset: str):
        if asset == "AAPL":
            self.entered.set()
            assert self.gate.wait(10)
        return super().load(asset)


@pytest.mark.parametrize("call", ["evaluate", "evaluate_many"])
def test_a_call_in_flight_finishes_under_the_policy_it_started_with(loose: Path, call: str) -> None:
    store = GatedStore()
    engine = Engine.from_policy(state=store, audit=None)
    old_sha = engine.policy.sha256
    result: list = []

    def decide() -> None:
        if call == "evaluate":
            result.append(engine.evaluate(HELD_TWO_DAYS))
        else:
            result.extend(engine.evaluate_many([HELD_TWO_DAYS, HELD_TWO_DAYS]))

    worker = threading.Thread(target=decide)
    worker.start()
    assert store.entered.wait(10)
    new_sha = engine.reload(loose).sha256  # while the first decision waits inside the store
    store.gate.set()
    worker.join(10)
    assert result and all(d.policy.sha256 == old_sha for d in result)
    assert all(d.blocking_systems == ("holding_period",) for d in result)  # decided by min_days 3
    assert engine.evaluate(HELD_TWO_DAYS).policy.sha256 == new_sha


def test_every_decision_is_made_wholly_under_one_policy_while_reloads_race(tmp_path: Path) -> None:
    """Threads decide while the main thread swaps two policies back and forth; each decision
    must equal the decision of an engine that only ever had the policy the decision names."""
    loose = variant(tmp_path, "loose", "min_days: 3", "min_days: 1")
    strict_whipsaw = variant(tmp_path, "whipsaw", "period_days: 14", "period_days: 30")
    references = {}
    for path in (loose, strict_whipsaw):
        reference = Engine.from_policy(path, audit=None)
        references[reference.policy.sha256] = reference
    requests = [
        HELD_TWO_DAYS,
        {"asset": "NVDA", "action": "open", "current_date": NOW},
        {
            "asset": "MSFT",
            "action": "open",
            "current_date": NOW,
            "state": {
                "events": [{"type": "open", "at": "2026-02-25T00:00:00Z"}, {"type": "close", "at": "2026-03-01T00:00:00Z"}]
            },
        },
    ]
    engine = Engine.from_policy(loose, audit=None)
    decisions: list = []
    stop = threading.Event()

    def decide() -> None:
        while not stop.is_set():
            decisions.extend(engine.evaluate_many(requests))
            decisions.append(engine.evaluate(requests[0]))

    workers = [threading.Thread(target=decide) for _ in range(3)]
    for worker in workers:
        worker.start()
    for round_ in range(40):
        engine.reload(strict_whipsaw if round_ % 2 == 0 else loose)
    stop.set()
    for worker in workers:
        worker.join(30)
    assert {d.policy.sha256 for d in decisions} == set(references)  # both were in force
    for decision in decisions:
        assert not decision.errors, decision.reason
        reference = references[decision.policy.sha256]
        request = next(r for r in requests if r["asset"] == decision.asset)
        assert comparable(decision) == comparable(reference.evaluate(request))
    assert engine.health()["reloads"] == 40
