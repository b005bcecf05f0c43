"""What an engine decided, counted as it decides (`Engine.metrics()`), and the alerts those
counts raise.

The engine hands each batch of final decisions (what the caller receives, after the audit
write) to `Metrics.observe` once: one lock per batch, a few integer operations per decision
(a plain loop: cheaper here than several passes of `map`), and the alert conditions only when
one could start or end.
Counts are exact and cover the engine's life; latency percentiles cover the last
`LATENCY_WINDOW` decisions; the error rate covers the policy's `alerts.window` last decisions.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .alerts import Alert, AlertThresholds
from .errors import INTERNAL_CODES
from .models import PolicyRef, ProtectionDecision
from .resources import schema
from .timestamps import format_instant

LATENCY_WINDOW = 10_000  # decisions whose decision_time_ms the percentiles are taken over
# errors are kept as far back as the largest `alerts.window` a policy may set
MAX_ERROR_WINDOW: int = schema("policy")["properties"]["alerts"]["properties"]["window"]["maximum"]
ERROR = "error"  # the blocking system of a fail-closed deny; not a protection


def nearest_rank(ordered: Sequence[float], percent: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least `percent`% of values <= it,
    i.e. ordered[ceil(percent/100 * n) - 1]; always one of the observed values."""
    if not ordered:
        return None
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


