"""protection-rules: approve or deny portfolio position changes under a versioned policy."""

from __future__ import annotations

__version__ = "0.1.0"

from .engine import Engine  # noqa: E402
from .errors import (  # noqa: E402
    AuditError,
    EngineFailure,
    Issue,
    PolicyInvalid,
    ProtectionRulesError,
    RequestInvalid,
    StateError,
)
from .models import ProtectionDecision, ProtectionRequest, ProtectionResult  # noqa: E402
from .policy import Policy, load_policy  # noqa: E402

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
