"""Request and decision values (names from the plan), with `to_dict` (and `from_dict` for the
decision). Parsing and validating a request document lives in `parsing.py`.

The request types, the decision, its state changes and its trace entries are frozen msgspec
Structs (built in C: the engine makes them for every request), the rest frozen dataclasses.
The Structs are not tracked by the cyclic garbage collector (`gc=False`): they cannot be part
of a reference cycle (frozen, holding values made before them), and a batch of decisions held
in memory would otherwise make every full collection walk them all. Instants are integer
microseconds since the epoch, UTC (see timestamps.py). The value types also take a timezone-aware `datetime` or
an ISO string wherever an instant goes, for Python callers, and normalise it on construction; a
naive `datetime` raises `RequestInvalid`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import msgspec
from msgspec.structs import force_setattr

from .errors import Issue, RequestInvalid
from .timestamps import format_instant, parse_instant, to_instant

Action = Literal["open", "close", "increase", "decrease"]
Status = Literal["pass", "block", "overridden", "skipped", "not_applicable", "error"]

Instant = int


def _normalise(value: Any, fields: tuple[tuple[str, str], ...]) -> None:
    """Turn each instant field that is not already epoch microseconds into them, in place."""
    for name, path in fields:
        seen = getattr(value, name)
        if seen is None or type(seen) is int:
            continue
        try:
            force_setattr(value, name, to_instant(seen))
        except ValueError as exc:
            raise RequestInvalid([Issue("timestamp-invalid", path, str(exc))]) from None


def _given(instant: Any) -> bool:
    """Whether an optional instant is there and not yet epoch microseconds. Each value type
    tests this (or `type(...) is not int`) before `_normalise`: they are built for every request."""
    return instant is not None and type(instant) is not int


class CoreDesignation(msgspec.Struct, frozen=True, gc=False):
    designated_at: Instant
    expires_at: Instant | None = None

    def __post_init__(self) -> None:
        if type(self.designated_at) is not int or _given(self.expires_at):
            _normalise(self, (("designated_at", "$.state.core.designated_at"), ("expires_at", "$.state.core.expires_at")))


class GraceState(msgspec.Struct, frozen=True, gc=False):
    started_at: Instant
    original_size: float | None = None

    def __post_init__(self) -> None:
        if type(self.started_at) is not int:
            _normalise(self, (("started_at", "$.state.grace.started_at"),))


class PositionEvent(msgspec.Struct, frozen=True, gc=False):
    type: Literal["open", "close"]
    at: Instant
    size: float | None = None

    def __post_init__(self) -> None:
        if type(self.at) is not int:
            _normalise(self, (("at", "$.state.events[*].at"),))


class AssetState(msgspec.Struct, frozen=True, gc=False):
    """What happened to one asset before a request (docs/semantics.md section 3)."""

    core: CoreDesignation | None = None
    grace: GraceState | None = None
    events: tuple[PositionEvent, ...] = ()
    last_override_at: Instant | None = None

    def __post_init__(self) -> None:
        if _given(self.last_override_at):
            _normalise(self, (("last_override_at", "$.state.last_override_at"),))
        if type(self.events) is not tuple:
            force_setattr(self, "events", tuple(self.events))

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


class RegimeContext(msgspec.Struct, frozen=True, gc=False):
    changed: bool
    severity: Literal["normal", "high", "critical"] = "normal"
    old_regime: str | None = None
    new_regime: str | None = None
    change_date: Instant | None = None

    def __post_init__(self) -> None:
        if _given(self.change_date):
            _normalise(self, (("change_date", "$.regime.change_date"),))

    def to_dict(self) -> dict[str, Any]:
        return _compact(
            changed=self.changed,
            severity=self.severity,
            old_regime=self.old_regime,
            new_regime=self.new_regime,
            change_date=_fmt(self.change_date),
        )


OPTIONAL_NUMBERS = (
    "current_size",
    "target_size",
    "current_score",
    "target_score",
    "position_entry_score",
    "position_entry_size",
    "portfolio_allocation",
    "active_positions",
)


class ProtectionRequest(msgspec.Struct, frozen=True, gc=False):
    """One proposed position change for one asset (docs/semantics.md section 1). Build it directly, or
    parse a request document with `parsing.parse_request`; the engine validates both the same way."""

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
    metadata: Mapping[str, Any] = msgspec.field(default_factory=dict)
    request_id: str | None = None
    regime: RegimeContext | None = None
    state: AssetState | None = None

    def __post_init__(self) -> None:
        if type(self.current_date) is not int or _given(self.position_entry_date):
            _normalise(self, (("current_date", "$.current_date"), ("position_entry_date", "$.position_entry_date")))

    def to_dict(self) -> dict[str, Any]:
        out = _compact(
            request_id=self.request_id,
            asset=self.asset,
            action=self.action,
            current_date=_fmt(self.current_date),
            reason=self.reason or None,
            position_entry_date=_fmt(self.position_entry_date),
            **{name: getattr(self, name) for name in OPTIONAL_NUMBERS},
        )
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        if self.regime is not None:
            out["regime"] = self.regime.to_dict()
        if self.state is not None:
            out["state"] = self.state.to_dict()
        return out


class ProtectionResult(msgspec.Struct, frozen=True, gc=False):
    """One protection's verdict on one request: a trace entry (a Struct: a trace writes one
    per protection, ~0.15 µs each against ~1.7 µs as a frozen dataclass)."""

    system: str
    priority: int
    status: Status
    reason: str
    facts: Mapping[str, Any] = msgspec.field(default_factory=dict)
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


class LazyTrace(Sequence[ProtectionResult]):
    """A decision's trace, written when it is first read: the engine decides from the rule ids
    that fired, and most callers of a batch never read each protection's reason and facts.

    It reads like the tuple it stands for (and equals it); pickling or reading it once writes
    it for good. `build` must be pure: the values it formats were checked when the decision
    was made, so writing the trace later gives what writing it then would have given.
    """

    __slots__ = ("_build", "_entries")

    def __init__(self, build: Callable[[], tuple[ProtectionResult, ...]]):
        self._build: Callable[[], tuple[ProtectionResult, ...]] | None = build
        self._entries: tuple[ProtectionResult, ...] | None = None

    def entries(self) -> tuple[ProtectionResult, ...]:
        entries = self._entries
        if entries is None:
            build = self._build
            if build is None:  # another thread wrote it meanwhile
                return self._entries  # type: ignore[return-value]
            entries = self._entries = build()
            self._build = None  # let the request, its state and its fact go
        return entries

    @overload
    def __getitem__(self, index: int) -> ProtectionResult: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[ProtectionResult, ...]: ...
    def __getitem__(self, index: int | slice) -> ProtectionResult | tuple[ProtectionResult, ...]:
        return self.entries()[index]

    def __len__(self) -> int:
        return len(self.entries())

    def __iter__(self) -> Iterator[ProtectionResult]:
        return iter(self.entries())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyTrace):
            other = other.entries()
        return self.entries() == other if isinstance(other, tuple) else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # as the tuple's entries (their facts are dicts)

    def __repr__(self) -> str:
        return repr(self.entries())

    def __reduce__(self) -> tuple[Any, ...]:
        return (tuple, (self.entries(),))


class StateChange(msgspec.Struct, frozen=True, gc=False):
    """A change to an asset's state that committing the decision applies (docs/semantics.md section 6).

    A frozen msgspec Struct, as `ProtectionDecision`: deciding builds one for every request
    that starts or ends grace or uses an override (a frozen dataclass costs ~8x more to build)."""

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


class ProtectionDecision(msgspec.Struct, frozen=True, gc=False):
    """The engine's answer to one request (docs/semantics.md section 5); a value, see `to_dict`.

    A frozen msgspec Struct rather than a frozen dataclass: the engine builds one per request,
    and a Struct's 19 fields are set in C (a dataclass sets each through `object.__setattr__`)."""

    approved: bool
    reason: str
    blocking_systems: tuple[str, ...]
    override_applied: bool
    override_reason: str | None
    unblocks_at: Instant | None
    trace: Sequence[ProtectionResult]  # a tuple, or the `LazyTrace` the engine hands out
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


def _at(text: str | None) -> Instant | None:
    return None if text is None else parse_instant(text)


def _fmt(instant: Instant | None) -> str | None:
    return None if instant is None else format_instant(instant)


def _compact(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


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
