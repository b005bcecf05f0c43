"""Boundary tables for every time window in docs/semantics.md (sections 2 and 4).

Every window is half-open: a thing that starts at `t` and lasts `d` is in force for
`t <= now < t + d`. Each row names a boundary instant B and a request built around a given
`now`; the request is decided at B - 1 s, B and B + 1 s, and each decision is compared with the
row's expectation, worked out by hand from docs/semantics.md (default policy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from spec_helpers import DAY, SECOND, at, iso, trace_entry

from protection_rules import Engine

B = "2026-03-20T12:00:00Z"  # every boundary below is placed at this instant

DENY_ERROR = ("deny", ["error"])
APPROVE = ("approve", [])


def deny(system: str) -> tuple[str, list[str]]:
    return ("deny", [system])


def _request(action: str, **extra: Any) -> Callable[[str], dict[str, Any]]:
    def build(now: str) -> dict[str, Any]:
        return {"asset": "WIN", "action": action, "current_date": now, **extra}

    return build


# (window, request builder, (before, at, after), unblocks_at expected for the `before` decision)
ROWS = [
    pytest.param(
        _request("close", state={"core": {"designated_at": "2026-01-01T00:00:00Z", "expires_at": B}}),
        (deny("core_asset_immunity"), APPROVE, APPROVE),
        B,
        id="core expires_at ends the designation",
    ),
    pytest.param(
        _request("close", state={"core": {"designated_at": B}}),
        # before: designated_at after now is a bad request (semantics section 2); from B on: core, no expiry
        (DENY_ERROR, deny("core_asset_immunity"), deny("core_asset_immunity")),
        None,
        id="core designated_at starts the designation",
    ),
    pytest.param(
        _request("close", state={"grace": {"started_at": "2026-03-15T12:00:00Z"}}),
        (deny("grace_period"), APPROVE, APPROVE),
        B,
        id="grace days (score absent, carried from state)",
    ),
    pytest.param(
        _request("close", current_score=0.3, state={"grace": {"started_at": "2026-03-15T12:00:00Z"}}),
        (deny("grace_period"), APPROVE, APPROVE),
        B,
        id="grace days (failing score, grace from state)",
    ),
    pytest.param(
        _request("close", position_entry_date="2026-03-17T12:00:00Z"),
        (deny("holding_period"), APPROVE, APPROVE),
        B,
        id="holding min_days from position_entry_date",
    ),
    pytest.param(
        _request("close", state={"events": [{"type": "open", "at": "2026-03-17T12:00:00Z"}]}),
        (deny("holding_period"), APPROVE, APPROVE),
        B,
        id="holding min_days from an open event",
    ),
    pytest.param(
        _request("close", position_entry_date=B),
        # before: an entry after now is a bad request; at B the position is 0 s old
        (DENY_ERROR, deny("holding_period"), deny("holding_period")),
        None,
        id="holding starts at the entry date",
    ),
    pytest.param(
        _request(
            "open",
            state={"events": [{"type": "open", "at": "2026-03-06T12:00:00Z"}, {"type": "close", "at": "2026-03-08T00:00:00Z"}]},
        ),
        # the open leaves (B - 14 d, B] exactly at B: the lone close is no cycle
        (deny("whipsaw_protection"), APPROVE, APPROVE),
        B,
        id="whipsaw period_days: an open leaving the window",
    ),
    pytest.param(
        _request(
            "open",
            state={
                "events": [
                    {"type": "open", "at": "2026-03-01T00:00:00Z"},
                    {"type": "close", "at": "2026-03-06T12:00:00Z"},
                    {"type": "open", "at": "2026-03-10T00:00:00Z"},
                ]
            },
        ),
        # the close completes a cycle with the 03-01 open only while that open is inside: never
        # (it left long ago); the close itself leaves at B. 0 cycles throughout.
        (APPROVE, APPROVE, APPROVE),
        None,
        id="whipsaw: a close whose open already left is no cycle",
    ),
    pytest.param(
        _request(
            "close",
            position_entry_date="2026-03-19T12:00:00Z",
            regime={"changed": True, "severity": "high", "change_date": "2026-03-13T12:00:00Z"},
        ),
        # holding blocks all along (until 03-22T12:00Z); the override lasts until change + 7 d
        (APPROVE, deny("holding_period"), deny("holding_period")),
        None,
        id="regime max_age_days ends the override",
    ),
    pytest.param(
        _request(
            "close",
            position_entry_date="2026-03-19T12:00:00Z",
            regime={"changed": True, "severity": "high", "change_date": B},
        ),
        # before: a change date after now is a bad request; from B on the override is fresh
        (DENY_ERROR, APPROVE, APPROVE),
        None,
        id="regime change_date starts the override",
    ),
    pytest.param(
        _request(
            "close",
            position_entry_date="2026-03-19T12:00:00Z",
            regime={"changed": True, "severity": "high"},
            state={"last_override_at": "2026-02-18T12:00:00Z"},
        ),
        # cooldown lasts last_override_at + 30 d = B; the change date defaults to now (fresh).
        # Before B, holding blocks until entry + 3 d.
        (deny("holding_period"), APPROVE, APPROVE),
        "2026-03-22T12:00:00Z",
        id="override cooldown_days",
    ),
]


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine.from_policy() as engine:
        yield engine


@pytest.mark.parametrize(("build", "expected", "unblocks_before"), ROWS)
@pytest.mark.parametrize(("offset", "label"), [(-SECOND, "before"), (0, "at"), (SECOND, "after")])
def test_window_boundary(engine: Engine, build: Any, expected: Any, unblocks_before: Any, offset: int, label: str) -> None:
    index = {"before": 0, "at": 1, "after": 2}[label]
    want_decision, want_blocking = expected[index]
    now = iso(at(B) + offset)
    decision = engine.evaluate(build(now))
    assert decision.decision == want_decision, (label, now, decision.to_dict())
    assert list(decision.blocking_systems) == want_blocking, (label, now, decision.to_dict())
    if label == "before" and want_decision == "deny" and want_blocking != ["error"]:
        expected_unblock = at(unblocks_before) if unblocks_before else None
        assert decision.unblocks_at == expected_unblock, decision.to_dict()


REVIEW_ENTRY = "2025-12-20T12:00:00Z"  # + 90 days = B


@pytest.mark.parametrize(("offset", "review"), [(-SECOND, False), (0, True), (SECOND, True)])
@pytest.mark.parametrize("action", ["close", "decrease", "open"])
def test_holding_max_days_review_flag_never_blocks(engine: Engine, offset: int, review: bool, action: str) -> None:
    now = iso(at(B) + offset)
    decision = engine.evaluate({"asset": "WIN", "action": action, "current_date": now, "position_entry_date": REVIEW_ENTRY})
    assert decision.approved, decision.to_dict()
    assert decision.blocking_systems == ()
    assert trace_entry(decision, "holding_period").facts["review"] is review


@pytest.mark.parametrize(
    ("now", "approved"),
    [
        ("2026-03-13T08:59:59.999999Z", False),
        ("2026-03-13T09:00:00Z", True),
        ("2026-03-13T09:00:00.000001Z", True),
    ],
)
def test_windows_are_exact_to_the_microsecond(engine: Engine, now: str, approved: bool) -> None:
    """The example of semantics section 2: a 3-day hold from 2026-03-10T09:00Z blocks until, and not at, 03-13T09:00Z."""
    decision = engine.evaluate(
        {"asset": "WIN", "action": "close", "current_date": now, "position_entry_date": "2026-03-10T09:00:00Z"}
    )
    assert decision.approved is approved, decision.to_dict()


@pytest.mark.parametrize(
    ("now", "approved"),
    [("2028-02-29T23:59:59Z", False), ("2028-03-01", True)],
)
def test_days_are_24_hours_across_a_leap_day(engine: Engine, now: str, approved: bool) -> None:
    decision = engine.evaluate({"asset": "WIN", "action": "close", "current_date": now, "position_entry_date": "2028-02-27"})
    assert decision.approved is approved, decision.to_dict()
    if not approved:
        assert decision.to_dict()["unblocks_at"] == "2028-03-01T00:00:00Z"


def test_output_instants_are_utc_with_z(engine: Engine) -> None:
    decision = engine.evaluate(
        {
            "asset": "WIN",
            "action": "close",
            "current_date": "2026-03-13T10:59:59+02:00",
            "position_entry_date": "2026-03-10T04:00:00-05:00",
        }
    )
    shown = decision.to_dict()
    assert shown["unblocks_at"] == "2026-03-13T09:00:00Z"
    assert shown["evaluated_at"] == "2026-03-13T08:59:59Z"
    assert trace_entry(decision, "holding_period").to_dict()["unblocks_at"] == "2026-03-13T09:00:00Z"


@pytest.mark.parametrize("days_elapsed", range(7))
def test_grace_day_by_day(engine: Engine, days_elapsed: int) -> None:
    """Carried grace (5 days from state) blocks on days 0..4 and allows from day 5 on."""
    start = at("2026-03-10T06:00:00Z")
    now = start + days_elapsed * DAY
    decision = engine.evaluate(
        {"asset": "WIN", "action": "close", "current_date": iso(now), "state": {"grace": {"started_at": iso(start)}}}
    )
    assert decision.approved is (days_elapsed >= 5), decision.to_dict()
    if not decision.approved:
        assert decision.unblocks_at == start + 5 * DAY
