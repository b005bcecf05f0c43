"""JSON as durable-rules' parser reads it, for rulesets (compiler.py) and facts (network.py).

Its parser refuses a number whose exponent follows the digits directly (`1e-05`, error 204)
but reads `1.0e-05`, and Python writes very small and very large floats in the first form. The
rewrite skips strings, since asset symbols (`BRK:1E5`) may look like numbers.
"""

from __future__ import annotations

import json
import re
from typing import Any

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_EXPONENT = re.compile(r"\d[eE]")
_BARE_EXPONENT_OR_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|(?<=[:,\[])(-?\d+)(?=[eE])')


def engine_json(value: Any) -> str:
    """Compact JSON of `value` with every bare exponent given a `.0`; ValueError for NaN or infinity."""
    text = _ENCODE(value)
    if _EXPONENT.search(text) is None:  # the usual case, and a cheap test on the hot path
        return text
    return _BARE_EXPONENT_OR_STRING.sub(_with_dot, text)


def _with_dot(match: re.Match[str]) -> str:
    return match.group(0) if match.group(1) is None else match.group(1) + ".0"
