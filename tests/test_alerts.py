"""Alerts (README, "Operations"): raised after a batch's decisions are final, logged on
`protection_rules.alerts` and handed to the caller's callbacks, edge-triggered, with thresholds
from the policy's `alerts` block; a callback that raises changes no decision."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from spec_helpers import DEFAULT_POLICY
from test_health import POLICY_SHA
from test_metrics import SCENARIOS, BrokenForOneAsset, SwitchableSink, requests

from protection_rules import Engine
from protection_rules.alerts import Alert
from protection_rules.audit import open_audit


def policy_with_alerts(tmp_path: Path, block: str) -> Path:
    target = tmp_path / "alerting.yaml"
    target.write_text(DEFAULT_POLICY.read_text(encoding="utf-8") + f"\nalerts:\n{block}", encoding="utf-8")
    return target


@pytest.fixture()
def sink(tmp_path: Path):
    with open_audit(tmp_path / "audit.sqlite") as inner:
        yield SwitchableSink(inner)


def kinds(alerts: list[Alert]) -> list[str]:
    return [alert.kind for alert in alerts]


def test_an_audit_failure_alerts_once_until_an_append_succeeds(sink: SwitchableSink, caplog) -> None:
    engine = Engine.from_policy(audit=sink)
    seen: list[Alert] = []
    engine.on_alert(seen.append)
    open_request = requests("open")[0]
    sink.failing = True
    with caplog.at_level(logging.WARNING, logger="protection_rules.alerts"):
        engine.evaluate(open_request)
        engine.evaluate_many([open_request] * 3)  # still failing: the same condition, no new alert
    # each refused decision is also an error: the error rate (100%) alerts on its own
    assert kinds(seen) == ["audit_failure", "error_rate"]
    assert seen[0].details["decisions"] == 1 and "the disk is full" in seen[0].message
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("protection_rules.alerts", logging.ERROR, seen[0].message),
        ("protection_rules.alerts", logging.WARNING, seen[1].message),
    ]
    sink.failing = False
    engine.evaluate(open_request)  # recorded: re-armed
    sink.failing = True
    engine.evaluate(open_request)
    assert kinds(seen) == ["audit_failure", "error_rate", "audit_failure"]


def test_the_error_rate_alert_fires_when_the_rate_rises_above_the_threshold(tmp_path: Path) -> None:
    # window 10, threshold 20%: the rate is errors among the last (up to) 10 decisions
    policy = policy_with_alerts(tmp_path, "  error_rate: 0.2\n  window: 10\n")
    engine = Engine.from_policy(policy, state=BrokenForOneAsset(), audit=None)
    seen: list[Alert] = []
    engine.on_alert(seen.append)
    engine.evaluate(requests("broken")[0])  # 1 of 1: 100% > 20%: fires
    assert kinds(seen) == ["error_rate"]
    assert seen[0].details | {"last_error": None} == {
        "error_rate": 1.0,
        "errors": 1,
        "decisions": 1,
        "threshold": 0.2,
        "last_error": None,
    }
    assert seen[0].details["last_error"]["code"] == "state-error"
    engine.evaluate_many(requests("broken", "open"))  # 2 of 3: still above: no new alert
    assert len(seen) == 1
    engine.evaluate_many(requests(*["open"] * 7))  # 2 of the last 10: 20% is not above: re-armed
    assert len(seen) == 1
    engine.evaluate_many(requests(*["broken"] * 3))  # decisions 4..13 hold 3 errors (11, 12, 13): 30%
    assert kinds(seen) == ["error_rate", "error_rate"]
    assert seen[1].details["errors"] == 3 and seen[1].details["decisions"] == 10


def test_invalid_requests_raise_no_error_rate_alert() -> None:
    engine = Engine.from_policy(audit=None)
    seen: list[Alert] = []
    engine.on_alert(seen.append)
    engine.evaluate_many(requests("invalid", "invalid", "open"))
    assert seen == []


@pytest.mark.parametrize(
    ("batches", "fired"),
    [
        # 11 of 20 denied by holding_period: 55% > 50%
        ([["held"] * 11 + ["open"] * 9], ["holding_period"]),
        # exactly half is not above the share
        ([["held"] * 10 + ["open"] * 10], []),
        # a batch under min_batch never alerts, even all denied
        ([["held"] * 19], []),
        # the same condition twice: one alert; a batch back under the share re-arms it
        ([["held"] * 20, ["held"] * 20, ["open"] * 20, ["held"] * 20], ["holding_period", "holding_period"]),
        # a small batch in between changes nothing
        ([["held"] * 20, ["open"] * 3, ["held"] * 20], ["holding_period"]),
        # both protections above the share of one batch: one alert each, in name order
        ([["failing_held"] * 15 + ["open"] * 5], ["grace_period", "holding_period"]),
        # errors are the error rate's business, not a protection's denial share
        ([["invalid"] * 20], []),
    ],
)
def test_the_denial_share_alert_per_batch(batches, fired) -> None:
    engine = Engine.from_policy(audit=None)
    seen: list[Alert] = []
    engine.on_alert(seen.append)
    for names in batches:
        engine.evaluate_many(requests(*names))
    assert [alert.details["protection"] for alert in seen] == fired
    assert all(alert.kind == "denial_share" for alert in seen)


def test_a_denial_share_alert_says_what_and_how_much() -> None:
    engine = Engine.from_policy(audit=None)
    seen: list[Alert] = []
    engine.on_alert(seen.append)
    engine.evaluate_many(requests(*["held"] * 15, *["open"] * 5))
    (alert,) = seen
    assert alert.message == "`holding_period` denied 15 of the 20 decisions of a batch (75%), above 50%"
    assert alert.details["share"] == 0.75 and alert.details["batch"] == 20
    assert alert.policy == engine.compiled.ref


def test_the_thresholds_come_from_the_policy_in_force(tmp_path: Path) -> None:
    engine = Engine.from_policy(audit=None)
    seen: list[Alert] = []
    engine.on_alert(seen.append)
    engine.evaluate_many(requests("held", "held", "open"))  # default min_batch 20: too small
    assert seen == []
    engine.reload(policy_with_alerts(tmp_path, "  min_batch: 3\n  denial_share: 0.6\n"))
    engine.evaluate_many(requests("held", "held", "open"))  # 2 of 3 (67%) > 60%
    assert [alert.details["threshold"] for alert in seen] == [0.6]


def test_a_callback_that_raises_changes_no_decision_and_is_logged(sink: SwitchableSink, caplog) -> None:
    engine = Engine.from_policy(audit=sink)
    later: list[Alert] = []

    @engine.on_alert
    def explode(alert: Alert) -> None:
        raise RuntimeError("pager service down")

    engine.on_alert(later.append)
    with caplog.at_level(logging.WARNING, logger="protection_rules.alerts"):
        decisions = engine.evaluate_many(requests(*["held"] * 15, *["open"] * 5))  # a denial-share alert
    assert [d.approved for d in decisions] == [False] * 15 + [True] * 5
    assert kinds(later) == ["denial_share"]  # the next callback still ran
    (failed,) = [r for r in caplog.records if r.exc_info]
    assert "alert callback" in failed.getMessage() and "pager service down" in caplog.text
    sink.failing = True
    with caplog.at_level(logging.WARNING, logger="protection_rules.alerts"):
        (denied,) = engine.evaluate_many(requests("open"))
    assert not denied.approved and denied.errors[0].code == "audit-error"
    assert kinds(later) == ["denial_share", "audit_failure", "error_rate"]


def test_alerts_are_logged_without_any_callback(caplog) -> None:
    engine = Engine.from_policy(audit=None)
    with caplog.at_level(logging.WARNING, logger="protection_rules.alerts"):
        engine.evaluate_many(requests(*["held"] * 20))
    assert [(r.name, r.levelno) for r in caplog.records] == [("protection_rules.alerts", logging.WARNING)]
    logged = caplog.records[0].alert
    assert (logged["kind"], logged["policy"]["sha256"], logged["details"]["denied"]) == ("denial_share", POLICY_SHA, 20)


def test_scenarios_used_here_decide_as_the_table_says() -> None:
    engine = Engine.from_policy(state=BrokenForOneAsset(), audit=None)
    for name, (request, approved, overridden, blocking, _) in SCENARIOS.items():
        decision = engine.evaluate(request)
        assert (decision.approved, decision.override_applied) == (approved, overridden), name
        assert decision.blocking_systems == blocking, name
