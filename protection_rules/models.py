"""Request and decision values (names from the plan), with `from_dict` / `to_dict`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import fastjsonschema

from .errors import Issue, RequestInvalid
from .loading import SourceMap
from .resources import schema
from .timestamps import format_instant, parse_instant
from .validation import schema_issues

Action = Literal["open", "close", "increase", "decrease"]
Status = Literal["pass", "block", "overridden", "skipped", "not_applicable", "error"]

# Instants are integer microseconds since the epoch, UTC (see timestamps.py).
Instant = int


@dataclass(frozen=True, slots=True)
class CoreDesignation:
    designated_at: Instant
    expires_at: Instant | None = None


@dataclass(frozen=True, slots=True)
class GraceState:
    started_at: Instant
    original_size: float | None = None


@dataclass(frozen=True, slots=True)
class PositionEvent:
    type: Literal["open", "close"]
    at: Instant
    size: float | None = None


@dataclass(frozen=True, slots=True)
class AssetState:
    """What happened to one asset before a request (docs/semantics.md section 3)."""

    core: CoreDesignation | None = None
    grace: GraceState | None = None
    events: tuple[PositionEvent, ...] = ()
    last_override_at: Instant | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.core:
            out["core"] = _compact(designated_at=_fmt(self.core.designated_at), expires_at=_fmt(self.core.expires_at))
        if self.grace:
            out["grace"] = _compact(started_at=_fmt(self.grace.started_at), original_size=self.grace.original_size)
        if self.events:
            out["events"] = [_compact(type=e.type, at=_fmt(e.at), size=e.size) for e in self.events]
        if self.last_override_at is not None:
            out["last_override_at"] = _fmt(self.last_override_at)
        return out


@dataclass(frozen=True, slots=True)
class RegimeContext:
    changed: bool
    severity: Literal["normal", "high", "critical"] = "normal"
    old_regime: str | None = None
    new_regime: str | None = None
    change_date: Instant | None = None

    def to_dict(self) -> dict[str, Any]:
        return _compact(
            changed=self.changed,
            severity=self.severity,
            old_regime=self.old_regime,
            new_regime=self.new_regime,
            change_date=_fmt(self.change_date),
        )


_OPTIONAL_NUMBERS = (
    "current_size",
    "target_size",
    "current_score",
    "target_score",
    "position_entry_score",
    "position_entry_size",
    "portfolio_allocation",
    "active_positions",
)


@dataclass(frozen=True, slots=True)
class ProtectionRequest:
    """One proposed position change for one asset (docs/semantics.md section 1)."""

    asset: str
    action: Action
    current_date: Instant
    current_size: float | None = None
    target_size: float | None = None
    current_score: float | None = None
    target_score: float | None = None
    reason: str = ""
    position_entry_date: Instant | None = None
    position_entry_score: float | None = None
    position_entry_size: float | None = None
    portfolio_allocation: float | None = None
    active_positions: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    regime: RegimeContext | None = None
    state: AssetState | None = None

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> ProtectionRequest:
        """Validate and parse a request; raises `RequestInvalid` with every issue found."""
        if not _fast_valid(data):
            if not isinstance(data, dict):
                raise RequestInvalid([Issue("schema-type", "$", "a request must be a JSON object", source)])
            issues = schema_issues("request", data, SourceMap(source))
            raise RequestInvalid(issues or [Issue("schema-invalid", "$", "request does not match the schema", source)])
        bad: list[Issue] = []
        try:
            now = parse_instant(data["current_date"])
        except ValueError as exc:
            raise RequestInvalid([Issue("timestamp-invalid", "$.current_date", str(exc), source)]) from None

        def at(text: str | None, path: str) -> Instant | None:
            """Parse an instant that must not lie after `current_date` (docs/semantics.md section 2)."""
            if text is None:
                return None
            try:
                instant = parse_instant(text)
            except ValueError as exc:
                bad.append(Issue("timestamp-invalid", path, str(exc), source))
                return None
            if instant > now and not path.endswith(".expires_at"):
                bad.append(_future(path, instant, now, source))
            return instant

        regime, state = data.get("regime"), data.get("state")
        request = cls(
            asset=data["asset"],
            action=data["action"],
            current_date=now,
            reason=data.get("reason") or "",
            position_entry_date=at(data.get("position_entry_date"), "$.position_entry_date"),
            metadata=data.get("metadata") or {},
            request_id=data.get("request_id"),
            regime=None
            if not regime
            else RegimeContext(
                changed=regime["changed"],
                severity=regime.get("severity") or "normal",
                old_regime=regime.get("old_regime"),
                new_regime=regime.get("new_regime"),
                change_date=at(regime.get("change_date"), "$.regime.change_date"),
            ),
            state=None if state is None else _parse_state(state, at),
            **{name: data.get(name) for name in _OPTIONAL_NUMBERS},
        )
        issues = bad or _number_issues(data, source) or _core_order(request.state, source)
        if issues:
            raise RequestInvalid(issues)
        return request

    def to_dict(self) -> dict[str, Any]:
        out = _compact(
            request_id=self.request_id,
            asset=self.asset,
            action=self.action,
            current_date=_fmt(self.current_date),
            reason=self.reason or None,
            position_entry_date=_fmt(self.position_entry_date),
            **{name: getattr(self, name) for name in _OPTIONAL_NUMBERS},
        )
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        if self.regime is not None:
            out["regime"] = self.regime.to_dict()
        if self.state is not None:
            out["state"] = self.state.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class ProtectionResult:
    """One protection's verdict on one request: a trace entry."""

    system: str
    priority: int
    status: Status
    reason: str
    facts: Mapping[str, Any] = field(default_factory=dict)
    rules: tuple[str, ...] = ()
    unblocks_at: Instant | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "priority": self.priority,
            "status": self.status,
            "reason": self.reason,
            "facts": dict(self.facts),
            "rules": list(self.rules),
            "unblocks_at": _fmt(self.unblocks_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProtectionResult:
        return cls(
            system=data["system"],
            priority=data["priority"],
            status=data["status"],
            reason=data["reason"],
            facts=data.get("facts") or {},
            rules=tuple(data.get("rules") or ()),
            unblocks_at=_at(data.get("unblocks_at")),
        )


@dataclass(frozen=True, slots=True)
class StateChange:
    """A change to an asset's state that committing the decision applies (docs/semantics.md section 6)."""

    type: Literal["grace_started", "grace_ended", "override_used"]
    asset: str
    at: Instant
    original_size: float | None = None
    severity: str | None = None
    bypassed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "asset": self.asset, "at": _fmt(self.at)}
        if self.type == "grace_started":
            out["original_size"] = self.original_size
        if self.type == "override_used":
            out["severity"] = self.severity
            out["bypassed"] = list(self.bypassed)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StateChange:
        return cls(
            type=data["type"],
            asset=data["asset"],
            at=parse_instant(data["at"]),
            original_size=data.get("original_size"),
            severity=data.get("severity"),
            bypassed=tuple(data.get("bypassed") or ()),
        )


