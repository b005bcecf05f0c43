"""Hypothesis properties of `Engine.evaluate` over generated requests (default policy).

Two generators: `requests()` mixes valid and invalid requests (random actions, scores, dates
around a fixed now, events, regimes, states, stray fields, future timestamps, NaN);
`valid_requests()` only builds requests docs/semantics.md accepts, with distinct event instants, and is
checked against `reference()`, an independent model of docs/semantics.md sections 4 and 5 written here.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from spec_helpers import DAY, HIERARCHY, REPO, SECOND, STATUSES, at, comparable, iso

from protection_rules import Engine

NOW = at("2026-03-20T12:00:00Z")
ENGINE = Engine.from_policy(audit=None)  # properties of deciding; the audit trail has its own tests
DECISION_SCHEMA = json.loads((REPO / "schemas" / "decision.v1.schema.json").read_text(encoding="utf-8"))
DECISION_VALIDATOR = jsonschema.Draft202012Validator(DECISION_SCHEMA)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Offsets (in seconds, relative to now) that sit on and next to every default window edge.
EDGES = sorted({-(k * 86_400) + d for k in (0, 1, 2, 3, 5, 7, 14, 30, 90) for d in (-1, 0, 1)})


def past_offset() -> st.SearchStrategy[int]:
    """Seconds before now (0 = now): window edges, or anything in the last 100 days."""
    return st.one_of(st.sampled_from([e for e in EDGES if e <= 0]), st.integers(-100 * 86_400, 0))


def any_offset() -> st.SearchStrategy[int]:
    """Like past_offset, sometimes in the future (which makes most timestamps invalid)."""
    return st.one_of(past_offset(), st.integers(1, 3 * 86_400), st.sampled_from([e for e in EDGES if e > 0]))


@st.composite
def stamp(draw: Any, offset: st.SearchStrategy[int], now: int = NOW) -> str:
    """An ISO timestamp, in one of the accepted spellings (Z, offset, no zone)."""
    instant = now + draw(offset) * SECOND
    form = draw(st.sampled_from(["z", "z", "z", "offset", "naive"]))
    if form == "z":
        return iso(instant)
    if form == "naive":
        return iso(instant)[:-1]
    hours = draw(st.sampled_from([-5, 2, 9]))
    shifted = iso(instant + hours * 3600 * SECOND)[:-1]
    return f"{shifted}{'+' if hours >= 0 else '-'}{abs(hours):02d}:00"


SCORES = st.one_of(
    st.none(),
    st.sampled_from([0.6, 0.5999, 0.0, 1.0]),
    st.floats(min_value=-1, max_value=2, allow_nan=False),
)


@st.composite
def regime(draw: Any, offset: st.SearchStrategy[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"changed": draw(st.booleans())}
    severity = draw(st.sampled_from(["absent", "normal", "high", "critical"]))
    if severity != "absent":
        out["severity"] = severity
    if draw(st.booleans()):
        out["change_date"] = draw(stamp(offset))
    if draw(st.booleans()):
        out["old_regime"], out["new_regime"] = "bull", "bear"
    return out


@st.composite
def state(draw: Any, offset: st.SearchStrategy[int], unique_events: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.integers(0, 3)) == 0:
        core: dict[str, Any] = {"designated_at": draw(stamp(offset))}
        if draw(st.booleans()):
            # after designated_at, possibly in the future (the one future stamp the semantics allow)
            designated = at(core["designated_at"])
            core["expires_at"] = iso(designated + draw(st.integers(1, 40 * 86_400)) * SECOND)
        out["core"] = core
    if draw(st.booleans()):
        grace: dict[str, Any] = {"started_at": draw(stamp(offset))}
        if draw(st.booleans()):
            grace["original_size"] = draw(st.floats(min_value=0, max_value=1e6, allow_nan=False))
        out["grace"] = grace
    if draw(st.booleans()):
        offsets = draw(st.lists(offset, max_size=7, unique=unique_events))
        out["events"] = [{"type": draw(st.sampled_from(["open", "close"])), "at": iso(NOW + o * SECOND)} for o in offsets]
    if draw(st.booleans()):
        out["last_override_at"] = draw(stamp(offset))
    return out


@st.composite
def valid_requests(draw: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "asset": draw(st.sampled_from(["AAPL", "BTC-USD", "x.y:z/1"])),
        "action": draw(st.sampled_from(["open", "close", "increase", "decrease"])),
        "current_date": iso(NOW),
    }
    score = draw(SCORES)
    if score is not None:
        request["current_score"] = score
    if draw(st.booleans()):
        request["current_size"] = draw(st.floats(min_value=0, max_value=1e6, allow_nan=False))
    if draw(st.booleans()):
        request["position_entry_date"] = draw(stamp(past_offset()))
    if draw(st.booleans()):
        request["regime"] = draw(regime(past_offset()))
    if draw(st.integers(0, 4)) > 0:
        request["state"] = draw(state(past_offset(), unique_events=True))
    if draw(st.booleans()):
        request["request_id"] = "req-1"
    return request


@st.composite
def requests(draw: Any) -> Any:
    """Valid and invalid requests mixed."""
    request: dict[str, Any] = {
        "asset": draw(st.sampled_from(["AAPL", "BTC-USD", "", "bad asset"])),
        "action": draw(st.sampled_from(["open", "close", "increase", "decrease", "sell", 3])),
        "current_date": draw(st.one_of(stamp(st.just(0)), st.sampled_from(["2026-02-30", "yesterday", 20260320]))),
        "current_score": draw(st.one_of(SCORES, st.just(float("nan")), st.just("0.5"))),
        "current_size": draw(st.one_of(st.none(), st.floats(min_value=-1, max_value=1e6, allow_nan=False))),
    }
    if draw(st.booleans()):
        request["position_entry_date"] = draw(stamp(any_offset()))
    if draw(st.booleans()):
        request["regime"] = draw(regime(any_offset()))
    if draw(st.booleans()):
        request["state"] = draw(state(any_offset()))
    if draw(st.integers(0, 5)) == 0:
        request[draw(st.sampled_from(["extra", "score", "sid"]))] = 1
    for key in draw(st.sets(st.sampled_from(["asset", "action", "current_date"]), max_size=1)):
        del request[key]
    return draw(st.one_of(st.just(request), st.just(request), st.just(request), st.sampled_from([None, [], "{}", 1])))


# ------------------------------------------------------------------------------ properties


def _check_invariants(request: Any) -> Any:
    decision = ENGINE.evaluate(request)  # must not raise
    shown = decision.to_dict()
    # fail closed
    if "error" in decision.blocking_systems:
        assert decision.approved is False, shown
        assert decision.blocking_systems == ("error",), shown
    assert decision.approved is (not decision.blocking_systems), shown
    assert decision.decision == ("approve" if decision.approved else "deny")
    # the engine/mirror cross-check and internal errors never trip on generated input
    assert not decision.reason.startswith("Engine error"), shown
    assert not decision.reason.startswith("Internal error"), shown
    # trace: one entry per hierarchy protection, in order, statuses from the allowed set
    assert [entry.system for entry in decision.trace] == list(HIERARCHY), shown
    assert [entry.priority for entry in decision.trace] == list(range(1, len(HIERARCHY) + 1)), shown
    assert {entry.status for entry in decision.trace} <= STATUSES, shown
    # the decision is a valid decision.v1 document
    errors = sorted(DECISION_VALIDATOR.iter_errors(shown), key=str)
    assert not errors, [e.message for e in errors]
    return decision


@SETTINGS
@given(requests())
def test_evaluate_never_raises_and_fails_closed(request: Any) -> None:
    _check_invariants(request)


# Scores printed in exponent form without a decimal point (1e-05, 1e+16) once made the rule
# network reject the fact (durable-rules error 204): a valid request denied as an engine error.
TINY_SCORE = {"asset": "AAPL", "action": "open", "current_date": "2026-03-20T12:00:00Z", "current_score": 1e-05}
HUGE_SCORE = {"asset": "AAPL", "action": "close", "current_date": "2026-03-20T12:00:00Z", "current_score": 1.5e14}


@SETTINGS
@given(valid_requests())
@example(TINY_SCORE)
@example(HUGE_SCORE)
def test_valid_requests_are_never_errors(request: dict[str, Any]) -> None:
    decision = _check_invariants(request)
    assert "error" not in decision.blocking_systems, decision.to_dict()


@SETTINGS
@given(requests())
def test_same_input_same_decision(request: Any) -> None:
    first, second = ENGINE.evaluate(copy.deepcopy(request)), ENGINE.evaluate(copy.deepcopy(request))
    assert comparable(first) == comparable(second)


@SETTINGS
@given(requests())
def test_evaluate_does_not_change_its_input(request: Any) -> None:
    before = copy.deepcopy(request)
    ENGINE.evaluate(request)
    assert json.dumps(request, sort_keys=True, default=str) == json.dumps(before, sort_keys=True, default=str)


@SETTINGS
@given(valid_requests())
def test_decision_assembly_is_consistent(request: dict[str, Any]) -> None:
    decision = ENGINE.evaluate(request)
    by_system = {entry.system: entry for entry in decision.trace}
    blocking = list(decision.blocking_systems)
    # blocking systems: priority order, each with status block
    assert blocking == [s for s in HIERARCHY if s in blocking]
    for system in blocking:
        assert by_system[system].status == "block"
    overridden = [s for s in HIERARCHY if by_system[s].status == "overridden"]
    if "core_asset_immunity" in blocking:
        assert blocking == ["core_asset_immunity"]
        assert all(by_system[s].status == "skipped" for s in HIERARCHY[1:])
    else:
        assert [s for s in HIERARCHY if by_system[s].status == "block"] == blocking
    # override applied only on an approval with something overridden; recorded only then
    assert decision.override_applied is (decision.approved and bool(overridden))
    assert (decision.override_reason is not None) is decision.override_applied
    for system in overridden if decision.override_applied else []:
        assert f"regime override bypassed {system}" in decision.override_reason
    used = [c for c in decision.state_changes if c.type == "override_used"]
    assert len(used) == (1 if decision.override_applied else 0)
    # unblocks_at: the latest of the blockers' when all have one, else null
    times = [by_system[s].unblocks_at for s in blocking]
    if blocking and all(t is not None for t in times):
        assert decision.unblocks_at == max(times)
        assert decision.unblocks_at > NOW
    else:
        assert decision.unblocks_at is None


# ---------------------------------------------------------------- an independent semantics model


def _events(state: dict[str, Any]) -> list[tuple[int, str]]:
    return sorted((at(e["at"]), e["type"]) for e in state.get("events") or [])


def _cycles(events: list[tuple[int, str]]) -> int:
    count, armed = 0, False
    for _, kind in events:
        if kind == "open":
            armed = True
        elif armed:
            count, armed = count + 1, False
    return count


def _whipsaw_unblocks(events: list[tuple[int, str]], now: int, period: int, limit: int) -> int | None:
    candidates = sorted({when + period for when, _ in events if now - period < when <= now})
    for t in candidates:  # t > now for every candidate
        if _cycles([e for e in events if t - period < e[0] <= t]) < limit:
            return t
    return None


def reference(request: dict[str, Any]) -> dict[str, Any]:
    """docs/semantics.md sections 3-5 with the default parameters, written from the text alone."""
    now = at(request["current_date"])
    action = request["action"]
    state = request.get("state") or {}

    core = state.get("core")
    if core:
        start, end = at(core["designated_at"]), at(core["expires_at"]) if core.get("expires_at") else None
        if action in ("close", "decrease") and start <= now and (end is None or now < end):
            return {"approved": False, "blocking": ["core_asset_immunity"], "unblocks_at": end, "override": False, "changes": []}

    bypass: set[str] = set()
    regime = request.get("regime") or {}
    severity = regime.get("severity") or "normal"
    if regime.get("changed"):
        changed_at = at(regime["change_date"]) if regime.get("change_date") else now
        last = at(state["last_override_at"]) if state.get("last_override_at") else None
        fresh = changed_at <= now < changed_at + 7 * DAY
        cooled = last is None or not now < last + 30 * DAY
        if fresh and cooled:
            bypass = {"normal": set(), "high": {"grace_period", "holding_period"}}.get(
                severity, {"grace_period", "holding_period", "whipsaw_protection"}
            )

    blocks: dict[str, int | None] = {}
    changes: list[str] = []
    score, grace = request.get("current_score"), state.get("grace")
    if score is not None:
        failing = score < 0.6
        start = at(grace["started_at"]) if grace else now
        in_grace = failing and now < start + 5 * DAY
        if failing and not grace:
            changes.append("grace_started")
        if not failing and grace:
            changes.append("grace_ended")
    else:
        start = at(grace["started_at"]) if grace else now
        in_grace = bool(grace) and now < start + 5 * DAY
    if in_grace and action == "close":
        blocks["grace_period"] = start + 5 * DAY

    events = _events(state)
    entry = at(request["position_entry_date"]) if request.get("position_entry_date") else None
    if entry is None:
        opens = [when for when, kind in events if kind == "open"]
        if opens and not any(kind == "close" and when > max(opens) for when, kind in events):
            entry = max(opens)
    if entry is not None and action in ("close", "decrease") and now < entry + 3 * DAY:
        blocks["holding_period"] = entry + 3 * DAY

    window = [e for e in events if now - 14 * DAY < e[0] <= now]
    if action == "open" and _cycles(window) >= 1:
        blocks["whipsaw_protection"] = _whipsaw_unblocks(events, now, 14 * DAY, 1)

    blocking = [s for s in HIERARCHY if s in blocks and s not in bypass]
    overridden = [s for s in HIERARCHY if s in blocks and s in bypass]
    approved = not blocking
    override = approved and bool(overridden)
    if override:
        changes.append("override_used")
    times = [blocks[s] for s in blocking]
    unblocks = max(times) if blocking and all(t is not None for t in times) else None  # type: ignore[type-var]
    return {"approved": approved, "blocking": blocking, "unblocks_at": unblocks, "override": override, "changes": changes}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_requests())
@example(TINY_SCORE)
@example(HUGE_SCORE)
@example({"asset": "A", "action": "close", "current_date": "2026-03-20T12:00:00Z", "current_score": -1e-07})
def test_engine_agrees_with_an_independent_spec_model(request: dict[str, Any]) -> None:
    decision = ENGINE.evaluate(request)
    got = {
        "approved": decision.approved,
        "blocking": list(decision.blocking_systems),
        "unblocks_at": decision.unblocks_at,
        "override": decision.override_applied,
        "changes": [change.type for change in decision.state_changes],
    }
    assert got == reference(request), (request, decision.to_dict())


@pytest.mark.parametrize(
    "current_date",
    [["2026-03-12"], {"at": "2026-03-12"}, 20260312, None, "2026-02-30", "x" * 10_000],
    ids=["list", "object", "number", "null", "impossible", "long"],
)
def test_unreadable_current_date_is_a_deny_not_an_exception(current_date: Any) -> None:
    decision = ENGINE.evaluate({"asset": "A", "action": "close", "current_date": current_date})
    assert decision.blocking_systems == ("error",) and decision.evaluated_at is None