class Metrics:
    """Thread-safe counters of one engine's decisions, and the edge-triggered alert states.

    `clock` (epoch microseconds) stamps the last error; it is read only when an error occurs.
    """

    def __init__(self, clock: Callable[[], int]):
        self._clock = clock
        self._lock = threading.Lock()
        self._decisions = self._approved = self._overridden = 0
        self._errors = self._invalid = self._audit_failures = 0
        self._denials: dict[str, int] = {}
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        # the 1-based position, among all decisions, of each error in the last MAX_ERROR_WINDOW
        self._error_at: deque[int] = deque()
        self._last_error: dict[str, Any] | None = None
        # alert states: an alert fires when its condition starts to hold, then waits for it to end
        self._error_alert = self._audit_alert = False
        self._share_alert: set[str] = set()
        self._thresholds: AlertThresholds | None = None

    def observe(
        self,
        decisions: Sequence[ProtectionDecision],
        thresholds: AlertThresholds,
        policy: PolicyRef,
        audit_problem: str | None = None,
    ) -> Sequence[Alert]:
        """Count one batch of final decisions; return the alerts it raises (to deliver unlocked).

        `audit_problem` says why the batch could not be recorded (each decision is then a deny).
        """
        denials: dict[str, int] = {}
        approved = overridden = 0
        with self._lock:
            position = self._decisions
            errors_before = self._errors
            latencies = self._latencies
            for decision in decisions:
                position += 1
                latencies.append(decision.decision_time_ms)
                if decision.approved:
                    approved += 1
                    if decision.override_applied:
                        overridden += 1
                    continue
                for name in decision.blocking_systems:
                    denials[name] = denials.get(name, 0) + 1
                if decision.errors:
                    self._failed(decision, position)
            size = position - self._decisions
            self._decisions = position
            self._approved += approved
            self._overridden += overridden
            if denials:
                totals = self._denials
                for name, count in denials.items():
                    totals[name] = totals.get(name, 0) + count
            if audit_problem is not None:
                self._audit_failures += size
            if (
                size < thresholds.min_batch
                and audit_problem is None
                and self._errors == errors_before
                and not (self._audit_alert or self._error_alert)
                and thresholds is self._thresholds
            ):
                return ()  # no alert can start or end with this batch
            return self._alerts(size, denials, self._errors > errors_before, thresholds, policy, audit_problem)

    def _failed(self, decision: ProtectionDecision, position: int) -> None:
        internal = [issue for issue in decision.errors if issue.code in INTERNAL_CODES]
        if not internal:
            self._invalid += 1
            return
        self._errors += 1
        self._error_at.append(position)
        while self._error_at[0] <= position - MAX_ERROR_WINDOW:
            self._error_at.popleft()
        self._last_error = {
            "code": internal[0].code,
            "message": internal[0].message,
            "decision_id": decision.decision_id,
            "at": format_instant(self._clock()),
        }

    def _alerts(
        self,
        size: int,
        denials: dict[str, int],
        new_errors: bool,
        thresholds: AlertThresholds,
        policy: PolicyRef,
        audit_problem: str | None,
    ) -> list[Alert]:
        alerts: list[Alert] = []
        if audit_problem is not None and not self._audit_alert:
            alerts.append(
                Alert(
                    "audit_failure",
                    f"the audit sink failed: {audit_problem}: {size} decision(s) denied",
                    policy,
                    {"problem": audit_problem, "decisions": size},
                )
            )
        self._audit_alert = audit_problem is not None  # re-armed by the next append that succeeds

        # only errors or other thresholds can push the rate above; with neither, it can only fall
        if new_errors or self._error_alert or thresholds is not self._thresholds:
            self._thresholds = thresholds
            errors, decided = self._window(thresholds.window)
            rate = errors / decided if decided else 0.0
            above = rate > thresholds.error_rate
            if above and not self._error_alert:
                last = self._last_error or {}
                alerts.append(
                    Alert(
                        "error_rate",
                        f"error rate {rate:.2%} over the last {decided} decision(s) is above "
                        f"{thresholds.error_rate:.2%}: last error: {last.get('code')}: {last.get('message')}",
                        policy,
                        {
                            "error_rate": rate,
                            "errors": errors,
                            "decisions": decided,
                            "threshold": thresholds.error_rate,
                            "last_error": self._last_error,
                        },
                    )
                )
            self._error_alert = above

        if size >= thresholds.min_batch:
            above_share = {name for name in denials if name != ERROR and denials[name] / size > thresholds.denial_share}
            for name in sorted(above_share - self._share_alert):
                share = denials[name] / size
                alerts.append(
                    Alert(
                        "denial_share",
                        f"`{name}` denied {denials[name]} of the {size} decisions of a batch ({share:.0%}), "
                        f"above {thresholds.denial_share:.0%}",
                        policy,
                        {
                            "protection": name,
                            "denied": denials[name],
                            "batch": size,
                            "share": share,
                            "threshold": thresholds.denial_share,
                        },
                    )
                )
            self._share_alert = above_share
        return alerts

    def _window(self, window: int) -> tuple[int, int]:
        """(errors, decisions) among the last `window` decisions."""
        decided = min(self._decisions, window)
        return len(self._error_at) - bisect_right(self._error_at, self._decisions - decided), decided

    def error_window(self, window: int) -> dict[str, Any]:
        """The error rate over the last `window` decisions (None before any) and the last error."""
        with self._lock:
            errors, decided = self._window(window)
            last = dict(self._last_error) if self._last_error else None
        return {
            "error_rate": errors / decided if decided else None,
            "errors": errors,
            "window": window,
            "decisions": decided,
            "last_error": last,
        }

    def snapshot(self) -> dict[str, Any]:
        """The `Engine.metrics()` dict (README, "Operations")."""
        with self._lock:
            decided, approved, overridden = self._decisions, self._approved, self._overridden
            errors, invalid, audit_failures = self._errors, self._invalid, self._audit_failures
            denials = dict(self._denials)
            latencies = list(self._latencies)
        ordered = sorted(latencies)
        return {
            "decisions": decided,
            "approved": approved,
            "denied": decided - approved,
            "overridden": overridden,
            "errors": errors,
            "invalid": invalid,
            "audit_failures": audit_failures,
            "denials_by_protection": dict(sorted(denials.items(), key=lambda item: (-item[1], item[0]))),
            "latency_ms": {
                "p50": nearest_rank(ordered, 50),
                "p95": nearest_rank(ordered, 95),
                "p99": nearest_rank(ordered, 99),
                "window": len(ordered),
            },
            "approval_rate": approved / decided if decided else None,
            "override_rate": overridden / decided if decided else None,
        }
