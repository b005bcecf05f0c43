"""Shared helpers for the semantics tests (window tables, properties, side by side); the golden
cases run through the library's own case runner (protection_rules.testing).

Kept out of conftest.py on purpose (someone else owns that file): import what you need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protection_rules.timestamps import (
    MICROS_PER_DAY,
    MICROS_PER_SECOND,
    format_instant,
    parse_instant,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POLICY = REPO / "policies" / "default.yaml"
HIERARCHY = ("core_asset_immunity", "regime_override", "grace_period", "holding_period", "whipsaw_protection")
STATUSES = frozenset({"pass", "block", "overridden", "skipped", "not_applicable", "error"})

SECOND = MICROS_PER_SECOND
DAY = MICROS_PER_DAY


def at(text: str) -> int:
    """An ISO-8601 text as epoch microseconds (docs/semantics.md section 2)."""
    return parse_instant(text)


def iso(micros: int) -> str:
    return format_instant(micros)


def trace_entry(decision: Any, system: str) -> Any:
    for entry in decision.trace:
        if entry.system == system:
            return entry
    raise AssertionError(f"no trace entry for {system}: {[e.system for e in decision.trace]}")


def comparable(decision: Any) -> dict[str, Any]:
    """A decision as a dict without the per-call fields (trace and decision ids, timing)."""
    out = decision.to_dict()
    for key in ("trace_id", "decision_id", "decision_time_ms"):
        out.pop(key, None)
    return out


def walk_schema(node: Any, where: str = "#"):
    """Every (location, sub-schema) in a schema document, the location as a JSON pointer."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from walk_schema(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk_schema(value, f"{where}/{index}")
