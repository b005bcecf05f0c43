"""The query side shared by both backends: the record filter (`RecordFilter`, a predicate here;
SQLite turns it into SQL) and the stats summary over the filtered decision records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..metrics import nearest_rank
from ..timestamps import format_instant, parse_instant
from .chain import KINDS, record_instant, record_kind

# (decision, blocking_systems, override_applied, decision_time_ms, instant in µs)
StatsRow = tuple[Any, list[str], bool, Any, int | None]


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which records `query` and `stats` return: every given condition must hold.

    `kind` is a record kind (`KINDS`); `decision` is `approve` or `deny` (records of other kinds
    have none, so never match it); `blocking_system` matches a decision listing that protection.
    `since`/`until` are ISO timestamps bounding the half-open range [since, until) of a record's
    instant (`record_instant`: a decision's `evaluated_at`, another record's `at`); a record
    without one never matches a time filter. Raises ValueError for a value that cannot match.
    """

    kind: str | None = None
    asset: str | None = None
    decision: str | None = None
    blocking_system: str | None = None
    policy_version: str | None = None
    since: str | None = None
    until: str | None = None
    trace_id: str | None = None
    since_us: int | None = field(init=False, default=None, repr=False, compare=False)
    until_us: int | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in (None, *KINDS):
            raise ValueError(f"kind filter must be one of {', '.join(f'`{k}`' for k in KINDS)}, got `{self.kind}`")
        if self.decision not in (None, "approve", "deny"):
            raise ValueError(f"decision filter must be `approve` or `deny`, got `{self.decision}`")
        for name in ("since", "until"):
            text = getattr(self, name)
            object.__setattr__(self, f"{name}_us", None if text is None else parse_instant(text))

    def matches(self, record: Mapping[str, Any]) -> bool:
        policy = record.get("policy") if isinstance(record.get("policy"), Mapping) else {}
        for want, have in (
            (self.kind, record_kind(record)),
            (self.asset, record.get("asset")),
            (self.decision, record.get("decision")),
            (self.policy_version, policy.get("version")),
            (self.trace_id, record.get("trace_id")),
        ):
            if want is not None and want != have:
                return False
        if self.blocking_system is not None and self.blocking_system not in (record.get("blocking_systems") or ()):
            return False
        if self.since_us is not None or self.until_us is not None:
            at = record_instant(record)
            if (
                at is None
                or (self.since_us is not None and at < self.since_us)
                or (self.until_us is not None and at >= self.until_us)
            ):
                return False
        return True

    def decisions_only(self) -> RecordFilter:
        """This filter narrowed to decisions (what `stats` counts); ValueError for another kind."""
        if self.kind not in (None, "decision"):
            raise ValueError(f"stats count decisions only, not `{self.kind}` records")
        return replace(self, kind="decision")


ALL_RECORDS = RecordFilter()


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
            "decision_time_ms": {"p50": nearest_rank(ordered, 50), "p99": nearest_rank(ordered, 99)},
        }


def stats_row(record: Mapping[str, Any]) -> StatsRow:
    """The fields of a decision record that `summarise` counts."""
    return (
        record.get("decision"),
        list(record.get("blocking_systems") or ()),
        bool(record.get("override_applied")),
        record.get("decision_time_ms"),
        record_instant(record),
    )


def summarise(rows: Iterable[StatsRow]) -> dict[str, Any]:
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
