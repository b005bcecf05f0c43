"""`Engine.health()`: whether the engine can decide and record right now, and why not.

Status rules (README, "Operations"), the worst that applies:

- `failing`: decisions are (or would be) denials by error: the audit sink is configured but
  unreachable or not writable (every decision would be a deny), the state store is configured
  but unreachable (every request without its own state would be a deny), or the error rate
  over the window is `FAILING_ERROR_RATE` or more;
- `degraded`: decisions are made but something needs a look: the error rate over the window
  is above the policy's `alerts.error_rate`, or the state store is reachable but not writable
  (commits and executions would fail);
- `ok` otherwise. A backend without a probe is reported with `reachable`/`writable` null and
  never changes the status.
"""

from __future__ import annotations

from typing import Any

from .alerts import AlertThresholds
from .models import PolicyRef

FAILING_ERROR_RATE = 0.5


def check_health(
    *, policy: PolicyRef, reloads: int, state: Any, audit: Any, errors: dict[str, Any], thresholds: AlertThresholds
) -> dict[str, Any]:
    """The `Engine.health()` dict. `errors` is `Metrics.error_window(...)`."""
    store, sink = probe(state), probe(audit)
    failing, degraded = [], []
    if sink["configured"] and (sink["reachable"] is False or sink["writable"] is False):
        failing.append(f"audit sink: {sink['problem']}")
    if store["configured"] and store["reachable"] is False:
        failing.append(f"state store: {store['problem']}")
    elif store["configured"] and store["writable"] is False:
        degraded.append(f"state store: {store['problem']}")
    rate = errors["error_rate"]
    if rate is not None and rate > thresholds.error_rate:
        where = failing if rate >= FAILING_ERROR_RATE else degraded
        where.append(
            f"error rate {rate:.2%} over the last {errors['decisions']} decision(s) is above {thresholds.error_rate:.2%}"
        )
    return {
        "status": "failing" if failing else "degraded" if degraded else "ok",
        "problems": failing + degraded,
        "policy": policy.to_dict(),
        "reloads": reloads,
        "state_store": store,
        "audit_sink": sink,
        "error_rate": rate,
        "error_window": {
            "size": errors["window"],
            "decisions": errors["decisions"],
            "errors": errors["errors"],
            "threshold": thresholds.error_rate,
        },
        "last_error": errors["last_error"],
    }


def probe(target: Any) -> dict[str, Any]:
    """A backend's own `probe()` (probing.py), with what it is; never raises."""
    if target is None:
        return {"configured": False, "backend": None, "path": None, "reachable": None, "writable": None, "problem": None}
    described = {"configured": True, "backend": type(target).__name__, "path": getattr(target, "path", None)}
    check = getattr(target, "probe", None)
    if check is None:
        return {**described, "reachable": None, "writable": None, "problem": "this backend has no probe"}
    try:
        return {**described, **check()}
    except Exception as exc:  # a probe of the caller's own backend may fail in any way
        return {**described, "reachable": False, "writable": False, "problem": f"the probe failed: {type(exc).__name__}: {exc}"}
