"""Core designations under the policy's limits: add, extend, revoke (the plan's core manager)."""

from __future__ import annotations

from .errors import Refused
from .protections.core_asset_immunity import CoreAssetImmunity
from .state import CoreRecord, StateStore
from .timestamps import days, format_instant


class CoreLimitError(Refused):
    """A designation the policy does not allow: a refused operation, not a broken store."""


def designate(store: StateStore, rules: CoreAssetImmunity, asset: str, at: int, reason: str = "") -> CoreRecord:
    """Make `asset` core from `at` for `expiry_days`, if fewer than `max_assets` are core then."""
    existing = store.core(asset)
    if existing and _active(existing, at):
        raise CoreLimitError(f"`{asset}` is already core until {_until(existing)}; use `extend`")
    active = [c for c in store.cores() if c.asset != asset and _active(c, at)]
    if len(active) >= rules.max_assets:
        names = ", ".join(c.asset for c in active)
        raise CoreLimitError(f"already {len(active)} core assets ({names}); the policy allows {rules.max_assets}")
    record = CoreRecord(asset, at, at + days(rules.expiry_days), 0, reason)
    store.put_core(record)
    return record


def extend(store: StateStore, rules: CoreAssetImmunity, asset: str, at: int) -> CoreRecord:
    """Push the expiry out by another `expiry_days`, at most `max_extensions` times."""
    existing = store.core(asset)
    if existing is None or not _active(existing, at):
        raise CoreLimitError(f"`{asset}` is not a core asset at {format_instant(at)}")
    if existing.extensions >= rules.max_extensions:
        raise CoreLimitError(
            f"`{asset}` was already extended {existing.extensions} times; the policy allows {rules.max_extensions}"
        )
    expires = existing.expires_at + days(rules.expiry_days) if existing.expires_at is not None else None
    record = CoreRecord(asset, existing.designated_at, expires, existing.extensions + 1, existing.reason)
    store.put_core(record)
    return record


def revoke(store: StateStore, asset: str) -> None:
    if store.core(asset) is None:
        raise CoreLimitError(f"`{asset}` is not a core asset")
    store.delete_core(asset)


def _active(record: CoreRecord, at: int) -> bool:
    return record.designated_at <= at and (record.expires_at is None or at < record.expires_at)


def _until(record: CoreRecord) -> str:
    return format_instant(record.expires_at) if record.expires_at is not None else "no expiry"
