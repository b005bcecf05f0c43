"""Nothing that already happened may lie after `current_date`, to the microsecond: one
microsecond later is an invalid request (a deny with `timestamp-future` naming the field), the
same instant is fine. `state.core.expires_at` is the one instant that may lie ahead."""

from __future__ import annotations

from typing import Any

import pytest

from protection_rules import Engine
from protection_rules.state import MemoryStateStore
from protection_rules.timestamps import parse_instant

ENGINE = Engine.from_policy(audit=None)
NOW = "2026-03-12T09:00:00Z"
LATER = "2026-03-12T09:00:00.000001Z"  # one microsecond after NOW


def _request(where: str, instant: str) -> tuple[dict[str, Any], str]:
    base: dict[str, Any] = {"asset": "MSFT", "action": "close", "current_date": NOW}
    placed = {
        "position_entry_date": ({"position_entry_date": instant}, "$.position_entry_date"),
        "regime change": ({"regime": {"changed": True, "change_date": instant}}, "$.regime.change_date"),
        "event": ({"state": {"events": [{"type": "open", "at": instant}]}}, "$.state.events[0].at"),
        "grace start": ({"state": {"grace": {"started_at": instant}}}, "$.state.grace.started_at"),
        "core designation": ({"state": {"core": {"designated_at": instant}}}, "$.state.core.designated_at"),
        "last override": ({"state": {"last_override_at": instant}}, "$.state.last_override_at"),
    }[where]
    return {**base, **placed[0]}, placed[1]


WHERE = ["position_entry_date", "regime change", "event", "grace start", "core designation", "last override"]


@pytest.mark.parametrize("where", WHERE)
def test_one_microsecond_after_now_is_invalid(where):
    request, path = _request(where, LATER)
    decision = ENGINE.evaluate(request)
    assert decision.blocking_systems == ("error",)
    assert [(issue.code, issue.path) for issue in decision.errors] == [("timestamp-future", path)]


@pytest.mark.parametrize("where", WHERE)
def test_the_same_instant_as_now_is_valid(where):
    request, _ = _request(where, NOW)
    assert "error" not in ENGINE.evaluate(request).blocking_systems


def test_an_expiry_may_lie_ahead():
    request = {"asset": "MSFT", "action": "close", "current_date": NOW,
               "state": {"core": {"designated_at": NOW, "expires_at": LATER}}}  # fmt: skip
    assert ENGINE.evaluate(request).blocking_systems == ("core_asset_immunity",)


@pytest.mark.parametrize(("stored_at", "invalid"), [(LATER, True), (NOW, False)])
def test_a_stored_event_one_microsecond_ahead_is_invalid(stored_at, invalid):
    store = MemoryStateStore()
    store.record_execution("MSFT", "open", parse_instant(stored_at), None)
    decision = Engine.from_policy(state=store, audit=None).evaluate({"asset": "MSFT", "action": "close", "current_date": NOW})
    codes = [(issue.code, issue.path) for issue in decision.errors]
    assert codes == ([("timestamp-future", "$.state.events[0].at")] if invalid else [])
