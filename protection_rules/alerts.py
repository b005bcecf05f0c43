"""Alerts: the thresholds a policy sets (its optional `alerts` block), the alerts an engine
raises, and their delivery to the `protection_rules.alerts` logger and the caller's callbacks.

Every alert is edge-triggered: it fires when its condition starts to hold and not again until
the condition has stopped holding (README, "Operations"). Delivery never reaches back into a
decision: alerts are raised after a batch's decisions are final, and a callback that raises is
logged and skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .models import PolicyRef


class _Logger:
    """`logging.getLogger("protection_rules.alerts")`, looked up on each use: importing
    `logging` costs a cold `protect evaluate` ~3 ms, and only an alert or a failure logs."""

    def __getattr__(self, name: str) -> Any:
        import logging

        return getattr(logging.getLogger("protection_rules.alerts"), name)


logger: Any = _Logger()

AlertKind = Literal["error_rate", "denial_share", "audit_failure"]
AlertCallback = Callable[["Alert"], object]


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    """The policy's `alerts` block, each key defaulted (schemas/policy.v1.schema.json).

    A policy without the block gets these defaults and keeps its sha256: the defaults are never
    written into the policy document.
    """

    error_rate: float = 0.001  # the plan's target: under 0.1% of decisions fail
    window: int = 1000
    denial_share: float = 0.5
    min_batch: int = 20

    @classmethod
    def from_block(cls, block: Mapping[str, Any] | None) -> AlertThresholds:
        return cls(**block) if block else cls()


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: `kind`, a one-line `message`, the policy in force and the figures behind it."""

    kind: AlertKind
    message: str
    policy: PolicyRef
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "policy": self.policy.to_dict(), "details": dict(self.details)}


def deliver(alerts: Iterable[Alert], callbacks: Iterable[AlertCallback]) -> None:
    """Log each alert (ERROR for the audit sink, else WARNING), then hand it to each callback;
    a callback that raises is logged with its traceback and the others still run."""
    import logging

    for alert in alerts:
        level = logging.ERROR if alert.kind == "audit_failure" else logging.WARNING
        logger.log(level, "%s", alert.message, extra={"alert": alert.to_dict()})
        for callback in callbacks:
            try:
                callback(alert)
            except Exception:
                logger.exception("alert callback %r raised on a %s alert; the decisions stand", callback, alert.kind)
