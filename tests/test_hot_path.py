"""The per-decision hot path (issue 11): what it skips must still come out exactly when read.

A decision's trace is written when it is first read (`LazyTrace`): the decision's own fields
come from the rule ids that fired. test_engine_properties.py holds those fields against the
trace (`test_decision_assembly_is_consistent`); here: the trace is not written by deciding, is
written once when read, and reads, compares and pickles like the tuple it stands for.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protection_rules import Engine, EngineFailure
from protection_rules.engine_json import engine_json, fact_json
from protection_rules.models import LazyTrace, ProtectionDecision, ProtectionResult
from protection_rules.network import RuleNetwork
from protection_rules.protections.holding_period import HoldingPeriod

NOW = "2026-03-20T12:00:00Z"
# held two days of the default three-day minimum: holding_period blocks the close
HELD_TWO_DAYS = {
    "request_id": "r1",
    "asset": "AAPL",
    "action": "close",
    "current_date": NOW,
    "position_entry_date": "2026-03-18T12:00:00Z",
}


@pytest.fixture
def explained(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The assets whose holding_period trace entry was written, in order."""
    seen: list[str] = []
    original = HoldingPeriod.explain

    def counting(self: HoldingPeriod, ctx: Any, facts: Any, fired: Any) -> Any:
        seen.append(ctx.request.asset)
        return original(self, ctx, facts, fired)

    monkeypatch.setattr(HoldingPeriod, "explain", counting)
    return seen


def test_deciding_does_not_write_the_trace_and_reading_writes_it_once(explained: list[str]) -> None:
    engine = Engine.from_policy(audit=None)
    decisions = engine.evaluate_many([HELD_TWO_DAYS, {**HELD_TWO_DAYS, "asset": "MSFT"}])
    assert [d.blocking_systems for d in decisions] == [("holding_period",), ("holding_period",)]
    # unblocks_at is the decision's own field: entry + 3 days, without the trace
    assert [d.unblocks_at for d in decisions] == [decisions[0].evaluated_at + 86_400_000_000] * 2
    assert explained == []
    entry = decisions[1].trace[3]
    assert (entry.system, entry.status) == ("holding_period", "block")
    assert entry.reason == "held 2d of the 3-day minimum; `close` allowed from 2026-03-21T12:00:00Z"
    assert len(decisions[1].trace) == 5
    list(decisions[1].trace)
    decisions[1].to_dict()
    assert explained == ["MSFT"]


def test_an_audited_decision_has_its_trace_written_before_it_is_returned(explained: list[str], tmp_path: Any) -> None:
    # the audit record holds the whole decision, so the trace is written inside the
    # engine's fail-closed boundary, before the decision is recorded
    from protection_rules.audit import open_audit

    with open_audit(tmp_path / "audit.sqlite") as sink:
        Engine.from_policy(audit=sink).evaluate(HELD_TWO_DAYS)
    assert explained == ["AAPL"]


def test_a_lazy_trace_reads_compares_and_pickles_like_its_tuple() -> None:
    decision = Engine.from_policy(audit=None).evaluate(HELD_TWO_DAYS)
    assert isinstance(decision.trace, LazyTrace)
    copied = ProtectionDecision.from_dict(decision.to_dict())
    assert isinstance(copied.trace, tuple)
    assert copied == decision and decision == copied
    assert decision.trace == copied.trace and copied.trace == decision.trace
    assert decision.trace[1:3] == copied.trace[1:3]
    assert decision.trace != copied.trace[:-1]
    unpickled = pickle.loads(pickle.dumps(decision))
    assert type(unpickled.trace) is tuple
    assert unpickled == copied


def test_a_lazy_trace_is_built_by_the_first_reader_only() -> None:
    calls = []
    entry = ProtectionResult("holding_period", 4, "pass", "held 5d, past the 3-day minimum")

    def build() -> tuple[ProtectionResult, ...]:
        calls.append(1)
        return (entry,)

    trace = LazyTrace(build)
    assert (trace[0], len(trace), list(trace), trace == (entry,)) == (entry, 1, [entry], True)
    assert calls == [1]
    assert repr(trace) == repr((entry,))


# ------------------------------------------------------------------ the fact's JSON (network.py)


@pytest.mark.parametrize(
    ("fact", "text"),
    [
        ({"action": "open", "n": 0.25, "k": 3, "b": True}, '{"action":"open","n":0.25,"k":3,"b":true}'),
        # what durable-rules cannot read (`1e16`, `1e-07`) gets a fraction, outside strings only
        ({"n": 1e16, "m": -1e-07, "s": "BRK:1e5"}, '{"n":1.0e16,"m":-1.0e-7,"s":"BRK:1e5"}'),
        # a text holding `null` takes json's way, to the same values
        ({"s": "null", "n": 1e-05}, '{"s":"null","n":1.0e-05}'),
        ({"s": "Zürich"}, '{"s":"Zürich"}'),
    ],
)
def test_fact_json_writes_what_the_rule_network_reads(fact: dict[str, Any], text: str) -> None:
    assert fact_json(fact) == text
    assert json.loads(text) == fact


