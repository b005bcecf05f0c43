"""A Python caller hands the engine what Python holds: timezone-aware `datetime`s (and dates,
and ISO strings) wherever an instant goes, in a `ProtectionRequest` or in a dict. A naive
`datetime` is refused with a clear error, never guessed at and never an approval."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from protection_rules import Engine, ProtectionRequest, RequestInvalid
from protection_rules.models import AssetState, PositionEvent

ENGINE = Engine.from_policy(audit=None)
PARIS_WINTER = timezone(timedelta(hours=1))

# The holding-period example: entered 2026-03-10 09:00Z, closed 2026-03-12 07:00Z, a 3-day
# minimum, so denied by holding_period until 2026-03-13T09:00:00Z (checked by hand).
HOLDING = {
    "asset": "AAPL",
    "action": "close",
    "current_score": 0.71,
}
SPELLINGS = {
    "iso text": ("2026-03-12T07:00:00Z", "2026-03-10T09:00:00Z"),
    "aware utc datetimes": (datetime(2026, 3, 12, 7, tzinfo=UTC), datetime(2026, 3, 10, 9, tzinfo=UTC)),
    "other offset": (datetime(2026, 3, 12, 8, tzinfo=PARIS_WINTER), datetime(2026, 3, 10, 10, tzinfo=PARIS_WINTER)),
    "mixed": ("2026-03-12T07:00:00Z", datetime(2026, 3, 10, 9, tzinfo=UTC)),
}


def _check_holding_denial(decision) -> None:
    out = decision.to_dict()  # must not raise
    assert (out["approved"], out["blocking_systems"]) == (False, ["holding_period"])
    assert out["evaluated_at"] == "2026-03-12T07:00:00Z"
    assert out["unblocks_at"] == "2026-03-13T09:00:00Z"


@pytest.mark.parametrize("now, entry", SPELLINGS.values(), ids=SPELLINGS.keys())
def test_request_object_takes_aware_datetimes(now, entry):
    request = ProtectionRequest(**HOLDING, current_date=now, position_entry_date=entry)
    assert request.current_date == 1_773_298_800_000_000  # 2026-03-12T07:00:00Z in epoch microseconds
    _check_holding_denial(ENGINE.evaluate(request))


@pytest.mark.parametrize("now, entry", SPELLINGS.values(), ids=SPELLINGS.keys())
def test_dict_takes_aware_datetimes(now, entry):
    _check_holding_denial(ENGINE.evaluate({**HOLDING, "current_date": now, "position_entry_date": entry}))


def test_a_date_means_midnight_utc():
    request = ProtectionRequest(asset="AAPL", action="open", current_date=date(2026, 3, 12))
    assert request.to_dict()["current_date"] == "2026-03-12T00:00:00Z"


def test_nested_state_takes_datetimes_in_objects_and_dicts():
    # open 2026-03-02 14:30Z, close 2026-03-06 15:00Z: one cycle in the 14-day window, so a
    # re-open on 2026-03-12 is blocked until the open leaves the window at 2026-03-16T14:30Z
    opened, closed = datetime(2026, 3, 2, 14, 30, tzinfo=UTC), datetime(2026, 3, 6, 15, tzinfo=UTC)
    now = datetime(2026, 3, 12, 9, tzinfo=UTC)
    as_objects = ProtectionRequest(
        asset="TSLA",
        action="open",
        current_date=now,
        state=AssetState(events=(PositionEvent("open", opened), PositionEvent("close", closed))),
    )
    as_dict = {
        "asset": "TSLA",
        "action": "open",
        "current_date": now,
        "state": {"events": [{"type": "open", "at": opened}, {"type": "close", "at": closed}]},
    }
    for request in (as_objects, as_dict):
        out = ENGINE.evaluate(request).to_dict()
        assert (out["blocking_systems"], out["unblocks_at"]) == (["whipsaw_protection"], "2026-03-16T14:30:00Z")


NAIVE = datetime(2026, 3, 10, 9)


@pytest.mark.parametrize(
    "build, path",
    [
        (lambda: ProtectionRequest(asset="AAPL", action="close", current_date=NAIVE), "$.current_date"),
        (
            lambda: ProtectionRequest(
                asset="AAPL", action="close", current_date="2026-03-12T07:00:00Z", position_entry_date=NAIVE
            ),
            "$.position_entry_date",
        ),
        (lambda: PositionEvent("open", NAIVE), "$.state.events[*].at"),
        (lambda: ProtectionRequest(asset="AAPL", action="close", current_date=1.5), "$.current_date"),
    ],
    ids=["current_date", "entry date", "event", "a float"],
)
def test_request_object_refuses_naive_or_unknown_instants(build, path):
    with pytest.raises(RequestInvalid) as caught:
        build()
    (issue,) = caught.value.issues
    assert (issue.code, issue.path) == ("timestamp-invalid", path)
    assert "naive datetime" in issue.message or "not an instant" in issue.message


@pytest.mark.parametrize(
    "request_, path",
    [
        ({**HOLDING, "current_date": NAIVE}, "$.current_date"),
        ({**HOLDING, "current_date": "2026-03-12T07:00:00Z", "position_entry_date": NAIVE}, "$.position_entry_date"),
        (
            {**HOLDING, "current_date": "2026-03-12T07:00:00Z", "state": {"events": [{"type": "open", "at": NAIVE}]}},
            "$.state.events[0].at",
        ),
    ],
    ids=["current_date", "entry date", "event"],
)
def test_dict_with_a_naive_datetime_is_a_deny_naming_the_field(request_, path):
    decision = ENGINE.evaluate(request_)
    out = decision.to_dict()  # must not raise
    assert (out["approved"], out["blocking_systems"]) == (False, ["error"])
    assert [(e["code"], e["path"]) for e in out["errors"]] == [("timestamp-invalid", path)]
    assert "naive datetime" in out["errors"][0]["message"]


def test_the_audit_trail_records_datetimes_as_text(tmp_path):
    from protection_rules.audit import open_audit

    with open_audit(tmp_path / "audit.sqlite") as sink:
        engine = Engine.from_policy(audit=sink)
        engine.evaluate({**HOLDING, "current_date": datetime(2026, 3, 12, 7, tzinfo=UTC), "position_entry_date": "2026-03-10"})
        (record,) = list(sink.records())
    assert record["request"]["current_date"] == "2026-03-12T07:00:00Z"
    assert record["request"]["position_entry_date"] == "2026-03-10"


@pytest.mark.parametrize(
    "extra, path",
    [
        ({"reason": "x\ud83dy"}, "$.reason"),
        ({"request_id": "\udc00"}, "$.request_id"),
        ({"metadata": {"note": "\ud800"}}, "$.metadata"),
        ({"regime": {"changed": True, "old_regime": "bull\udfff"}}, "$.regime.old_regime"),
    ],
    ids=["reason", "request_id", "metadata", "regime name"],
)
def test_half_a_character_is_an_invalid_request_not_an_internal_error(extra, path, tmp_path):
    from protection_rules.audit import open_audit

    with open_audit(tmp_path / "audit.sqlite") as sink:
        decision = Engine.from_policy(audit=sink).evaluate({**HOLDING, "current_date": "2026-03-12T07:00:00Z", **extra})
        assert [(e.code, e.path) for e in decision.errors] == [("text-invalid", path)]
        assert len(list(sink.records())) == 1  # recorded like any invalid request
    decision.to_dict()


def test_whole_characters_beyond_the_basic_plane_are_fine():
    decision = ENGINE.evaluate({**HOLDING, "current_date": "2026-03-12T07:00:00Z", "reason": "rotate \U0001f600 café"})
    assert decision.errors == ()
