"""Recording what happened into the state store: executions, and operators' corrections.

A stored instant after a request's `current_date` makes that request invalid (fail closed), so
one mistaken record in the future would make every later request on the asset invalid until
then. So nothing is recorded later than the wall clock plus `FUTURE_TOLERANCE` (for clocks of
different hosts that disagree a little), and a mistaken execution can be removed again; each
removal is itself recorded in the audit trail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from .errors import AuditError, InputInvalid, Issue, StateError
from .timestamps import MICROS_PER_SECOND, format_instant, to_instant

if TYPE_CHECKING:
    from .audit import AuditSink
    from .state import StateStore, StoredEvent

FUTURE_TOLERANCE = 60 * MICROS_PER_SECOND


def wall_clock() -> int:
    """The current time in epoch microseconds: the default clock of the recording services."""
    return time.time_ns() // 1_000


def check_not_future(at: int, now: int, path: str) -> None:
    """Refuse an instant later than `now` plus the tolerance."""
    if at > now + FUTURE_TOLERANCE:
        raise InputInvalid(
            [
                Issue(
                    "timestamp-future",
                    path,
                    f"`{format_instant(at)}` is after the current time `{format_instant(now)}` "
                    f"(more than {FUTURE_TOLERANCE // MICROS_PER_SECOND} s ahead); only what already happened can be recorded",
                )
            ]
        )


class Recorder:
    """Records executions and removes mistaken ones; `clock` gives epoch microseconds."""

    def __init__(self, store: StateStore, *, audit: AuditSink | None = None, clock: Callable[[], int] = wall_clock):
        self.store = store
        self.audit = audit
        self.clock = clock

    def record_execution(self, asset: str, kind: Literal["open", "close"], at: object, size: float | None = None) -> int:
        """Record an executed open or close (a close also ends the asset's grace period); returns the instant."""
        when = _instant(at)
        check_not_future(when, self.clock(), "$.at")
        self.store.record_execution(asset, kind, when, size)
        return when

    def events(self, asset: str) -> list[StoredEvent]:
        return self.store.events(asset)

    def remove_event(self, asset: str, event_id: int, reason: str, *, operator: str | None = None) -> StoredEvent:
        """Remove one recorded execution; the correction is written to the audit trail first."""
        if self.audit is None:
            raise AuditError("a correction of the state store must be recorded: open an audit trail")
        if not reason.strip():
            raise InputInvalid([Issue("reason-missing", "$.reason", "say why the event is removed (`--reason`)")])
        found = [event for event in self.store.events(asset) if event.id == event_id]
        if not found:
            raise InputInvalid([Issue("event-not-found", "$.event_id", f"`{asset}` has no recorded event #{event_id}")])
        self.audit.append_event(
            "state_correction",
            {
                "asset": asset,
                "action": "event_removed",
                "detail": found[0].to_dict(),
                "reason": reason,
                "at": format_instant(self.clock()),
                "operator": operator,
            },
        )
        if self.store.remove_event(asset, event_id) is None:
            raise StateError(f"event #{event_id} of `{asset}` was removed by someone else after the correction was recorded")
        return found[0]


def _instant(value: object) -> int:
    try:
        return to_instant(value)
    except ValueError as exc:
        raise InputInvalid([Issue("timestamp-invalid", "$.at", str(exc))]) from None
