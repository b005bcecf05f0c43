"""The shipped JSON Schemas, and requests checked against the request schema.

- every schema is itself a valid schema; the policy schema is closed and documented;
- a request round-trips through `ProtectionRequest` to its normalized form (UTC `Z` instants);
- invalid requests raise `RequestInvalid` with a stable code and JSON path;
- the fast validator gate (fastjsonschema) and jsonschema agree on arbitrary input.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from spec_helpers import walk_schema

from protection_rules.errors import RequestInvalid
from protection_rules.parsing import _fast_valid, _from_document, _parse_slowly, parse_request
from protection_rules.request_types import decode
from protection_rules.timestamps import TIMESTAMP_PATTERN
from protection_rules.validation import validator

REPO = Path(__file__).resolve().parent.parent
SCHEMA_FILES = sorted((REPO / "schemas").glob("*.json"))
POLICY_SCHEMA = json.loads((REPO / "schemas" / "policy.v1.schema.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------ the schemas themselves


def test_the_three_schemas_ship():
    assert {p.name for p in SCHEMA_FILES} >= {
        "policy.v1.schema.json",
        "request.v1.schema.json",
        "decision.v1.schema.json",
    }


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=[p.name for p in SCHEMA_FILES])
def test_schema_is_a_valid_schema(path):
    schema = json.loads(path.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft202012Validator  # `$schema` names 2020-12
    cls.check_schema(schema)
    assert schema["$id"].endswith(path.name)


def _is_object_schema(node: dict) -> bool:
    kind = node.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in node


def test_policy_schema_objects_are_closed():
    # A typo in a policy must never be silently ignored: every object refuses unknown keys;
    # `protections` takes any other (well-formed) name as a custom protection, itself closed.
    objects = [(where, node) for where, node in walk_schema(POLICY_SCHEMA) if _is_object_schema(node)]
    assert len(objects) >= 10  # root, metadata, protections, five blocks, bypass, a custom one, a condition
    for where, node in objects:
        if where == "#/properties/protections":
            assert node["additionalProperties"] == {"$ref": "#/$defs/condition_protection"}
            assert node["propertyNames"] == {"$ref": "#/$defs/protection_name"}
        else:
            assert node.get("additionalProperties") is False, where


def _resolve(node: dict) -> dict:
    ref = node.get("$ref")
    if ref is None:
        return node
    assert ref.startswith("#/$defs/")
    return POLICY_SCHEMA["$defs"][ref.removeprefix("#/$defs/")]


def _parameters():
    """(location, resolved schema) of every field a policy author writes in metadata and blocks."""
    props = POLICY_SCHEMA["properties"]
    for name, spec in props["metadata"]["properties"].items():
        yield f"metadata.{name}", _resolve(spec)
    for block, block_schema in props["protections"]["properties"].items():
        yield f"protections.{block}", block_schema
        for name, spec in block_schema["properties"].items():
            yield f"protections.{block}.{name}", _resolve(spec)
            for sub, sub_spec in spec.get("properties", {}).items():
                yield f"protections.{block}.{name}.{sub}", _resolve(sub_spec)


def test_every_policy_parameter_has_a_description():
    found = list(_parameters())
    assert len(found) >= 30
    for where, spec in found:
        assert isinstance(spec.get("description"), str) and spec["description"].strip(), where


def test_every_numeric_policy_parameter_is_bounded():
    # Ranges are what make a typo like `days: 500000` an error rather than a policy.
    for where, spec in _parameters():
        if spec.get("type") in ("integer", "number"):
            assert "minimum" in spec or "exclusiveMinimum" in spec, where
            assert "maximum" in spec or "exclusiveMaximum" in spec, where


def test_protection_names_agree_across_schema_and_registry():
    from protection_rules.protections import REGISTRY

    props, defs = POLICY_SCHEMA["properties"], POLICY_SCHEMA["$defs"]
    assert set(props["protections"]["properties"]) == set(REGISTRY)
    # a built-in or a custom protection: any well-formed name (the semantic pass checks it)
    assert props["hierarchy"]["items"] == defs["bypass_list"]["items"] == {"$ref": "#/$defs/protection_name"}
    assert set(defs["protection_name"]["examples"]) == set(REGISTRY)
    assert all(re.match(defs["protection_name"]["pattern"], name) for name in REGISTRY)


def test_condition_facts_agree_across_schema_and_catalogue():
    from protection_rules.fact_catalogue import FACTS

    assert POLICY_SCHEMA["$defs"]["condition"]["properties"]["fact"]["enum"] == [spec.name for spec in FACTS]


# ------------------------------------------------------------------------ request round trip

FULL = {
    "request_id": "r-1",
    "asset": "ETH-USD",
    "action": "close",
    "current_date": "2026-03-10T10:00:00+01:00",
    "current_size": 10,
    "target_size": 0,
    "current_score": 0.4,
    "target_score": 0.1,
    "reason": "score fell below the threshold",
    "position_entry_date": "2026-03-01",
    "position_entry_score": 0.8,
    "position_entry_size": 10.5,
    "portfolio_allocation": 0.05,
    "active_positions": 7,
    "metadata": {"run": 3, "tags": ["a", "b"], "nested": {"x": None}},
    "regime": {
        "changed": True,
        "severity": "high",
        "old_regime": "bull",
        "new_regime": "bear",
        "change_date": "2026-03-09T23:00:00-02:00",
    },
    "state": {
        "core": {"designated_at": "2026-01-01", "expires_at": "2026-06-01T00:00:00.25Z"},
        "grace": {"started_at": "2026-03-08T12:00:00", "original_size": 12},
        "events": [{"type": "open", "at": "2026-03-01T00:00:00Z", "size": 10.5}],
        "last_override_at": "2026-02-01T01:00:00+01:00",
    },
}

ROUND_TRIPS = [
    (
        "minimal-bare-date",
        {"asset": "BTC", "action": "open", "current_date": "2026-03-10"},
        {"asset": "BTC", "action": "open", "current_date": "2026-03-10T00:00:00Z"},
    ),
    (
        "offset-to-utc",
        {"asset": "BTC", "action": "increase", "current_date": "2026-03-10T10:00:00+01:00"},
        {"asset": "BTC", "action": "increase", "current_date": "2026-03-10T09:00:00Z"},
    ),
    (
        "every-field",
        FULL,
        {
            **FULL,
            "current_date": "2026-03-10T09:00:00Z",
            "position_entry_date": "2026-03-01T00:00:00Z",
            "regime": {**FULL["regime"], "change_date": "2026-03-10T01:00:00Z"},
            "state": {
                "core": {"designated_at": "2026-01-01T00:00:00Z", "expires_at": "2026-06-01T00:00:00.250000Z"},
                "grace": {"started_at": "2026-03-08T12:00:00Z", "original_size": 12},
                "events": [{"type": "open", "at": "2026-03-01T00:00:00Z", "size": 10.5}],
                "last_override_at": "2026-02-01T00:00:00Z",
            },
        },
    ),
    (
        # null means absent; an absent severity means `normal`; events come back in time order
        # (events at the same instant keep their given order)
        "nulls-defaults-and-event-order",
        {
            "asset": "sol/usd",
            "action": "decrease",
            "current_date": "2026-03-10T09:00",
            "current_size": None,
            "reason": None,
            "metadata": None,
            "request_id": None,
            "regime": {"changed": False, "old_regime": None, "change_date": None},
            "state": {
                "core": None,
                "grace": None,
                "last_override_at": None,
                "events": [
                    {"type": "close", "at": "2026-03-05T00:00:00Z"},
                    {"type": "open", "at": "2026-03-01T00:00:00Z", "size": None},
                    {"type": "open", "at": "2026-03-05T00:00:00Z", "size": 2},
                ],
            },
        },
        {
            "asset": "sol/usd",
            "action": "decrease",
            "current_date": "2026-03-10T09:00:00Z",
            "regime": {"changed": False, "severity": "normal"},
            "state": {
                "events": [
                    {"type": "open", "at": "2026-03-01T00:00:00Z"},
                    {"type": "close", "at": "2026-03-05T00:00:00Z"},
                    {"type": "open", "at": "2026-03-05T00:00:00Z", "size": 2},
                ],
            },
        },
    ),
    (
        # a timestamp equal to current_date is not "after" it; expires_at may lie in the future
        "boundaries",
        {
            "asset": "A1",
            "action": "close",
            "current_date": "2026-03-10T09:00:00Z",
            "position_entry_date": "2026-03-10T10:00:00+01:00",
            "state": {"core": {"designated_at": "2026-03-10T09:00:00Z", "expires_at": "2027-01-01"}},
        },
        {
            "asset": "A1",
            "action": "close",
            "current_date": "2026-03-10T09:00:00Z",
            "position_entry_date": "2026-03-10T09:00:00Z",
            "state": {"core": {"designated_at": "2026-03-10T09:00:00Z", "expires_at": "2027-01-01T00:00:00Z"}},
        },
    ),
]


@pytest.mark.parametrize(("given_", "normalized"), [c[1:] for c in ROUND_TRIPS], ids=[c[0] for c in ROUND_TRIPS])
def test_request_round_trip(given_, normalized):
    original = copy.deepcopy(given_)
    out = parse_request(given_).to_dict()
    assert out == normalized
    assert given_ == original  # parsing does not mutate its input
    # the normalized form is a fixed point, and is itself a valid request
    assert parse_request(out).to_dict() == out
    validator("request").validate(out)


@pytest.mark.parametrize("severity", [None, "normal"])
def test_null_severity_means_normal(severity):
    # The request schema says "optional fields may be null, which means absent", and an absent
    # severity means `normal` (docs/semantics.md section 4); `severity` is typed string-or-null.
    data = req(regime={"changed": True, "severity": severity})
    assert parse_request(data).to_dict()["regime"] == {"changed": True, "severity": "normal"}


def test_request_instants_are_epoch_microseconds():
    request = parse_request(FULL)
    assert request.current_date == 1_773_133_200_000_000  # 2026-03-10T09:00:00Z
    assert request.regime.change_date == request.current_date - 8 * 3600 * 1_000_000
    assert request.state.core.expires_at % 1_000_000 == 250_000


# ------------------------------------------------------------------------ invalid requests

BASE = {"asset": "BTC", "action": "close", "current_date": "2026-03-10T09:00:00Z"}
NOW = BASE["current_date"]
LATER = "2026-03-10T09:00:01Z"


def req(**fields: Any) -> dict[str, Any]:
    """BASE with fields set; a value of `...` removes the field."""
    out = {**BASE, **fields}
    return {k: v for k, v in out.items() if v is not ...}


def event(kind: str, at: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "at": at, **extra}


INVALID = [
    # --- shape (JSON Schema)
    ("unknown-field", req(colour="red"), [("schema-unknown-field", "$.colour")]),
    ("unknown-state-field", req(state={"cores": {"designated_at": NOW}}), [("schema-unknown-field", "$.state.cores")]),
    (
        "unknown-event-field",
        req(state={"events": [event("open", NOW, qty=1)]}),
        [("schema-unknown-field", "$.state.events[0].qty")],
    ),
    ("missing-asset", req(asset=...), [("schema-required", "$.asset")]),
    ("missing-regime-changed", req(regime={"severity": "high"}), [("schema-required", "$.regime.changed")]),
    ("missing-grace-start", req(state={"grace": {"original_size": 1}}), [("schema-required", "$.state.grace.started_at")]),
    ("asset-not-string", req(asset=5), [("schema-type", "$.asset")]),
    ("size-as-string", req(current_size="10"), [("schema-type", "$.current_size")]),
    ("bool-for-number", req(current_size=True), [("schema-type", "$.current_size")]),
    ("bool-for-integer", req(active_positions=False), [("schema-type", "$.active_positions")]),
    ("fraction-for-integer", req(active_positions=2.5), [("schema-type", "$.active_positions")]),
    ("changed-not-bool", req(regime={"changed": "yes"}), [("schema-type", "$.regime.changed")]),
    ("events-not-list", req(state={"events": {"type": "open"}}), [("schema-type", "$.state.events")]),
    ("action-misspelt", req(action="clsoe"), [("schema-enum", "$.action")]),
    ("severity-misspelt", req(regime={"changed": True, "severity": "critcal"}), [("schema-enum", "$.regime.severity")]),
    ("event-type", req(state={"events": [event("buy", NOW)]}), [("schema-enum", "$.state.events[0].type")]),
    ("negative-size", req(current_size=-1), [("schema-range", "$.current_size")]),
    ("asset-empty", req(asset=""), [("schema-pattern", "$.asset")]),
    ("asset-space", req(asset="BTC USD"), [("schema-pattern", "$.asset")]),
    ("date-with-space", req(current_date="2026-03-10 09:00"), [("schema-pattern", "$.current_date")]),
    # a trailing newline is not part of a timestamp or a symbol (JSON Schema's `$` is end of text)
    ("date-trailing-newline", req(current_date="2026-03-10\n"), [("schema-pattern", "$.current_date")]),
    ("asset-trailing-newline", req(asset="BTC\n"), [("schema-pattern", "$.asset")]),
    ("event-at-shape", req(state={"events": [event("open", "10/03/2026")]}), [("schema-pattern", "$.state.events[0].at")]),
    ("reason-too-long", req(reason="x" * 2001), [("schema-length", "$.reason")]),
    ("request-id-empty", req(request_id=""), [("schema-length", "$.request_id")]),
    # --- numbers JSON cannot carry (a Python caller can)
    ("nan-score", req(current_score=float("nan")), [("number-not-finite", "$.current_score")]),
    ("inf-size", req(current_size=float("inf")), [("number-not-finite", "$.current_size")]),
    (
        "nan-event-size",
        req(state={"events": [event("open", NOW, size=float("nan"))]}),
        [("number-not-finite", "$.state.events[0].size")],
    ),
    (
        "nan-original-size",
        req(state={"grace": {"started_at": NOW, "original_size": float("nan")}}),
        [("number-not-finite", "$.state.grace.original_size")],
    ),
    ("nan-in-metadata", req(metadata={"x": float("nan")}), [("metadata-not-json", "$.metadata")]),
    # beyond +/-1e15 float arithmetic stops being exact
    ("huge-size", req(target_size=1e16), [("number-out-of-range", "$.target_size")]),
    # --- impossible instants
    ("impossible-current-date", req(current_date="2026-02-30"), [("timestamp-invalid", "$.current_date")]),
    ("not-a-leap-year", req(position_entry_date="2026-02-29"), [("timestamp-invalid", "$.position_entry_date")]),
    ("year-3000", req(current_date="3000-01-01"), [("timestamp-invalid", "$.current_date")]),
    ("hour-24", req(state={"events": [event("open", "2026-03-01T24:00:00Z")]}), [("timestamp-invalid", "$.state.events[0].at")]),
    # --- instants after current_date (docs/semantics.md section 2)
    ("future-entry", req(position_entry_date=LATER), [("timestamp-future", "$.position_entry_date")]),
    # 09:30 at UTC-1 is 10:30Z, after 09:00Z
    (
        "future-entry-by-offset",
        req(position_entry_date="2026-03-10T09:30:00-01:00"),
        [("timestamp-future", "$.position_entry_date")],
    ),
    # the path names the offending event by its index in the request
    (
        "future-event",
        req(state={"events": [event("open", "2026-03-01"), event("close", LATER), event("open", NOW)]}),
        [("timestamp-future", "$.state.events[1].at")],
    ),
    ("future-grace", req(state={"grace": {"started_at": LATER}}), [("timestamp-future", "$.state.grace.started_at")]),
    ("future-core", req(state={"core": {"designated_at": LATER}}), [("timestamp-future", "$.state.core.designated_at")]),
    ("future-override", req(state={"last_override_at": LATER}), [("timestamp-future", "$.state.last_override_at")]),
    ("future-regime-change", req(regime={"changed": True, "change_date": LATER}), [("timestamp-future", "$.regime.change_date")]),
    # --- a designation must end after it starts
    (
        "expires-equal",
        req(state={"core": {"designated_at": "2026-03-01", "expires_at": "2026-03-01T00:00:00Z"}}),
        [("timestamp-order", "$.state.core.expires_at")],
    ),
    (
        "expires-before",
        req(state={"core": {"designated_at": "2026-03-01", "expires_at": "2026-02-01"}}),
        [("timestamp-order", "$.state.core.expires_at")],
    ),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_request(data, expected):
    with pytest.raises(RequestInvalid) as caught:
        parse_request(data, source="req.json")
    assert [(i.code, i.path) for i in caught.value.issues] == expected
    assert all(i.file == "req.json" for i in caught.value.issues)


@pytest.mark.parametrize("data", [[BASE], "BTC", None, 42])
def test_request_must_be_an_object(data):
    with pytest.raises(RequestInvalid) as caught:
        parse_request(data)
    assert [(i.code, i.path) for i in caught.value.issues] == [("schema-type", "$")]


def test_invalid_request_messages_help():
    def message(data):
        with pytest.raises(RequestInvalid) as caught:
            parse_request(data)
        return caught.value.issues[0].message

    assert "did you mean `close`?" in message(req(action="clsoe"))
    assert "did you mean `core`?" in message(req(state={"cores": {"designated_at": NOW}}))
    assert "boolean" in message(req(current_size=True))
    assert "`2026-03-10T09:00:01Z` is after `current_date` `2026-03-10T09:00:00Z`" in message(req(position_entry_date=LATER))
    assert "2026-02-30" in message(req(current_date="2026-02-30"))


def test_every_mistake_of_a_kind_is_reported():
    data = req(asset=5, action="sell", colour="red")
    with pytest.raises(RequestInvalid) as caught:
        parse_request(data)
    assert sorted((i.code, i.path) for i in caught.value.issues) == [
        ("schema-enum", "$.action"),
        ("schema-type", "$.asset"),
        ("schema-unknown-field", "$.colour"),
    ]


# ------------------------------------------------------------------------ fast gate vs jsonschema

_ANY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
_STAMP = st.sampled_from(
    [
        "2026-03-10",
        "2026-03-10T09:00:00Z",
        "2026-03-10T09:00:00.5+01:00",
        "2026-03-10T09:00",
        "2026-3-10",
        "2026-03-10 09:00",
        "2026-03-10\n",
        "2026-02-30",
        "",
        "x",
    ]
) | st.from_regex(TIMESTAMP_PATTERN, fullmatch=True)
_NUMBER = st.one_of(
    st.none(), st.integers(-5, 5), st.integers(0, 10**20), st.floats(), st.floats(0, 1e6), st.booleans(), st.just("1")
)


def _maybe(strategy, anything=_ANY, odds=12):
    """Mostly a plausible value, about once in `odds` draws anything at all."""
    return st.sampled_from([False] * (odds - 1) + [True]).flatmap(lambda wild: anything if wild else strategy)


_EVENT = _maybe(
    st.fixed_dictionaries(
        {"type": _maybe(st.sampled_from(["open", "close", "hold"])), "at": _maybe(_STAMP)},
        optional={"size": _maybe(_NUMBER), "extra": _ANY},
    )
)
_STATE = _maybe(
    st.fixed_dictionaries(
        {},
        optional={
            "core": _maybe(
                st.none()
                | st.fixed_dictionaries({"designated_at": _maybe(_STAMP)}, optional={"expires_at": _maybe(st.none() | _STAMP)})
            ),
            "grace": _maybe(
                st.none() | st.fixed_dictionaries({"started_at": _maybe(_STAMP)}, optional={"original_size": _maybe(_NUMBER)})
            ),
            "events": _maybe(st.none() | st.lists(_EVENT, max_size=3)),
            "last_override_at": _maybe(st.none() | _STAMP),
        },
    )
)
_REGIME = _maybe(
    st.none()
    | st.fixed_dictionaries(
        {"changed": _maybe(st.booleans())},
        optional={
            "severity": _maybe(st.sampled_from([None, "normal", "high", "critical", "severe"])),
            "old_regime": _maybe(st.none() | st.text(max_size=5)),
            "new_regime": _maybe(st.none() | st.text(max_size=5)),
            "change_date": _maybe(st.none() | _STAMP),
        },
    )
)
_REQUEST = st.fixed_dictionaries(
    {
        "asset": _maybe(
            st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,5}", fullmatch=True),
            _ANY | st.sampled_from(["a b", "", "-x", "x" * 65]),
        ),
        "action": _maybe(st.sampled_from(["open", "close", "increase", "decrease", "Close"])),
        "current_date": _maybe(_STAMP),
    },
    optional={
        **{
            name: _maybe(_NUMBER)
            for name in (
                "current_size",
                "target_size",
                "current_score",
                "target_score",
                "position_entry_score",
                "position_entry_size",
                "portfolio_allocation",
                "active_positions",
            )
        },
        "request_id": _maybe(st.none() | st.text(min_size=1, max_size=3), _ANY | st.just("")),
        "reason": _maybe(st.none() | st.text(max_size=5)),
        "position_entry_date": _maybe(st.none() | _STAMP),
        "metadata": _maybe(st.none() | st.dictionaries(st.text(max_size=3), _ANY, max_size=2)),
        "regime": _REGIME,
        "state": _STATE,
    },
)
# now and then an unknown field, now and then not a request-shaped value at all
REQUESTS = _maybe(
    _maybe(_REQUEST, st.tuples(_REQUEST, st.text(max_size=12), _ANY).map(lambda t: {**t[0], t[1]: t[2]}), odds=8),
    odds=10,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUESTS)
# JSON Schema's `$` (ECMA-262) does not match before a trailing newline; Python's `re` does.
@example({"asset": "BTC", "action": "open", "current_date": "2026-03-10\n"})
def test_fast_gate_agrees_with_jsonschema(data):
    assert _fast_valid(data) == validator("request").is_valid(data)


def _typed(data: Any) -> Any:
    """The request by the typed pass alone (request_types.py), or None where it steps aside."""
    try:
        return _from_document(decode(data)) if isinstance(data, dict) else None
    except (msgspec.ValidationError, ValueError):
        return None


def _slowly(data: Any) -> Any:
    try:
        return _parse_slowly(data, None)
    except RequestInvalid:
        return None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUESTS)
@example({"asset": "BTC", "action": "open", "current_date": "2026-03-10\n"})
@example({"asset": "BTC", "action": "open", "current_date": "2026-03-10", "current_score": math.nan})
@example({"asset": "BTC", "action": "open", "current_date": "2026-03-10", "current_size": 1e15, "target_size": 1e15 + 1})
@example({"asset": "BTC", "action": "open", "current_date": "2026-03-10", "active_positions": 3.0})
@example(
    {"asset": "BTC", "action": "open", "current_date": "2026-03-10", "state": {"events": [{"type": "open", "at": "2026-03-11"}]}}
)
def test_typed_pass_takes_only_what_the_schema_and_checks_take_and_reads_it_alike(data):
    typed, slow = _typed(data), _slowly(data)
    if typed is not None:
        assert validator("request").is_valid(data)
        assert typed == slow
    elif slow is not None:
        # all it leaves to the slow way among valid requests: an integral float as an integer
        assert type(data.get("active_positions")) is float, data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUESTS)
def test_from_dict_fails_closed(data):
    # Whatever comes in: a request, or RequestInvalid with at least one issue; never another error.
    try:
        request = parse_request(data)
    except RequestInvalid as exc:
        assert exc.issues
        return
    out = request.to_dict()
    validator("request").validate(out)
    assert parse_request(out) == request
    for value in (request.current_size, request.current_score, request.target_size):
        assert value is None or math.isfinite(value)
