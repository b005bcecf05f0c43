"""Canonical JSON: the one serialisation every hash in the package is taken over.

The policy `sha256` and every audit record `hash` are the sha256 of this text, so its rules are
frozen (changing one would change every stored hash): keys sorted by code point, no whitespace
(`,` and `:` separators), UTF-8 with non-ASCII characters as they are (no `\\u` escapes), and no
NaN or infinity (a ValueError). Numbers are written as Python writes them (`1.0`, `1e+16`).

It is not RFC 8785 (JCS), which writes numbers as ECMAScript does (`1`, `10000000000000000`)
and sorts keys by UTF-16 code unit: adopting it would need a version field on every hash so
that existing logs and policy hashes still verify, and nothing outside this package checks the
hashes today.

`canonical_bytes` writes the same text, UTF-8 encoded, ~3x faster: orjson writes it whenever it
is known to agree byte for byte, which a walk over the value checks first (tests/test_canonical.py
holds the two to that with a property test); otherwise the reference encoder writes it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

_INFINITY = float("inf")
# datetimes, dataclasses and subclasses of str/int/dict/list go to `default`, which refuses them
_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_WALK_LIMIT = 100_000  # containers; past it (or in a cycle) the reference encoder decides


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed and stored; raises ValueError/TypeError if not JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_bytes(value: Any) -> bytes:
    """`canonical_json(value)` encoded as UTF-8, byte for byte; raises as it does (ValueError for
    a lone surrogate, as encoding it would)."""
    if _orjson_agrees(value):
        try:
            return orjson.dumps(value, default=_refuse, option=_ORJSON_OPTIONS)
        except orjson.JSONEncodeError:
            pass  # an int past 64 bits, a key that is not a string, a lone surrogate: the reference decides
    return canonical_json(value).encode("utf-8")


def checked_canonical_bytes(value: Any) -> bytes:
    """`canonical_bytes(value)` for a value already checked to hold no NaN or infinity and no
    value orjson writes but the reference refuses (a UUID, an Enum, an orjson Fragment): a
    request that passed validation, a state read from one; without the walk over it.

    Anything else that is not JSON makes orjson raise with these options, and the reference
    decides. What is left where the two differ is a float under 1e-4, which leaves `0.0000` or
    `e-` in orjson's text (`0.00001`, `1e-6`): text holding either, even inside a string, goes
    to the reference encoder too.
    """
    try:
        written = orjson.dumps(value, default=_refuse, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return canonical_bytes(value)
    if b"0.0000" in written or b"e-" in written:
        return canonical_bytes(value)
    return written


def _orjson_agrees(value: Any) -> bool:
    """Whether orjson writes `value` exactly as `canonical_json` does, as far as types tell.

    orjson writes a float under 1e-4 other than zero differently (`0.00001`, `1e-6` for `1e-05`,
    `1e-06`), NaN and infinity as `null` (the reference refuses them), and encodes some types the
    reference refuses (UUID, Enum, Fragment): so only the exact JSON types pass, floats checked.
    """
    kind = type(value)
    if kind is not dict and kind is not list and kind is not tuple:
        return _scalar_agrees(value)
    # only containers go on the stack: each scalar is checked where it is found
    stack = [value]
    pop, push = stack.pop, stack.append
    containers = 0
    while stack:
        item = pop()
        containers += 1
        if containers > _WALK_LIMIT:
            return False
        for element in item.values() if type(item) is dict else item:
            kind = type(element)
            if kind is str or kind is int or kind is bool or element is None:
                continue
            if kind is dict or kind is list or kind is tuple:
                push(element)
            elif kind is not float or not (1e-4 <= abs(element) < _INFINITY or element == 0.0):  # NaN fails both
                return False
    return True


def _scalar_agrees(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    return kind is float and (1e-4 <= abs(value) < _INFINITY or value == 0.0)


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def sha256_hex(data: str | bytes) -> str:
    """sha256 (hex) of `data`, text encoded as UTF-8 (a lone surrogate is a ValueError)."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def content_hash(value: Any) -> str:
    """sha256 (hex) of `value`'s canonical JSON."""
    return hashlib.sha256(canonical_bytes(value)).hexdigest()
