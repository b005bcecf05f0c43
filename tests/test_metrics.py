"""`Engine.metrics()`: exact counts of what the engine returned, latency percentiles over a
bounded window, and the error rate over the policy's window (README, "Operations").

Every request below is one of a few scenarios whose decision follows from docs/semantics.md by
hand (default policy, NOW fixed), so the expected counts are sums over a table, never the
engine's own output.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protection_rules import Engine, ProtectionDecision
from protection_rules.alerts import AlertThresholds
from protection_rules.audit import SqliteAuditLog, open_audit
from protection_rules.errors import AuditError, Issue, StateError
from protection_rules.loading import RequestDocument
from protection_rules.metrics import Metrics, nearest_rank
from protection_rules.models import PolicyRef
from protection_rules.state import MemoryStateStore

NOW = "2026-03-20T12:00:00Z"
DAY_BEFORE = "2026-03-19T12:00:00Z"
TWO_DAYS_BEFORE = "2026-03-18T12:00:00Z"

# name: (request, approved, overridden, blocking systems of a denial, kind of error)
SCENARIOS: dict[str, tuple[dict[str, Any], bool, bool, tuple[str, ...], str | None]] = {
    # no state, no events: nothing blocks an open
    "open": ({"asset": "NVDA", "action": "open", "current_date": NOW}, True, False, (), None),
    # held 2 of the 3 minimum days
    "held": (
        {"asset": "AAPL", "action": "close", "current_date": NOW, "position_entry_date": TWO_DAYS_BEFORE},
        False,
        False,
        ("holding_period",),
        None,
    ),
    # score 0.4 < 0.6 starts a 5-day grace now, and held 1 day: both block the close
    "failing_held": (
        {"asset": "INTC", "action": "close", "current_date": NOW, "current_score": 0.4, "position_entry_date": DAY_BEFORE},
        False,
        False,
        ("grace_period", "holding_period"),
        None,
    ),
    # a high regime change a day ago bypasses the holding period
    "override": (
        {
            "asset": "MSFT",
            "action": "close",
            "current_date": NOW,
            "position_entry_date": DAY_BEFORE,
            "regime": {"changed": True, "severity": "high", "change_date": DAY_BEFORE},
        },
        True,
        True,
        (),
        None,
    ),
    "invalid": ({"asset": "AAPL", "action": "opn", "current_date": NOW}, False, False, ("error",), "invalid"),
    # the state store fails for this asset: a state-error deny
    "broken": ({"asset": "BROKEN", "action": "open", "current_date": NOW}, False, False, ("error",), "internal"),
}


class BrokenForOneAsset(MemoryStateStore):
    def load(self, asset: str):
        if asset == "BROKEN":
            raise StateError("state store: the disk went away")
        return super().load(asset)


class SwitchableSink:
    """An audit log that fails while `failing` is set (nothing is written then)."""

    def __init__(self, inner: SqliteAuditLog):
        self.inner, self.path, self.failing = inner, inner.path, False

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        if self.failing:
            raise AuditError(f"{self.path}: cannot write the audit log: the disk is full")
        self.inner.append(records)

    def append_event(self, kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        return self.inner.append_event(kind, fields)

    def find(self, decision_id: str) -> dict[str, Any] | None:
        return self.inner.find(decision_id)

    def close(self) -> None:
        self.inner.close()


def requests(*names: str) -> list[dict[str, Any]]:
    return [SCENARIOS[name][0] for name in names]


def expected(batches: Sequence[tuple[Sequence[str], bool]]) -> dict[str, Any]:
    """The counts a table of (scenario names, audit failing) batches must give, by hand."""
    counts = {"decisions": 0, "approved": 0, "overridden": 0, "errors": 0, "invalid": 0, "audit_failures": 0}
    denials: dict[str, int] = {}
    for names, audit_fails in batches:
        for name in names:
            _, approved, overridden, blocking, error = SCENARIOS[name]
            counts["decisions"] += 1
            if audit_fails:  # whatever was decided, the caller got a deny with an audit error
                counts["errors"] += 1
                counts["audit_failures"] += 1
                denials["error"] = denials.get("error", 0) + 1
                continue
            counts["approved"] += approved
            counts["overridden"] += overridden
            counts["errors"] += error == "internal"
            counts["invalid"] += error == "invalid"
            for system in blocking:
                denials[system] = denials.get(system, 0) + 1
    counts["denied"] = counts["decisions"] - counts["approved"]
    return {**counts, "denials_by_protection": denials}


def counted(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("decisions", "approved", "denied", "overridden", "errors", "invalid", "audit_failures", "denials_by_protection")
    return {key: metrics[key] for key in keys}


@pytest.fixture()
def sink(tmp_path: Path):
    with open_audit(tmp_path / "audit.sqlite") as inner:
        yield SwitchableSink(inner)


def test_metrics_count_exactly_what_was_decided_after_400_evaluations(sink: SwitchableSink) -> None:
    engine = Engine.from_policy(state=BrokenForOneAsset(), audit=sink)
    for _ in range(100):
        engine.evaluate(requests("open")[0])
    engine.evaluate_many(requests(*["held"] * 60, *["failing_held"] * 40))
    engine.evaluate_many(requests(*["override"] * 50, *["invalid"] * 25, *["broken"] * 5))
    unparsed = RequestDocument("batch.jsonl:7", issues=(Issue("json-syntax", "$", "not JSON", "batch.jsonl", 7),), raw="{")
    documents = [RequestDocument(f"batch.jsonl:{n}", data=requests("open")[0]) for n in range(40)] + [unparsed] * 10
    assert len(list(engine.evaluate_documents(documents, chunk_size=16))) == 50
    sink.failing = True
    engine.evaluate_many(requests(*["open"] * 15, *["held"] * 4))
    engine.evaluate(requests("open")[0])
    sink.failing = False
    engine.evaluate_many(requests(*["held"] * 30, *["open"] * 20))

    metrics = engine.metrics()
    assert counted(metrics) == {
        "decisions": 400,
        "approved": 100 + 50 + 40 + 20,
        "denied": 100 + 30 + 10 + 20 + 30,
        "overridden": 50,
        "errors": 5 + 20,  # the state store's failures and the decisions the audit sink refused
        "invalid": 25 + 10,
        "audit_failures": 20,
        "denials_by_protection": {"holding_period": 60 + 40 + 30, "error": 25 + 5 + 10 + 20, "grace_period": 40},
    }
    assert list(metrics["denials_by_protection"]) == ["holding_period", "error", "grace_period"]  # most first
    assert metrics["approval_rate"] == 210 / 400 and metrics["override_rate"] == 50 / 400
    latency = metrics["latency_ms"]
    assert latency["window"] == 400 and 0 < latency["p50"] <= latency["p95"] <= latency["p99"]

    # the audit trail holds every decision but the 20 it refused, and `audit stats` agrees
    stats = sink.inner.stats()
    assert (stats["count"], stats["approved"], stats["overrides"]) == (380, 210, 50)
    assert stats["denials_by_protection"] == {"holding_period": 130, "error": 40, "grace_period": 40}


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(st.sampled_from(sorted(SCENARIOS)), min_size=1, max_size=12), st.booleans()),
        min_size=1,
        max_size=6,
    )
)
def test_metrics_equal_the_hand_count_of_any_sequence_of_batches(tmp_path_factory, batches) -> None:
    with open_audit(tmp_path_factory.mktemp("audit") / "audit.sqlite") as inner:
        sink = SwitchableSink(inner)
        engine = Engine.from_policy(state=BrokenForOneAsset(), audit=sink)
        for names, audit_fails in batches:
            sink.failing = audit_fails
            if len(names) == 1:
                engine.evaluate(requests(*names)[0])
            else:
                engine.evaluate_many(requests(*names))
        assert counted(engine.metrics()) == expected(batches)


@pytest.fixture()
def busy_switching():
    """Switch threads as often as possible, so that counting without the lock loses updates."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def test_metrics_are_exact_when_threads_decide_at_once(busy_switching) -> None:
    engine = Engine.from_policy(state=BrokenForOneAsset(), audit=None)
    names = ["open", "held", "override", "invalid", "broken", "failing_held"] * 20
    workers = [
        threading.Thread(target=lambda: [engine.evaluate(r) for r in requests(*names)]),
        threading.Thread(target=lambda: engine.evaluate_many(requests(*names))),
        threading.Thread(target=lambda: [engine.evaluate_many(requests(n, n)) for n in names]),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert counted(engine.metrics()) == expected([(names, False), (names, False), (names * 2, False)])


def test_a_new_engine_reports_no_rates_and_no_latency() -> None:
    metrics = Engine.from_policy(audit=None).metrics()
    assert metrics["decisions"] == 0 and metrics["denials_by_protection"] == {}
    assert metrics["approval_rate"] is None and metrics["override_rate"] is None
    assert metrics["latency_ms"] == {"p50": None, "p95": None, "p99": None, "window": 0}


# ------------------------------------------------------------------------------ Metrics itself

REF = PolicyRef("default", "1.0.0", "0" * 64)


@pytest.fixture(scope="module")
def approval() -> ProtectionDecision:
    return Engine.from_policy(audit=None).evaluate(SCENARIOS["open"][0])


def timed(decision: ProtectionDecision, *times: float) -> list[ProtectionDecision]:
    return [msgspec.structs.replace(decision, decision_time_ms=t) for t in times]


def test_latency_percentiles_are_nearest_rank_over_the_last_decisions(monkeypatch, approval) -> None:
    monkeypatch.setattr("protection_rules.metrics.LATENCY_WINDOW", 20)
    metrics = Metrics(clock=lambda: 0)
    metrics.observe(timed(approval, *[1000.0] * 5), AlertThresholds(), REF)  # pushed out of the window
    metrics.observe(timed(approval, *range(20, 0, -1)), AlertThresholds(), REF)  # 20, 19, ..., 1 ms
    # of the 20 values 1..20: p50 is the 10th smallest, p95 the 19th, p99 the 20th
    assert metrics.snapshot()["latency_ms"] == {"p50": 10, "p95": 19, "p99": 20, "window": 20}
    assert metrics.snapshot()["decisions"] == 25


@pytest.mark.parametrize(
    ("values", "percent", "rank"),
    [([3.0], 50, 3.0), ([1.0, 2.0], 50, 1.0), ([1.0, 2.0], 51, 2.0), ([1.0, 2.0, 3.0, 4.0], 99, 4.0), ([], 50, None)],
)
def test_nearest_rank(values, percent, rank) -> None:
    assert nearest_rank(values, percent) == rank


def failure(decision: ProtectionDecision, code: str = "engine-failure") -> ProtectionDecision:
    return msgspec.structs.replace(
        decision, approved=False, blocking_systems=("error",), errors=(Issue(code, "$", f"{code} happened"),)
    )


def test_the_error_rate_covers_the_last_window_decisions(approval) -> None:
    metrics, thresholds = Metrics(clock=lambda: 1_773_000_000_000_000), AlertThresholds(window=10)
    metrics.observe([failure(approval), *[approval] * 4], thresholds, REF)  # decision 1 failed
    assert metrics.error_window(10) | {"last_error": None} == {
        "error_rate": 1 / 5,
        "errors": 1,
        "window": 10,
        "decisions": 5,
        "last_error": None,
    }
    metrics.observe([approval] * 5 + [failure(approval, "state-error")], thresholds, REF)  # decision 11 failed
    # the last 10 are decisions 2..11: decision 1 left the window, decision 11 is in it
    window = metrics.error_window(10)
    assert (window["errors"], window["decisions"], window["error_rate"]) == (1, 10, 0.1)
    assert window["last_error"]["code"] == "state-error"
    assert window["last_error"]["at"] == "2026-03-08T20:00:00Z"
    assert metrics.error_window(11)["errors"] == 2  # a wider window (after a reload) still sees both


def test_counting_from_many_threads_loses_nothing(approval, busy_switching) -> None:
    metrics, denial = Metrics(clock=lambda: 0), failure(approval, "state-error")

    def count() -> None:
        for _ in range(5000):
            metrics.observe([approval], AlertThresholds(), REF)
            metrics.observe([denial, approval], AlertThresholds(), REF)

    workers = [threading.Thread(target=count) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    snapshot = metrics.snapshot()
    assert (snapshot["decisions"], snapshot["approved"], snapshot["errors"]) == (90_000, 60_000, 30_000)
    assert snapshot["denials_by_protection"] == {"error": 30_000}


def test_invalid_requests_are_not_errors(approval) -> None:
    metrics = Metrics(clock=lambda: 0)
    metrics.observe([failure(approval, "schema-required")], AlertThresholds(), REF)
    snapshot, window = metrics.snapshot(), metrics.error_window(1000)
    assert (snapshot["errors"], snapshot["invalid"], window["errors"], window["last_error"]) == (0, 1, 0, None)
