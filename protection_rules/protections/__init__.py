"""The built-in protections, one module each; the registry is explicit, keyed by YAML name."""

from __future__ import annotations

from .base import Condition, Context, Outcome, Protection, RuleSpec
from .core_asset_immunity import CoreAssetImmunity
from .grace_period import GracePeriod
from .holding_period import HoldingPeriod
from .regime_override import RegimeOverride
from .whipsaw_protection import WhipsawProtection

REGISTRY: dict[str, type[Protection]] = {
    cls.name: cls for cls in (CoreAssetImmunity, RegimeOverride, GracePeriod, HoldingPeriod, WhipsawProtection)
}

__all__ = ["REGISTRY", "Condition", "Context", "Outcome", "Protection", "RuleSpec"]
