"""The query side shared by both backends: the record filter (as SQL for SQLite, as a predicate
for JSON Lines) and the stats summary over the filtered records."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..timestamps import format_instant, parse_instant


@dataclass(frozen=True, slots=True)
class _Filter:
    """Every given filter must hold. `since`/`until` are ISO timestamps compared with
    `evaluated_at` as the half-open range [since, until); a record without `evaluated_at` never
    matches a time filter. `blocking_system` matches a record listing that protection."""

    asset: str | None = None
    decision: str | None = None
    blocking_system: str | None = None
    policy_version: str | None = None
    since: int | None = None
    until: int | None = None
    trace_id: str | None = None

    @classmethod
    def build(
        cls,
        asset: str | None = None,
        decision: str | None = None,
        blocking_system: str | None = None,
        policy_version: str | None = None,
        since: str | None = None,
        until: str | None = None,
        trace_id: str | None = None,
    ) -> _Filter:
        if decision not in (None, "approve", "deny"):
            raise ValueError(f"decision filter must be `approve` or `deny`, got `{decision}`")
        return cls(
            asset,
            decision,
            blocking_system,
            policy_version,
            None if since is None else parse_instant(since),
            None if until is None else parse_instant(until),
            trace_id,
        )

    def sql(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("asset", self.asset),
            ("decision", self.decision),
            ("policy_version", self.policy_version),
            ("trace_id", self.trace_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.blocking_system is not None:
            clauses.append("EXISTS (SELECT 1 FROM json_each(audit_records.blocking_systems) WHERE value = ?)")
            params.append(self.blocking_system)
        if self.since is not None:
            clauses.append("evaluated_us >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("evaluated_us < ?")
            params.append(self.until)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), params

    def matches(self, record: Mapping[str, Any]) -> bool:
        policy = record.get("policy") if isinstance(record.get("policy"), Mapping) else {}
        for want, have in (
            (self.asset, record.get("asset")),
            (self.decision, record.get("decision")),
            (self.policy_version, policy.get("version")),
            (self.trace_id, record.get("trace_id")),
        ):
            if want is not None and want != have:
                return False
        if self.blocking_system is not None and self.blocking_system not in (record.get("blocking_systems") or ()):
            return False
        if self.since is not None or self.until is not None:
            at = _micros(record.get("evaluated_at"))
            if at is None or (self.since is not None and at < self.since) or (self.until is not None and at >= self.until):
                return False
        return True


def _nearest_rank(ordered: list[float], percent: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least `percent`% of values <= it,
    i.e. ordered[ceil(percent/100 * n) - 1]; always one of the observed values."""
    if not ordered:
        return None
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


class _Tally:
    def __init__(self) -> None:
        self.count = self.approved = self.overrides = 0
        self.denials: Counter[str] = Counter()
        self.times: list[float] = []

    def add(self, decision: str, blocking: list[str], override: bool, time_ms: float | None) -> None:
        self.count += 1
        if decision == "approve":
            self.approved += 1
        else:
            self.denials.update(blocking)
        self.overrides += override
        if isinstance(time_ms, (int, float)):
            self.times.append(float(time_ms))

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.times)
        rate = (lambda part: part / self.count) if self.count else (lambda part: None)
        return {
            "count": self.count,
            "approved": self.approved,
            "denied": self.count - self.approved,
            "approval_rate": rate(self.approved),
            "overrides": self.overrides,
            "override_rate": rate(self.overrides),
            "denials_by_protection": dict(sorted(self.denials.items(), key=lambda item: (-item[1], item[0]))),
            "decision_time_ms": {"p50": _nearest_rank(ordered, 50), "p99": _nearest_rank(ordered, 99)},
        }


def _summarise(rows: Iterable[tuple[str, list[str], bool, float | None, int | None]]) -> dict[str, Any]:
    """Stats over (decision, blocking_systems, override_applied, decision_time_ms, evaluated_us).

    Rates are fractions of all decisions (override_rate: decisions approved by an override);
    a denial blocked by two protections counts once for each; days are UTC days of
    `evaluated_at` (`day` null for records without one).
    """
    total = _Tally()
    per_day: dict[str | None, _Tally] = {}
    for decision, blocking, override, time_ms, evaluated_us in rows:
        day = format_instant(evaluated_us)[:10] if evaluated_us is not None else None
        for tally in (total, per_day.setdefault(day, _Tally())):
            tally.add(decision, blocking, override, time_ms)
    days = sorted(per_day, key=lambda day: (day is None, day or ""))
    return {**total.summary(), "per_day": [{"day": day, **per_day[day].summary()} for day in days]}


def _micros(text: Any) -> int | None:
    if text is None:
        return None
    try:
        return parse_instant(text)
    except ValueError:
        return None