@dataclass(frozen=True, slots=True)
class PolicyRef:
    name: str
    version: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class ProtectionDecision:
    """The engine's answer to one request (docs/semantics.md section 5); a value, see `to_dict`."""

    approved: bool
    reason: str
    blocking_systems: tuple[str, ...]
    override_applied: bool
    override_reason: str | None
    unblocks_at: Instant | None
    trace: tuple[ProtectionResult, ...]
    state_changes: tuple[StateChange, ...]
    policy: PolicyRef
    request_id: str | None
    trace_id: str
    decision_time_ms: float
    asset: str | None
    action: str | None
    evaluated_at: Instant | None
    engine_version: str
    decision_id: str
    state_source: Literal["request", "store", "none"] | None = None
    errors: tuple[Issue, ...] = ()

    @property
    def decision(self) -> Literal["approve", "deny"]:
        return "approve" if self.approved else "deny"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "approved": self.approved,
            "decision": self.decision,
            "reason": self.reason,
            "blocking_systems": list(self.blocking_systems),
            "override_applied": self.override_applied,
            "override_reason": self.override_reason,
            "unblocks_at": _fmt(self.unblocks_at),
            "trace": [entry.to_dict() for entry in self.trace],
            "state_changes": [change.to_dict() for change in self.state_changes],
            "policy": self.policy.to_dict(),
            "decision_id": self.decision_id,
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "decision_time_ms": self.decision_time_ms,
            "state_source": self.state_source,
            "asset": self.asset,
            "action": self.action,
            "evaluated_at": _fmt(self.evaluated_at),
            "engine_version": self.engine_version,
        }
        if self.errors:
            out["errors"] = [issue.to_dict() for issue in self.errors]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProtectionDecision:
        policy = data["policy"]
        return cls(
            approved=data["approved"],
            reason=data["reason"],
            blocking_systems=tuple(data["blocking_systems"]),
            override_applied=data["override_applied"],
            override_reason=data.get("override_reason"),
            unblocks_at=_at(data.get("unblocks_at")),
            trace=tuple(ProtectionResult.from_dict(entry) for entry in data["trace"]),
            state_changes=tuple(StateChange.from_dict(change) for change in data["state_changes"]),
            policy=PolicyRef(policy["name"], policy["version"], policy["sha256"]),
            request_id=data.get("request_id"),
            trace_id=data["trace_id"],
            decision_time_ms=data["decision_time_ms"],
            asset=data.get("asset"),
            action=data.get("action"),
            evaluated_at=_at(data.get("evaluated_at")),
            engine_version=data["engine_version"],
            decision_id=data["decision_id"],
            state_source=data.get("state_source"),
            errors=tuple(Issue(**issue) for issue in data.get("errors") or ()),
        )


