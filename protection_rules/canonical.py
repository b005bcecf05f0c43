"""Canonical JSON: the one serialisation every hash in the package is taken over.

The policy `sha256` and every audit record `hash` are the sha256 of this text, so its rules are
frozen (changing one would change every stored hash): keys sorted by code point, no whitespace
(`,` and `:` separators), UTF-8 with non-ASCII characters as they are (no `\\u` escapes), and no
NaN or infinity (a ValueError). Numbers are written as Python writes them (`1.0`, `1e+16`).

It is not RFC 8785 (JCS), which writes numbers as ECMAScript does (`1`, `10000000000000000`)
and sorts keys by UTF-16 code unit: adopting it would need a version field on every hash so
that existing logs and policy hashes still verify, and nothing outside this package checks the
hashes today.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed and stored; raises ValueError/TypeError if not JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(data: str | bytes) -> str:
    """sha256 (hex) of `data`, text encoded as UTF-8 (a lone surrogate is a ValueError)."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def content_hash(value: Any) -> str:
    """sha256 (hex) of `value`'s canonical JSON."""
    return sha256_hex(canonical_json(value))
