"""One canonical JSON for every hash, and the hashes already stored do not change.

The policy sha256 and the audit record hashes were taken with the same rules before they were
one function: the shipped policy's hash below is the one its golden decisions and the README
name, and the version 1 log under tests/audit_v1/ was written by an earlier engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protection_rules.audit import open_audit
from protection_rules.canonical import canonical_json, content_hash, sha256_hex
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
