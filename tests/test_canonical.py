"""One canonical JSON for every hash, and the hashes already stored do not change.

The policy sha256 and the audit record hashes were taken with the same rules before they were
one function: the shipped policy's hash below is the one its golden decisions and the README
name, and the version 1 log under tests/audit_v1/ was written by an earlier engine.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protection_rules.audit import open_audit
from protection_rules.canonical import canonical_bytes, canonical_json, checked_canonical_bytes, content_hash, sha256_hex
from protection_rules.policy import load_policy

ROOT = Path(__file__).resolve().parent.parent
V1_LOG = ROOT / "tests" / "audit_v1" / "audit.jsonl"
DEFAULT_POLICY_SHA256 = "0183b96819be093b73ad049a8a6e5bdb1178615b1fde83b92fad3b955f2c0d3b"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"b": 1, "a": [1, 2.5, None, True]}, '{"a":[1,2.5,null,true],"b":1}'),
        ({"z": {"y": 1, "x": 2}}, '{"z":{"x":2,"y":1}}'),
        ({"é": "ü", "a": "\n"}, '{"a":"\\n","é":"ü"}'),  # UTF-8 as it is; control characters escaped
        (1.0, "1.0"),  # Python's number form, not RFC 8785's `1`
        (1e16, "1e+16"),
    ],
)
def test_canonical_json_rules(value, text):
    assert canonical_json(value) == text


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"x": [float("-inf")]}])
def test_canonical_json_refuses_non_finite_numbers(value):
    with pytest.raises(ValueError):
        canonical_json(value)


def test_sha256_of_text_is_of_its_utf8_bytes():
    # sha256("abc"), FIPS 180-2 appendix B.1
    assert sha256_hex("abc") == sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_the_shipped_policy_hash_is_unchanged():
    assert load_policy(ROOT / "policies" / "default.yaml").sha256 == DEFAULT_POLICY_SHA256


def test_a_stored_version_1_chain_still_hashes_and_verifies(tmp_path):
    lines = V1_LOG.read_text(encoding="utf-8").splitlines()
    for line in lines:
        record = json.loads(line)
        assert canonical_json(record) == line  # each stored line is the canonical text
        assert content_hash({k: v for k, v in record.items() if k != "hash"}) == record["hash"]
        assert record["policy"]["sha256"] == DEFAULT_POLICY_SHA256
    copy = tmp_path / "audit.jsonl"
    copy.write_bytes(V1_LOG.read_bytes())
    with open_audit(copy, mode="read") as log:
        result = log.verify()
    assert (result.ok, result.count) == (True, len(lines))


# ------------------------------------------------ the fast encoder writes the reference's bytes


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 2


class Text(str):
    pass


# every kind of value either encoder might meet: floats of every magnitude (those under 1e-4,
# NaN and infinities included), ints past 64 bits, any text (lone surrogates too), keys that
# are not strings, tuples, and types one encoder takes and the other refuses
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.floats(min_value=-1e-3, max_value=1e-3)
    | st.text()
    | st.sampled_from([Colour.RED, Level.HIGH, Text("sub"), uuid.UUID(int=7), datetime(2026, 1, 1, tzinfo=UTC)])
)
keys = st.text() | st.integers(-3, 3) | st.just(Text("k"))
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(keys, inner, max_size=4)
        | st.dictionaries(st.text(), inner, max_size=4).map(OrderedDict)
    ),
    max_leaves=25,
)


def reference(value):
    """What the hash chain was built on: the canonical text, UTF-8 encoded; or the error it raises."""
    try:
        return canonical_json(value).encode("utf-8")
    except (TypeError, ValueError) as exc:
        return type(exc)


def fast(value):
    try:
        return canonical_bytes(value)
    except (TypeError, ValueError) as exc:
        return type(exc)


@settings(max_examples=1500)
@given(values)
def test_canonical_bytes_is_the_reference_byte_for_byte(value):
    expected = reference(value)
    got = fast(value)
    if isinstance(expected, type):  # refused: refused too, as the same kind of error
        assert isinstance(got, type) and (issubclass(got, expected) or issubclass(expected, got))
    else:
        assert got == expected


@pytest.mark.parametrize(
    "value",
    [1e-05, 5e-324, -1e-07, float("nan"), [float("inf")], {"x": Colour.RED}, {"u": uuid.UUID(int=1)}, 2**64, {1: "a"}, "\ud800"],
)
def test_values_orjson_writes_otherwise_get_the_reference(value):
    assert fast(value) == reference(value)


# what `checked_canonical_bytes` is given: JSON types with no NaN or infinity (a validated
# request, a state read from one), with floats of every finite magnitude and text holding the
# marks it looks for
checked_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1e-3, max_value=1e-3)
    | st.text()
    | st.sampled_from(["0.00001", "1e-6", "free-text", "café"])
)
checked_values = st.recursive(
    checked_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=1500)
@given(checked_values)
def test_checked_canonical_bytes_is_the_reference_byte_for_byte(value):
    assert checked_canonical_bytes(value) == canonical_json(value).encode("utf-8")


@pytest.mark.parametrize("value", [1e-05, 9.9e-05, -5e-05, 1e-06, 2.5e-07, 5e-324, {"size": [0.00002]}])
def test_checked_canonical_bytes_writes_small_floats_as_the_reference(value):
    assert checked_canonical_bytes(value) == canonical_json(value).encode("utf-8")


def test_a_cycle_is_refused_as_the_reference_refuses_it():
    loop: list = []
    loop.append(loop)
    assert fast(loop) is reference(loop) is ValueError
