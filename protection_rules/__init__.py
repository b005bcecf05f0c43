"""protection-rules: approve or deny portfolio position changes under a versioned policy."""

from __future__ import annotations

__version__ = "0.1.0"

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