# ------------------------------------------------------------------------------------ helpers


@cache
def _fast_validator() -> Any:
    # fastjsonschema compiles the same schema file into Python code: ~5 us instead of ~95 us.
    # It only gates; on any failure jsonschema produces the full, human error report.
    return fastjsonschema.compile(schema("request"))


def prepare_request_validation() -> None:
    """Compile the request validator ahead of the first request (it takes milliseconds)."""
    _fast_validator()


def _fast_valid(data: Any) -> bool:
    try:
        _fast_validator()(data)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def _parse_state(data: Mapping[str, Any], at: Any) -> AssetState:
    core, grace = data.get("core"), data.get("grace")
    events = [
        PositionEvent(event["type"], at(event["at"], f"$.state.events[{index}].at"), event.get("size"))
        for index, event in enumerate(data.get("events") or ())
    ]
    return AssetState(
        core=None
        if not core
        else CoreDesignation(
            at(core["designated_at"], "$.state.core.designated_at"),
            at(core.get("expires_at"), "$.state.core.expires_at"),
        ),
        grace=None if not grace else GraceState(at(grace["started_at"], "$.state.grace.started_at"), grace.get("original_size")),
        # sorted by time, stably: events at the same instant keep their given order
        events=tuple(sorted(events, key=lambda e: e.at or 0)),
        last_override_at=at(data.get("last_override_at"), "$.state.last_override_at"),
    )


def _at(text: str | None) -> Instant | None:
    return None if text is None else parse_instant(text)


def _fmt(instant: Instant | None) -> str | None:
    return None if instant is None else format_instant(instant)


def _compact(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


# No score, size or count is anywhere near this; beyond it, float arithmetic stops being exact.
MAX_MAGNITUDE = 1e15


def _number_issues(data: Mapping[str, Any], source: str | None) -> list[Issue]:
    """NaN and infinity pass JSON Schema's `number`; they must never reach a comparison."""
    found = [(name, data.get(name)) for name in _OPTIONAL_NUMBERS]
    state = data.get("state")
    if state:
        grace = state.get("grace")
        if grace:
            found.append(("state.grace.original_size", grace.get("original_size")))
        for index, event in enumerate(state.get("events") or ()):
            found.append((f"state.events[{index}].size", event.get("size")))
    issues = []
    for path, value in found:
        if value is None or -MAX_MAGNITUDE <= value <= MAX_MAGNITUDE:
            continue  # NaN fails both comparisons, so it falls through to here
        if isinstance(value, float) and not math.isfinite(value):
            issues.append(Issue("number-not-finite", f"$.{path}", f"`{value}` is not a finite number", source))
        else:
            shown = repr(value) if len(repr(value)) <= 24 else repr(value)[:21] + "..."
            issues.append(Issue("number-out-of-range", f"$.{path}", f"`{shown}` is beyond +/-{MAX_MAGNITUDE:g}", source))
    if data.get("metadata"):
        try:
            json.dumps(data["metadata"], allow_nan=False)
        except (TypeError, ValueError) as exc:
            issues.append(Issue("metadata-not-json", "$.metadata", f"metadata must be plain JSON: {exc}", source))
    return issues


def state_chronology_issues(state: AssetState, now: Instant, source: str | None) -> list[Issue]:
    """docs/semantics.md section 2 for a stored state: every instant but `expires_at` must not be after now."""
    stamps: list[tuple[str, Instant | None]] = [("$.state.last_override_at", state.last_override_at)]
    if state.core:
        stamps.append(("$.state.core.designated_at", state.core.designated_at))
    if state.grace:
        stamps.append(("$.state.grace.started_at", state.grace.started_at))
    stamps.extend((f"$.state.events[{index}].at", event.at) for index, event in enumerate(state.events))
    issues = [_future(path, instant, now, source) for path, instant in stamps if instant is not None and instant > now]
    return issues + _core_order(state, source)


def _core_order(state: AssetState | None, source: str | None) -> list[Issue]:
    core = state.core if state else None
    if core and core.expires_at is not None and core.expires_at <= core.designated_at:
        return [Issue("timestamp-order", "$.state.core.expires_at", "`expires_at` must be after `designated_at`", source)]
    return []


def _future(path: str, instant: Instant, now: Instant, source: str | None) -> Issue:
    return Issue(
        "timestamp-future",
        path,
        f"`{format_instant(instant)}` is after `current_date` `{format_instant(now)}`",
        source,
    )


__all__ = [
    "AssetState",
    "CoreDesignation",
    "GraceState",
    "PolicyRef",
    "PositionEvent",
    "ProtectionDecision",
    "ProtectionRequest",
    "ProtectionResult",
    "RegimeContext",
    "StateChange",
]
