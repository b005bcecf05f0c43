"""JSON as durable-rules' parser reads it, for rulesets (compiler.py) and facts (network.py).

Its parser refuses a number whose exponent follows the digits directly (`1e-05`, error 204)
but reads `1.0e-05`, and Python writes very small and very large floats in the first form. The
rewrite skips strings, since asset symbols (`BRK:1E5`) may look like numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
# ~8x cheaper than json's, for the one fact of every decision; it writes NaN and infinity as
# null, so a `null` in its output sends the fact to `engine_json`, which refuses them
_FAST_ENCODE = msgspec.json.Encoder().encode
_EXPONENT = re.compile(r"\d[eE]")
_BARE_EXPONENT_OR_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|(?<=[:,\[])(-?\d+)(?=[eE])')


def engine_json(value: Any) -> str:
    """Compact JSON of `value` with every bare exponent given a `.0`; ValueError for NaN or infinity."""
    text = _ENCODE(value)
    if _EXPONENT.search(text) is None:  # the usual case, and a cheap test on the hot path
        return text
    return _BARE_EXPONENT_OR_STRING.sub(_with_dot, text)


# msgspec writes a float in this range, and zero, without an exponent (a test pins it); only a
# float outside it can need the rewrite, so the search over the whole text runs only then
_PLAIN_LOW, _PLAIN_HIGH = 1e-4, 1e15
_NEVER_EXPONENT = (str, bool, int)


def fact_json(fact: Mapping[str, Any], floats: Iterable[str] | None = None) -> str:
    """`engine_json` of a fact: a flat object of declared fields, none of them null (network.py
    checks that first). Same values, same ValueError for NaN or infinity; not always the same
    spelling (`1e-05` may come out as `0.00001`), which the rule network reads alike.

    `floats`: the only keys that can hold a float (network.py checks the types first), else
    every value is looked at."""
    data = _FAST_ENCODE(fact)
    if b"null" in data:  # NaN, infinity or a text holding `null`: let json tell them apart
        return engine_json(fact)
    text = data.decode("utf-8")
    for value in fact.values() if floats is None else map(fact.get, floats):
        if value.__class__ is float:
            if value and not _PLAIN_LOW <= abs(value) < _PLAIN_HIGH:
                break
        elif value is not None and value.__class__ not in _NEVER_EXPONENT:
            break  # a subclass: its text is not ours to predict
    else:
        return text
    if _EXPONENT.search(text) is None:
        return text
    return _BARE_EXPONENT_OR_STRING.sub(_with_dot, text)


def _with_dot(match: re.Match[str]) -> str:
    return match.group(0) if match.group(1) is None else match.group(1) + ".0"
