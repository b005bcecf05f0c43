"""Request documents -> checked `ProtectionRequest`s: schema, instants, numbers, chronology.

`parse_request` is the one way in for request data (a dict from JSON, or from a Python caller);
it raises `RequestInvalid` carrying every issue found. The hot path is one typed pass
(request_types.py, msgspec: shape, bounds, finite numbers) and the instants; a request it
does not take in full, for any reason, goes the slow way: a compiled schema gate (fastjsonschema),
jsonschema writing the messages when the gate says no, then the walks over instants, numbers
and text, which collect every issue.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, Literal

import msgspec

from .errors import Issue, RequestInvalid
from .loading import MAX_MAGNITUDE, SourceMap
from .models import (
    OPTIONAL_NUMBERS,
    AssetState,
    CoreDesignation,
    GraceState,
    Instant,
    PositionEvent,
    ProtectionRequest,
    RegimeContext,
)
from .request_types import RequestDocument, decode
from .timestamps import format_instant, parse_instant, to_instant
from .validation import fast_valid, fast_validator, schema_issues


def parse_request(data: Any, *, source: str | None = None) -> ProtectionRequest:
    """Validate and parse a request document; raises `RequestInvalid` with every issue found."""
    if isinstance(data, dict):
        try:
            request = _from_document(decode(data))
        except (msgspec.ValidationError, ValueError):
            pass  # the slow way finds and words every issue
        else:
            if request is not None:
                return request
    return _parse_slowly(data, source)


def _from_document(doc: RequestDocument) -> ProtectionRequest | None:
    """The request of a document the typed pass took, or None when one of the checks of
    `_parse_slowly` would find an issue (a future instant, text that is not whole characters,
    metadata that is not plain JSON, a core designation that ends before it starts)."""
    now = parse_instant(doc.current_date)
    entry = None if doc.position_entry_date is None else parse_instant(doc.position_entry_date)
    if entry is not None and entry > now:
        return None
    regime = doc.regime
    if regime is not None:
        change = None if regime.change_date is None else parse_instant(regime.change_date)
        if change is not None and change > now:
            return None
        if not _whole_text(regime.old_regime) or not _whole_text(regime.new_regime):
            return None
        regime = RegimeContext(regime.changed, regime.severity or "normal", regime.old_regime, regime.new_regime, change)
    state = None if doc.state is None else _state_from_document(doc.state, now)
    if state is False or not _whole_text(doc.reason) or not _whole_text(doc.request_id):
        return None
    metadata = doc.metadata
    if metadata and not _plain_json(metadata):
        return None
    return ProtectionRequest(
        doc.asset,
        doc.action,
        now,
        doc.current_size,
        doc.target_size,
        doc.current_score,
        doc.target_score,
        doc.reason or "",
        entry,
        doc.position_entry_score,
        doc.position_entry_size,
        doc.portfolio_allocation,
        doc.active_positions,
        metadata or {},
        doc.request_id,
        regime,
        state,  # type: ignore[arg-type]
    )


def _state_from_document(doc: Any, now: int) -> AssetState | Literal[False]:
    """The state, or False when an instant lies after now or the core designation is out of order."""
    last = None if doc.last_override_at is None else parse_instant(doc.last_override_at)
    if last is not None and last > now:
        return False
    core = doc.core
    if core is not None:
        designated = parse_instant(core.designated_at)
        expires = None if core.expires_at is None else parse_instant(core.expires_at)
        if designated > now or (expires is not None and expires <= designated):
            return False
        core = CoreDesignation(designated, expires)
    grace = doc.grace
    if grace is not None:
        started = parse_instant(grace.started_at)
        if started > now:
            return False
        grace = GraceState(started, grace.original_size)
    events = ()
    if doc.events:
        parsed = []
        for event in doc.events:
            at = parse_instant(event.at)
            if at > now:
                return False
            parsed.append(PositionEvent(event.type, at, event.size))
        # sorted by time, stably: events at the same instant keep their given order
        events = tuple(sorted(parsed, key=_event_time))
    return AssetState(core, grace, events, last)


def _event_time(event: PositionEvent) -> int:
    return event.at


def _whole_text(text: str | None) -> bool:
    return text is None or text.isascii() or _encodable(text)


def _plain_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return False
    return True


def _parse_slowly(data: Any, source: str | None) -> ProtectionRequest:
    if not _fast_valid(data):
        data, naive = instants_as_text(data, source)
        if naive:
            raise RequestInvalid(naive)
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
    request = ProtectionRequest(
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
        **{name: data.get(name) for name in OPTIONAL_NUMBERS},
    )
    issues = bad or _number_issues(data, source) or _core_order(request.state, source)
    if issues:
        raise RequestInvalid(issues)
    return request


def prepare_request_validation() -> None:
    """Compile the request validator ahead of the first request (it takes milliseconds)."""
    fast_validator("request")


def state_chronology_issues(state: AssetState, now: Instant, source: str | None) -> list[Issue]:
    """For a stored state: every instant but `expires_at` must not be after now."""
    stamps: list[tuple[str, Instant | None]] = [("$.state.last_override_at", state.last_override_at)]
    if state.core:
        stamps.append(("$.state.core.designated_at", state.core.designated_at))
    if state.grace:
        stamps.append(("$.state.grace.started_at", state.grace.started_at))
    stamps.extend((f"$.state.events[{index}].at", event.at) for index, event in enumerate(state.events))
    issues = [_future(path, instant, now, source) for path, instant in stamps if instant is not None and instant > now]
    return issues + _core_order(state, source)


def instants_as_text(data: Any, source: str | None = None) -> tuple[Any, list[Issue]]:
    """`data` with every `datetime`/`date` turned into ISO text, and an issue per naive one.

    A Python caller may hand `datetime`s where a document has text. The engine only looks for
    them after the schema gate said no, so JSON input never pays for this walk."""
    naive: list[Issue] = []

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, dict):
            return {key: walk(item, f"{path}.{key}") for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(item, f"{path}[{index}]") for index, item in enumerate(value)]
        if isinstance(value, date):
            try:
                return format_instant(to_instant(value))
            except ValueError as exc:
                naive.append(Issue("timestamp-invalid", path, str(exc), source))
        return value

    return walk(data, "$"), naive


# ------------------------------------------------------------------------------------ helpers


def _fast_valid(data: Any) -> bool:
    return fast_valid("request", data)


def _parse_state(data: Mapping[str, Any], at: Callable[[str | None, str], Instant | None]) -> AssetState:
    core, grace = data.get("core"), data.get("grace")
    events = [
        PositionEvent(event["type"], at(event["at"], f"$.state.events[{index}].at"), event.get("size"))  # type: ignore[arg-type]
        for index, event in enumerate(data.get("events") or ())
    ]
    return AssetState(
        core=None
        if not core
        else CoreDesignation(
            at(core["designated_at"], "$.state.core.designated_at"),  # type: ignore[arg-type]
            at(core.get("expires_at"), "$.state.core.expires_at"),
        ),
        grace=None if not grace else GraceState(at(grace["started_at"], "$.state.grace.started_at"), grace.get("original_size")),  # type: ignore[arg-type]
        # sorted by time, stably: events at the same instant keep their given order
        events=tuple(sorted(events, key=lambda e: e.at or 0)),
        last_override_at=at(data.get("last_override_at"), "$.state.last_override_at"),
    )


def _number_issues(data: Mapping[str, Any], source: str | None) -> list[Issue]:
    """NaN and infinity pass JSON Schema's `number`; they must never reach a comparison."""
    found = [(name, data.get(name)) for name in OPTIONAL_NUMBERS]
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
            json.dumps(data["metadata"], allow_nan=False, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            issues.append(Issue("text-invalid", "$.metadata", _HALF_CHARACTER, source))
        except (TypeError, ValueError) as exc:
            issues.append(Issue("metadata-not-json", "$.metadata", f"metadata must be plain JSON: {exc}", source))
    regime = data.get("regime") or {}
    for path, text in (
        ("$.reason", data.get("reason")),
        ("$.request_id", data.get("request_id")),
        ("$.regime.old_regime", regime.get("old_regime")),
        ("$.regime.new_regime", regime.get("new_regime")),
    ):
        if text is not None and not text.isascii() and not _encodable(text):
            issues.append(Issue("text-invalid", path, _HALF_CHARACTER, source))
    return issues


# A Python caller can hand a string holding half of a UTF-16 pair, which no UTF-8 output (a
# message, the audit trail's hash) can hold; JSON input is refused at parsing (loading.py).
_HALF_CHARACTER = "holds a lone surrogate (`\\ud800`-`\\udfff`), half of a character; give the whole character"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