@pytest.mark.parametrize(
    ("fact", "text"),
    [
        # the declared float key is the only one looked at, and one outside the plain range is rewritten
        ({"action": "open", "n": 1e16}, '{"action":"open","n":1.0e16}'),
        ({"action": "open", "n": -1e-07}, '{"action":"open","n":-1.0e-7}'),
        ({"action": "open", "n": 0.25}, '{"action":"open","n":0.25}'),
        ({"action": "open"}, '{"action":"open"}'),
    ],
)
def test_fact_json_with_its_float_keys_rewrites_what_needs_it(fact: dict[str, Any], text: str) -> None:
    assert fact_json(fact, ("n",)) == text


@given(
    st.one_of(
        st.floats(min_value=1e-4, max_value=1e15, exclude_max=True),
        st.floats(min_value=-1e15, max_value=-1e-4, exclude_min=True),
        st.sampled_from([0.0, -0.0, 1e-4, -1e-4, math.nextafter(1e15, 0), -math.nextafter(1e15, 0)]),
    )
)
def test_msgspec_writes_a_float_in_the_plain_range_without_an_exponent(value: float) -> None:
    # fact_json skips the exponent rewrite for these: msgspec must never write one
    assert b"e" not in msgspec.json.encode(value).lower()


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_fact_json_with_float_keys_reads_as_engine_json_does(value: float) -> None:
    fact = {"action": "open", "n": value}
    assert json.loads(fact_json(fact, ("n",))) == json.loads(engine_json(fact))
    assert fact_json(fact, ("n",)) == fact_json(fact)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_fact_json_refuses_what_is_not_finite(value: float) -> None:
    with pytest.raises(ValueError):
        fact_json({"action": "open", "n": value})


@pytest.mark.parametrize(
    ("fact", "fired"),
    [({"s": 0.25}, ("lo",)), ({"s": 0.75}, ()), ({"s": 1e-07, "t": "null"}, ("lo",)), ({}, ())],
)
def test_the_network_reads_facts_with_their_state_id_appended(fact: dict[str, Any], fired: tuple[str, ...]) -> None:
    ruleset = {
        "lo": {"pri": 1, "all": [{"m": {"$and": [{"_kind": "k"}, {"$lt": {"s": 0.6}}]}}]},
        "end": {"pri": 2, "all": [{"m": {"_kind": "k"}}]},
    }
    net = RuleNetwork(
        "hot-path-tail", engine_json(ruleset), kind="k", sentinel="end", fact_types={"s": float, "t": str}, max_activations=4
    )
    for _ in range(3):  # the state id is reused: each fact is retracted again
        assert net.fire(fact) == fired


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_fact_that_is_not_finite_is_an_engine_failure(value: float) -> None:
    net = RuleNetwork(
        "hot-path-nan",
        engine_json({"end": {"pri": 1, "all": [{"m": {"_kind": "k"}}]}}),
        kind="k",
        sentinel="end",
        fact_types={"s": float},
        max_activations=2,
    )
    with pytest.raises(EngineFailure, match="not finite"):
        net.fire({"s": value})


def test_requests_contexts_and_decisions_are_left_out_of_the_cyclic_collector() -> None:
    # thousands of them held in memory must not slow every full collection down
    import gc

    from protection_rules.facts import resolve_context
    from protection_rules.parsing import parse_request

    request = parse_request({**HELD_TWO_DAYS, "state": {"events": [{"type": "open", "at": "2026-03-18T12:00:00Z"}]}})
    decision = Engine.from_policy(audit=None).evaluate(HELD_TWO_DAYS)
    # a failing score starts a grace period: the decision carries a state change
    starts_grace = Engine.from_policy(audit=None).evaluate({**HELD_TWO_DAYS, "action": "close", "current_score": 0.1})
    (change,) = starts_grace.state_changes
    assert change.type == "grace_started"
    values = (request, request.state, request.state.events[0], resolve_context(request), decision, change)
    assert [gc.is_tracked(value) for value in values] == [False] * 6


# ------------------------------------------------------------------ random ids (engine.py)


def test_random_ids_are_128_bit_hex_and_never_repeat_across_draws() -> None:
    from protection_rules.engine import ID_DRAW, _random_id

    ids = [_random_id() for _ in range(3 * ID_DRAW + 5)]
    assert len(set(ids)) == len(ids)
    assert all(len(text) == 32 and int(text, 16) >= 0 for text in ids)


_FORK_PROBE = """
import os
from protection_rules.engine import _random_id
_random_id()  # the pool now holds the next ids
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, _random_id().encode())
    os._exit(0)
os.waitpid(pid, 0)
print(os.read(read, 32).decode(), _random_id())
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_does_not_hand_out_its_parents_next_ids() -> None:
    done = subprocess.run([sys.executable, "-c", _FORK_PROBE], capture_output=True, text=True, check=True)
    child, parent = done.stdout.split()
    assert len(child) == len(parent) == 32 and child != parent
