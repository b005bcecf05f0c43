"""protection-rules: approve or deny portfolio position changes under a versioned policy."""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

# name -> module: imported on first use (PEP 562), so that a command, or `import
# protection_rules.errors`, loads only the modules it needs and not the whole engine
_LAZY = {
    "AuditError": ".errors",
    "Engine": ".engine",
    "EngineFailure": ".errors",
    "Issue": ".errors",
    "Policy": ".policy",
    "PolicyInvalid": ".errors",
    "ProtectionAwareRebalancer": ".rebalancer",
    "ProtectionDecision": ".models",
    "ProtectionRequest": ".models",
    "ProtectionResult": ".models",
    "ProtectionRulesError": ".errors",
    "RebalancingTarget": ".rebalancer",
    "RequestInvalid": ".errors",
    "StateError": ".errors",
    "TargetInvalid": ".errors",
    "load_policy": ".policy",
}

if TYPE_CHECKING:
    from .engine import Engine
    from .errors import (
        AuditError,
        EngineFailure,
        Issue,
        PolicyInvalid,
        ProtectionRulesError,
        RequestInvalid,
        StateError,
        TargetInvalid,
    )
    from .models import ProtectionDecision, ProtectionRequest, ProtectionResult
    from .policy import Policy, load_policy
    from .rebalancer import ProtectionAwareRebalancer, RebalancingTarget


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AuditError",
    "Engine",
    "EngineFailure",
    "Issue",
    "Policy",
    "PolicyInvalid",
    "ProtectionAwareRebalancer",
    "ProtectionDecision",
    "ProtectionRequest",
    "ProtectionResult",
    "ProtectionRulesError",
    "RebalancingTarget",
    "RequestInvalid",
    "StateError",
    "TargetInvalid",
    "__version__",
    "load_policy",
]
