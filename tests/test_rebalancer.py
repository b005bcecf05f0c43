"""The rebalancer adapter: targets in, approved and denied targets out, fills fed back so the
next rebalance sees what happened (the plan's Phase 3).

Every expected instant below is worked out by hand from the default policy: holding 3 days,
grace 5 days below a score of 0.6, whipsaw 1 cycle in 14 days, override cooldown 30 days."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protection_rules import Engine
from protection_rules.audit import RecordFilter, open_audit
from protection_rules.errors import InputInvalid, Refused, RequestInvalid, StateError, TargetInvalid
from protection_rules.rebalancer import HOLD_BAND, ProtectionAwareRebalancer, RebalancingTarget, derive_action
from protection_rules.state import MemoryStateStore, SqliteStateStore
from protection_rules.timestamps import format_instant
from protection_rules.timestamps import parse_instant as at

LATER = at("2026-12-31T00:00:00Z")  # the engines' wall clock: every fill below is in its past
CRISIS = {
    "changed": True,
    "severity": "critical",
    "old_regime": "bull",
    "new_regime": "crisis",
    "change_date": "2026-03-06T12:00:00Z",
}


def target(asset: str, current: float, wanted: float, score: float = 0.8, **fields) -> RebalancingTarget:
    return RebalancingTarget(asset=asset, current_allocation_pct=current, target_allocation_pct=wanted, score=score, **fields)


class Rig:
    """An engine with a state store (and, in the SQLite rig, an audit trail) and its rebalancer,
    counting the assets each batch sent to the engine."""

    def __init__(self, engine: Engine, audit=None):
        self.engine, self.audit = engine, audit
        self.rebalancer = ProtectionAwareRebalancer(engine)
        self.batches: list[list[str]] = []
        decide = engine.evaluate_many

        def spy(requests, **options):
            requests = list(requests)
            self.batches.append([r["asset"] for r in requests])
            return decide(requests, **options)

        engine.evaluate_many = spy  # type: ignore[method-assign]

    def day(self, when: str, *targets: RebalancingTarget, regime=None):
        return self.rebalancer.validate(targets, when, regime=regime)


@pytest.fixture(params=["memory, no audit", "sqlite, audited"])
def rig(request, tmp_path) -> Iterator[Rig]:
    if request.param == "memory, no audit":
        yield Rig(Engine.from_policy(state=MemoryStateStore(), audit=None, clock=lambda: LATER))
        return
    store, sink = SqliteStateStore(tmp_path / "state.sqlite"), open_audit(tmp_path / "audit.sqlite")
    try:
        yield Rig(Engine.from_policy(state=store, audit=sink, clock=lambda: LATER), sink)
    finally:
        store.close()
        sink.close()


def by_asset(result) -> dict[str, RebalancingTarget]:
    return {t.asset: t for t in (*result.approved, *result.denied)}


# ------------------------------------------------------------------------ the plan's scenarios


def test_a_rebalance_over_several_days_with_fills_fed_back(rig):
    fill = rig.rebalancer.record_fill

    # day 1: three opens, all approved and filled five minutes later
    day1 = rig.day("2026-03-02T15:00:00Z", target("AAPL", 0, 0.05), target("INTC", 0, 0.04, 0.7), target("NVDA", 0, 0.06, 0.9))
    assert [(t.asset, t.action, t.decision.decision) for t in day1.approved] == [
        ("AAPL", "open", "approve"),
        ("INTC", "open", "approve"),
        ("NVDA", "open", "approve"),
    ]
    assert day1.denied == ()
    for t in day1.approved:
        fill(t, "2026-03-02T15:05:00Z")

    # day 2: a close inside the holding period; a failing asset's close; a drift inside the band
    day2 = rig.day(
        "2026-03-03T15:00:00Z",
        target("AAPL", 0.05, 0, 0.75),
        target("INTC", 0.04, 0, 0.4),
        target("NVDA", 0.06, 0.062, 0.9),  # 0.002 <= 5% of 0.06: a hold
    )
    found = by_asset(day2)
    assert found["AAPL"].decision.blocking_systems == ("holding_period",)
    assert format_instant(found["AAPL"].decision.unblocks_at) == "2026-03-05T15:05:00Z"  # entry 03-02T15:05 + 3 days
    assert found["INTC"].decision.blocking_systems == ("grace_period", "holding_period")
    assert format_instant(found["INTC"].decision.unblocks_at) == "2026-03-08T15:00:00Z"  # grace from now, 5 days
    assert (found["NVDA"].action, found["NVDA"].decision) == ("hold", None)
    assert rig.batches[-1] == ["AAPL", "INTC"]  # the hold never reached the engine
    summary = day2.summary
    assert (summary.targets, summary.evaluated, summary.approved, summary.denied, summary.holds) == (3, 2, 1, 2, 1)
    assert summary.approval_rate == pytest.approx(1 / 3)
    assert dict(summary.denials_by_protection) == {"holding_period": 2, "grace_period": 1}
    with pytest.raises(Refused, match="denied by holding_period: a denied target cannot be filled"):
        fill(found["AAPL"], "2026-03-03T15:05:00Z")
    with pytest.raises(Refused, match="is a hold"):
        fill(found["NVDA"], "2026-03-03T15:05:00Z")

    # day 4: the holding period is over for AAPL; INTC is still in the grace period started on
    # day 2 (committed with its denial): it unblocks when that grace ends, not 5 days from now
    day4 = by_asset(rig.day("2026-03-05T16:00:00Z", target("AAPL", 0.05, 0, 0.75), target("INTC", 0.04, 0, 0.4)))
    assert day4["AAPL"].decision.approved
    assert day4["INTC"].decision.blocking_systems == ("grace_period",)
    assert format_instant(day4["INTC"].decision.unblocks_at) == "2026-03-08T15:00:00Z"
    fill(day4["AAPL"], "2026-03-05T16:05:00Z")

    # day 5: re-opening AAPL after its round trip is whipsawing; under a critical regime change
    # the same re-open is approved with an override
    reopen = target("AAPL", 0, 0.05, 0.85)
    (denied,) = rig.day("2026-03-06T15:00:00Z", reopen).denied
    assert denied.decision.blocking_systems == ("whipsaw_protection",)
    assert format_instant(denied.decision.unblocks_at) == "2026-03-16T15:05:00Z"  # the open leaves the 14-day window
    crisis = rig.day("2026-03-06T15:00:00Z", reopen, regime=CRISIS)
    (approved,) = crisis.approved
    assert approved.decision.override_applied
    assert {e.system: e.status for e in approved.decision.trace}["whipsaw_protection"] == "overridden"
    assert crisis.summary.overridden == 1
    fill(approved, "2026-03-06T15:05:00Z")

    # day 6: INTC's grace is over: its close is allowed. AAPL, failing and held for less than
    # 3 days, could be overridden by the crisis, but the override committed on day 5 cools down
    day6 = by_asset(rig.day("2026-03-09T15:00:00Z", target("INTC", 0.04, 0, 0.4), target("AAPL", 0.05, 0, 0.3), regime=CRISIS))
    assert day6["INTC"].decision.approved and not day6["INTC"].decision.override_applied
    assert day6["AAPL"].decision.blocking_systems == ("grace_period", "holding_period")
    assert "cooldown" in {e.system: e.reason for e in day6["AAPL"].decision.trace}["regime_override"]
    fill(day6["INTC"], "2026-03-09T15:05:00Z")

    assert rig.rebalancer.positions == {"NVDA": 0.06, "AAPL": 0.05}
    store = rig.engine.state
    assert [(e.type, format_instant(e.at)) for e in store.events("AAPL")] == [
        ("open", "2026-03-02T15:05:00Z"),
        ("close", "2026-03-05T16:05:00Z"),
        ("open", "2026-03-06T15:05:00Z"),
    ]
    assert format_instant(store.load("AAPL").last_override_at) == "2026-03-06T15:00:00Z"
    assert store.load("INTC").grace is None  # ended by the close


def test_a_batch_is_one_trace_and_one_audit_write(tmp_path):
    with open_audit(tmp_path / "audit.sqlite") as sink:
        appends = []
        append = sink.append
        sink.append = lambda records: appends.append(len(records)) or append(records)  # type: ignore[method-assign]
        engine = Engine.from_policy(state=MemoryStateStore(), audit=sink, clock=lambda: LATER)
        result = ProtectionAwareRebalancer(engine).validate(
            [target("AAPL", 0, 0.05), target("MSFT", 0.03, 0.03), target("NVDA", 0, 0.02), target("TSLA", 0.04, 0.06)],
            datetime(2026, 3, 2, 16, tzinfo=timezone(timedelta(hours=1))),
        )
        records = list(sink.query(RecordFilter(kind="decision")))
    assert appends == [3]
    assert {r["trace_id"] for r in records} == {result.trace_id}
    assert sorted(r["asset"] for r in records) == ["AAPL", "NVDA", "TSLA"]
    assert {r["evaluated_at"] for r in records} == {"2026-03-02T15:00:00Z"}


def test_a_target_becomes_the_plans_request(tmp_path):
    with open_audit(tmp_path / "audit.sqlite") as sink:
        engine = Engine.from_policy(state=MemoryStateStore(), audit=sink)
        given_ = RebalancingTarget(
            asset="NVDA",
            action="open",
            current_allocation_pct=0.0,
            target_allocation_pct=0.05,
            score=0.8,
            priority="trending",
            reason="momentum",
            metadata={"model": "m1", "priority": "ignored"},
        )
        ProtectionAwareRebalancer(engine).validate([given_], "2026-03-02T15:00:00Z", regime={"changed": False})
        (record,) = sink.query(RecordFilter(kind="decision"))
    assert record["request"] == {
        "asset": "NVDA",
        "action": "open",
        "current_date": "2026-03-02T15:00:00Z",
        "current_size": 0.0,
        "target_size": 0.05,
        "current_score": 0.8,
        "reason": "momentum",
        "metadata": {"model": "m1", "priority": "trending", "rebalancing_context": True},
        "regime": {"changed": False},
    }


def test_every_target_a_hold_decides_nothing():
    engine = Engine.from_policy(state=MemoryStateStore(), audit=None)
    result = ProtectionAwareRebalancer(engine).validate([target("A", 0, 0), target("B", 0.1, 0.1)], "2026-03-02")
    assert [t.decision for t in result.approved] == [None, None]
    assert (result.trace_id, result.exit_code, result.summary.approval_rate) == (None, 0, 1.0)
    empty = ProtectionAwareRebalancer(engine).validate([], "2026-03-02")
    assert (empty.approved, empty.denied, empty.trace_id, empty.summary.approval_rate) == ((), (), None, 0.0)


# ------------------------------------------------------------------------------- actions


@pytest.mark.parametrize(
    ("current", "wanted", "band", "expected"),
    [
        (0, 0.05, HOLD_BAND, "open"),
        (0, 0, HOLD_BAND, "hold"),
        (0.04, 0, HOLD_BAND, "close"),
        (0.04, 0.05, HOLD_BAND, "increase"),
        (0.04, 0.03, HOLD_BAND, "decrease"),
        (0.04, 0.0395, HOLD_BAND, "hold"),
        (0.04, 0.0405, HOLD_BAND, "hold"),
        # the band is relative and inclusive: 0.5 +/- 0.0625 * 0.5 (exact in binary)
        (0.5, 0.53125, 0.0625, "hold"),
        (0.5, 0.46875, 0.0625, "hold"),
        (0.5, 0.5313, 0.0625, "increase"),
        (0.5, 0.4687, 0.0625, "decrease"),
        (0.04, 0.0401, 0, "increase"),
        (0.04, 0.04, 0, "hold"),
        (1, 0.05, 0.99, "hold"),
    ],
)
def test_an_action_left_out_is_derived_from_the_allocations(current, wanted, band, expected):
    assert derive_action(current, wanted, band) == expected
    engine = Engine.from_policy(state=MemoryStateStore(), audit=None)
    (resolved,) = [
        *(r := ProtectionAwareRebalancer(engine, hold_band=band).validate([target("X", current, wanted)], "2026-03-02")).approved,
        *r.denied,
    ]
    assert resolved.action == expected


allocations = st.floats(min_value=0, max_value=1) | st.sampled_from([0.0, 1.0])


@given(current=allocations, wanted=allocations, band=st.floats(min_value=0, max_value=0.999))
def test_a_derived_action_always_agrees_with_the_allocations(current, wanted, band):
    action = derive_action(current, wanted, band)
    assert (
        RebalancingTarget(asset="X", action=action, current_allocation_pct=current, target_allocation_pct=wanted).action == action
    )
    if current != wanted and action == "hold":
        assert current > 0 and abs(wanted - current) <= band * current


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("fields", "code", "path", "message"),
    [
        (
            {"action": "close"},
            "action-mismatch",
            "$.action",
            "target `X`: `close` needs a current allocation above 0 and a target of 0",
        ),
        (
            {"action": "open", "current_allocation_pct": 0.02, "target_allocation_pct": 0.05},
            "action-mismatch",
            "$.action",
            "`open` needs",
        ),
        (
            {"action": "increase", "current_allocation_pct": 0.05, "target_allocation_pct": 0},
            "action-mismatch",
            "$.action",
            "`increase`",
        ),
        (
            {"action": "decrease", "current_allocation_pct": 0.05, "target_allocation_pct": 0.06},
            "action-mismatch",
            "$.action",
            "`decrease`",
        ),
        ({"action": "buy"}, "schema-enum", "$.action", '`"buy"` is not one of'),
        ({"current_allocation_pct": math.nan}, "number-not-finite", "$.current_allocation_pct", "must be a finite number"),
        ({"target_allocation_pct": math.inf}, "schema-range", "$.target_allocation_pct", "must be <= 1"),
        (
            {"target_allocation_pct": 5},
            "schema-range",
            "$.target_allocation_pct",
            "target `X`: `target_allocation_pct` must be <= 1, got `5`",
        ),
        ({"current_allocation_pct": -0.1}, "schema-range", "$.current_allocation_pct", "must be >= 0"),
        ({"current_allocation_pct": True}, "schema-type", "$.current_allocation_pct", "must be of type number"),
        ({"target_allocation_pct": "0.05"}, "schema-type", "$.target_allocation_pct", "must be of type number"),
        ({"score": 10**400}, "number-not-finite", "$.score", "must be a finite number"),
        ({"score": math.nan}, "number-not-finite", "$.score", "got `nan`"),
        ({"priority": "urgent"}, "schema-enum", "$.priority", '`"urgent"` is not one of'),
        ({"asset": "X Y"}, "schema-pattern", "$.asset", "is not a valid `asset`"),
        ({"metadata": {"at": datetime(2026, 1, 1)}}, "value-not-json", "$.metadata", "`metadata` must be plain JSON"),
        ({"reason": "half \ud800"}, "value-not-json", "$.reason", "`reason` must be plain JSON"),
    ],
)
def test_a_bad_target_is_an_error_naming_it_and_the_field(fields, code, path, message):
    with pytest.raises(TargetInvalid) as raised:
        RebalancingTarget(**{"asset": "X", **fields})
    assert [(i.code, i.path) for i in raised.value.issues] == [(code, path)]
    assert message in raised.value.issues[0].message
    assert raised.value.exit_code == 3


@pytest.mark.parametrize(
    ("document", "code", "path"),
    [
        (
            {"asset": "X", "current_allocation_pct": 0, "target_allocation_pct": 0.1, "side": "buy"},
            "schema-unknown-field",
            "$.side",
        ),
        ({"asset": "X", "target_allocation_pct": 0.1}, "schema-required", "$.current_allocation_pct"),
        (["X", 0, 0.1], "schema-type", "$"),
    ],
)
def test_a_target_document_is_checked_before_it_is_built(document, code, path):
    with pytest.raises(TargetInvalid) as raised:
        RebalancingTarget.from_dict(document)
    assert [(i.code, i.path) for i in raised.value.issues] == [(code, path)]


@pytest.fixture
def rebalancer() -> ProtectionAwareRebalancer:
    return ProtectionAwareRebalancer(Engine.from_policy(state=MemoryStateStore(), audit=None, clock=lambda: LATER))


@pytest.mark.parametrize(
    ("targets", "date", "regime", "error", "path"),
    [
        ([target("A", 0, 0.1), {"asset": "B"}], "2026-03-02", None, TargetInvalid, "$[1]"),
        ([target("A", 0, 0.1), target("B", 0, 0.1), target("A", 0, 0.2)], "2026-03-02", None, TargetInvalid, "$[2].asset"),
        ([target("A", 0, 0.1)], datetime(2026, 3, 2), None, RequestInvalid, "$.current_date"),
        ([target("A", 0, 0.1)], "2026-02-30", None, RequestInvalid, "$.current_date"),
        ([target("A", 0, 0.1)], "2026-03-02", {"changed": True, "severity": "extreme"}, RequestInvalid, "$.regime.severity"),
        (
            [target("A", 0, 0.1)],
            "2026-03-02",
            {"changed": True, "change_date": "2026-03-03"},
            RequestInvalid,
            "$.regime.change_date",
        ),
        ([target("A", 0, 0.1)], "2026-03-02", ["changed"], RequestInvalid, "$.regime"),
    ],
)
def test_bad_input_to_validate_decides_nothing(rebalancer, targets, date, regime, error, path):
    decided = []
    rebalancer.engine.evaluate_many = lambda requests, **_: decided.append(requests)  # type: ignore[method-assign]
    with pytest.raises(error) as raised:
        rebalancer.validate(targets, date, regime=regime)
    assert path in [issue.path for issue in raised.value.issues]
    assert decided == []


def test_the_rebalancer_needs_a_state_store():
    with pytest.raises(StateError, match="needs an engine with a state store"):
        ProtectionAwareRebalancer(Engine.from_policy(audit=None))


@pytest.mark.parametrize("band", [-0.1, 1, 1.5, math.nan, True, "0.05"])
def test_the_hold_band_is_a_share_below_one(band):
    with pytest.raises(InputInvalid, match="hold_band"):
        ProtectionAwareRebalancer(Engine.from_policy(state=MemoryStateStore(), audit=None), hold_band=band)


# ------------------------------------------------------------------------------- fills


def approved_open(rebalancer: ProtectionAwareRebalancer, asset: str = "NVDA") -> RebalancingTarget:
    (approved,) = rebalancer.validate([target(asset, 0, 0.05)], "2026-03-02T15:00:00Z").approved
    return approved


@pytest.mark.parametrize(
    ("at_", "size", "code"),
    [
        ("2026-03-02T14:59:59Z", None, "fill-before-decision"),
        (datetime(2026, 3, 2, 16), None, "timestamp-invalid"),
        ("yesterday", None, "timestamp-invalid"),
        ("2026-03-02T15:05:00Z", 0, "size-invalid"),
        ("2026-03-02T15:05:00Z", -0.05, "size-invalid"),
        ("2026-03-02T15:05:00Z", math.nan, "size-invalid"),
        ("2026-03-02T15:05:00Z", True, "size-invalid"),
    ],
)
def test_a_bad_fill_is_refused_and_can_be_given_again(rebalancer, at_, size, code):
    approved = approved_open(rebalancer)
    with pytest.raises(InputInvalid) as raised:
        rebalancer.record_fill(approved, at_, size)
    assert [i.code for i in raised.value.issues] == [code]
    assert rebalancer.engine.state.load("NVDA") is None
    rebalancer.record_fill(approved, "2026-03-02T15:05:00Z")
    assert len(rebalancer.engine.state.events("NVDA")) == 1


def test_a_fill_the_store_refuses_can_be_given_again():
    engine = Engine.from_policy(state=MemoryStateStore(), audit=None, clock=lambda: at("2026-03-02T15:10:00Z"))
    rebalancer = ProtectionAwareRebalancer(engine)
    approved = approved_open(rebalancer)
    with pytest.raises(InputInvalid) as raised:
        rebalancer.record_fill(approved, "2026-03-02T16:00:00Z")  # later than the clock allows
    assert [i.code for i in raised.value.issues] == ["timestamp-future"]
    rebalancer.record_fill(approved, "2026-03-02T15:05:00Z")
    assert rebalancer.positions == {"NVDA": 0.05}


def test_an_approval_is_filled_once_and_only_as_approved(rebalancer):
    import dataclasses

    approved = approved_open(rebalancer)
    with pytest.raises(Refused, match="is not an approval this rebalancer is waiting to fill"):
        rebalancer.record_fill(dataclasses.replace(approved, target_allocation_pct=0.5), "2026-03-02T15:05:00Z")
    other = ProtectionAwareRebalancer(rebalancer.engine)
    with pytest.raises(Refused, match="is not an approval this rebalancer is waiting to fill"):
        other.record_fill(approved, "2026-03-02T15:05:00Z")
    rebalancer.record_fill(approved, "2026-03-02T15:05:00Z")
    with pytest.raises(Refused, match="filled already"):
        rebalancer.record_fill(approved, "2026-03-02T15:06:00Z")
    with pytest.raises(Refused, match="validate it with this rebalancer first"):
        rebalancer.record_fill(target("MSFT", 0, 0.05), "2026-03-02T15:05:00Z")
    assert len(rebalancer.engine.state.events("NVDA")) == 1


def test_a_resize_records_no_execution_and_updates_the_position(rebalancer):
    rebalancer.record_fill(approved_open(rebalancer), "2026-03-02T15:05:00Z", 0.045)
    (increase,) = rebalancer.validate([target("NVDA", 0.045, 0.08)], "2026-03-03T15:00:00Z").approved
    assert increase.action == "increase"
    rebalancer.record_fill(increase, "2026-03-03T15:05:00Z", 0.075)
    (decrease,) = rebalancer.validate([target("NVDA", 0.075, 0.03)], "2026-03-04T15:00:00Z").denied
    assert decrease.decision.blocking_systems == ("holding_period",)  # held since the open, not the increase
    (decrease,) = rebalancer.validate([target("NVDA", 0.075, 0.03)], "2026-03-05T15:05:00Z").approved
    rebalancer.record_fill(decrease, "2026-03-05T15:10:00Z")
    assert rebalancer.positions == {"NVDA": 0.03}
    assert [(e.type, e.size) for e in rebalancer.engine.state.events("NVDA")] == [("open", 0.045)]
