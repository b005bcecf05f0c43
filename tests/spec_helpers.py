"""Shared helpers for the semantics tests (golden cases, window tables, properties, side by side).

Kept out of conftest.py on purpose (someone else owns that file): import what you need.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from protection_rules import Engine
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


def deep_merge(base: Any, overrides: Any) -> Any:
    """`overrides` merged into a copy of `base`: mappings merge key by key, anything else replaces."""
    if isinstance(base, Mapping) and isinstance(overrides, Mapping):
        out = {key: copy.deepcopy(value) for key, value in base.items()}
        for key, value in overrides.items():
            out[key] = deep_merge(out[key], value) if key in out else copy.deepcopy(value)
        return out
    return copy.deepcopy(overrides)


class EngineCache:
    """One Engine per (policy file, overrides): each one owns a C rule network, so build them once.

    Policies with overrides are written as YAML files into `workdir` and loaded like any other
    policy file, so the test goes through the same loading path as production.
    """

    def __init__(self, workdir: Path):
        self._workdir = Path(workdir)
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def get(self, policy: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Engine:
        path = Path(policy) if policy is not None else DEFAULT_POLICY
        if not path.is_absolute():
            path = REPO / path
        key = json.dumps([str(path), overrides or {}], sort_keys=True)
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                if overrides:
                    document = yaml.safe_load(path.read_text(encoding="utf-8"))
                    merged = deep_merge(document, overrides)
                    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
                    target = self._workdir / f"policy-{digest}.yaml"
                    target.write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
                    engine = Engine.from_policy(target)
                else:
                    engine = Engine.from_policy(path)
                self._engines[key] = engine
            return engine

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()


def statuses(decision: Any) -> dict[str, str]:
    return {entry.system: entry.status for entry in decision.trace}


def trace_entry(decision: Any, system: str) -> Any:
    for entry in decision.trace:
        if entry.system == system:
            return entry
    raise AssertionError(f"no trace entry for {system}: {[e.system for e in decision.trace]}")


def same_value(seen: Any, wanted: Any) -> bool:
    """Equality with a relative tolerance for floats (advised sizes are products of powers)."""
    if isinstance(wanted, float) or isinstance(seen, float):
        if not isinstance(seen, (int, float)) or isinstance(seen, bool) or not isinstance(wanted, (int, float)):
            return False
        return math.isclose(seen, wanted, rel_tol=1e-9, abs_tol=1e-12)
    return seen == wanted and type(seen) is type(wanted)


def comparable(decision: Any) -> dict[str, Any]:
    """A decision as a dict without the per-call fields (trace and decision ids, timing)."""
    out = decision.to_dict()
    for key in ("trace_id", "decision_id", "decision_time_ms"):
        out.pop(key, None)
    return out
