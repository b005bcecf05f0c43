"""The audit record written where it is built (record_json.py) is the reference encoder's bytes.

The sink hashes `canonical_json` of each record with its stamps; the engine now writes most of
it ahead (`encode_record`, `decision_bytes`) and the sink splices its stamps in (`seal`). These
properties hold both fast paths to the reference, with values of every kind where a decision
can carry something other than our own strings (facts, sizes, the decision time, errors).
"""

from __future__ import annotations

import enum
import json
import pickle
import typing
import uuid

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protection_rules import models
from protection_rules.audit.chain import seal
from protection_rules.canonical import canonical_json
from protection_rules.errors import Issue
from protection_rules.record_json import EncodedRecord, decision_bytes, encode_record, part_bytes
from tests.test_canonical import reference, scalars, values

floats = st.floats() | st.floats(min_value=-1e-3, max_value=1e-3)
facts = st.dictionaries(st.text(max_size=5), values, max_size=4)
issues = st.builds(
    Issue, st.text(max_size=5), st.text(max_size=5), st.text(max_size=5), st.none() | st.text(), st.none() | scalars
)


@st.composite
def decisions(draw):
    """A decision's to_dict, with drawn values where it holds more than our own names."""
    trace = [
        {
            "system": "p",
            "priority": 1,
            "status": "block",
            "reason": draw(st.text(max_size=5)),
            "facts": draw(facts),
            "rules": [],
            "unblocks_at": None,
        }
        for _ in range(draw(st.integers(0, 3)))
    ]
    changes = [{"type": "grace_started", "asset": "A", "at": "x", "original_size": draw(st.none() | floats)}]
    written = {
        "approved": False,
        "reason": draw(st.text(max_size=5)),
        "trace": trace,
        "state_changes": draw(st.sampled_from([[], changes])),
        "decision_time_ms": draw(floats | st.integers()),
        "request_id": draw(st.none() | st.text(max_size=5)),
    }
    if draw(st.booleans()):
        written["errors"] = [issue.to_dict() for issue in draw(st.lists(issues, max_size=2))]
    return written


def as_reference(value):
    got = reference(value)
    return None if isinstance(got, type) else got


@settings(max_examples=800)
@given(decisions())
def test_decision_bytes_are_the_reference_or_none_where_it_refuses(written):
    assert decision_bytes(written) == as_reference(written)


def record_of(written, request, state):
    return {
        "kind": "decision",
        "decision_id": "d1",
        "trace_id": "t1",
        "evaluated_at": "2026-03-12T09:00:00Z",
        "asset": "AAPL",
        "action": "open",
        "decision": "deny",
        "blocking_systems": ["p"],
        "override_applied": False,
        "policy": {"name": "default", "version": "1", "sha256": "0" * 64},
        "engine_version": "0.1.0",
        "request": request,
        "state": state,
        "state_source": "request",
        "decision_record": written,
        "decision_time_ms": 1.5,
    }


@settings(max_examples=800)
@given(decisions(), values, values, st.integers(0, 2**40), st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))
def test_a_sealed_record_is_the_reference_bytes_of_it_with_its_stamps(written, request, state, sequence, prev_hash):
    record = record_of(written, request, state)
    parts = {"request": part_bytes(request), "state": part_bytes(state), "decision_record": decision_bytes(written)}
    encoded = encode_record(record, parts)
    assert encoded == record
    full = {**record, "sequence": sequence + 1, "recorded_at": "2026-03-12T09:00:01Z", "prev_hash": prev_hash}
    full["batch"] = {"first": sequence + 1, "size": 1}
    expected = as_reference(full)
    try:
        (sealed,) = seal([encoded], sequence, prev_hash, "2026-03-12T09:00:01Z", "log")
    except Exception:  # refused: only what the reference refuses
        assert expected is None
    else:
        assert sealed.body.encode("utf-8") == expected
        if all(part is not None for part in parts.values()):
            assert encoded.runs is not None  # the fast path was taken, not the sink's own encoding


@pytest.mark.parametrize(
    ("where", "value"),
    [("fact", 1e-05), ("fact", float("nan")), ("fact", [2.5e-07]), ("size", 1e-05), ("size", float("inf")), ("time", 1e-06)],
)
def test_a_float_the_fast_encoder_writes_otherwise_gets_the_reference(where, value):
    written = {"trace": [{"facts": {}}], "state_changes": [{"original_size": None}], "decision_time_ms": 1.0}
    if where == "fact":
        written["trace"][0]["facts"]["x"] = value
    elif where == "size":
        written["state_changes"][0]["original_size"] = value
    else:
        written["decision_time_ms"] = value
    assert decision_bytes(written) == as_reference(written)


