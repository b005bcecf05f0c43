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
)
from .models import ProtectionDecision, ProtectionRequest, ProtectionResult
from .policy import Policy, load_policy

__all__ = [
    "AuditError",
    "Engine",
    "EngineFailure",
    "Issue",
    "Policy",
    "PolicyInvalid",
    "ProtectionDecision",
    "ProtectionRequest",
    "ProtectionResult",
    "ProtectionRulesError",
    "RequestInvalid",
    "StateError",
    "__version__",
    "load_policy",
]
