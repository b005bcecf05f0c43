"""Default locations of the state store and the audit trail (overridable by flag or env)."""

from __future__ import annotations

import os
from pathlib import Path

STATE_ENV = "PROTECT_STATE"
AUDIT_ENV = "PROTECT_AUDIT"


def state_home() -> Path:
    """`$XDG_STATE_HOME/protection-rules`, else `~/.local/state/protection-rules`."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "protection-rules"


def default_state_path() -> Path:
    return state_home() / "state.sqlite"


def default_audit_path() -> Path:
    return state_home() / "audit.sqlite"