def test_an_encoded_record_pickles_with_its_runs():
    record = record_of({"trace": [], "state_changes": [], "decision_time_ms": 1.0}, {"a": 1}, None)
    parts = {key: part_bytes(record[key]) for key in ("request", "state", "decision_record")}
    encoded = encode_record(record, parts)
    copy = pickle.loads(pickle.dumps(encoded))
    assert (type(copy), copy, copy.runs) == (EncodedRecord, record, encoded.runs)
    (sealed,) = seal([copy], 0, "0" * 64, "2026-03-12T09:00:01Z", "log")
    assert json.loads(sealed.body)["request"] == {"a": 1}


# Every field of a decision that can hold a float or any value, and so is checked by
# `decision_bytes` rather than trusted: a new one must be checked there, then listed here.
CHECKED = {
    "ProtectionDecision.decision_time_ms",
    "ProtectionDecision.errors",
    "ProtectionResult.facts",
    "StateChange.original_size",
}


def test_every_open_or_float_field_of_a_decision_is_checked():
    found = set()
    for cls in (models.ProtectionDecision, models.ProtectionResult, models.StateChange):
        hints = typing.get_type_hints(cls, vars(models))
        names = msgspec.structs.fields(cls) if issubclass(cls, msgspec.Struct) else cls.__dataclass_fields__.values()
        for field in names:
            text = repr(hints[field.name])
            if "float" in text or "Any" in text or "Issue" in text:
                found.add(f"{cls.__name__}.{field.name}")
    assert found == CHECKED


def test_what_the_fast_checks_pass_as_is_is_json_the_reference_writes_the_same():
    written = {
        "trace": [{"facts": {"score": 0.288, "n": 3, "ok": True, "at": None, "nested": {"x": [1.5]}}}],
        "state_changes": [{"original_size": 0.0525}],
        "decision_time_ms": 3.6064,
        "errors": [Issue("c", "$", "m").to_dict()],
    }
    assert decision_bytes(written) == canonical_json(written).encode("utf-8")


@pytest.mark.parametrize("suffix", ["sqlite", "jsonl"])
def test_a_valid_request_with_tiny_floats_is_recorded_as_given_and_verifies(tmp_path, suffix):
    # a decided request's canonical JSON skips the walk (`checked_canonical_bytes`): its floats
    # under 1e-4, which orjson writes otherwise, must still reach the trail as the reference writes them
    from protection_rules import Engine
    from protection_rules.audit import open_audit

    request = {
        "request_id": "tiny",
        "asset": "XYZ",
        "action": "open",
        "current_date": "2026-03-20T12:00:00Z",
        "current_size": 0,
        "target_size": 1e-05,
        "current_score": 2.5e-07,
        "reason": "free-text with e- and 0.0000 in it",
        "state": {"events": [{"type": "close", "at": "2026-03-10T09:00:00Z", "size": 5e-06}]},
    }
    path = tmp_path / f"audit.{suffix}"
    with open_audit(path) as log, Engine.from_policy(audit=log) as engine:
        decision = engine.evaluate(request)
        assert not decision.errors
    with open_audit(path, mode="read") as log:
        assert log.verify().ok
        [record] = list(log.records())
    assert record["request"] == request
    assert record["state"]["events"][0]["size"] == 5e-06


class Side(enum.Enum):
    CLOSE = "close"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_id", uuid.UUID(int=7)),
        ("action", Side.CLOSE),
        ("reason", orjson.Fragment(b"1")),
        ("current_size", float("nan")),
        ("target_size", float("inf")),
    ],
    ids=["uuid", "enum", "fragment", "nan", "inf"],
)
def test_what_orjson_writes_but_the_reference_refuses_never_reaches_the_walk_free_path(tmp_path, field, value):
    # the walk is skipped only for a decided request: each of these must be refused by
    # validation, so that the record takes the checked way (the trail still verifies)
    from protection_rules import Engine
    from protection_rules.audit import open_audit

    request = {
        "request_id": "r",
        "asset": "AAPL",
        "action": "close",
        "current_date": "2026-03-12T07:00:00Z",
        "current_size": 0.05,
        "target_size": 0,
        field: value,
    }
    path = tmp_path / "audit.sqlite"
    with open_audit(path) as log, Engine.from_policy(audit=log) as engine:
        decision = engine.evaluate(request)
    assert decision.decision == "deny" and decision.errors
    with open_audit(path, mode="read") as log:
        assert log.verify().ok
