"""Core designations under the policy's limits: add, extend, revoke (the plan's core manager).

`max_assets` holds at every instant, not only at the moment of the change: a designation (or an
extension) is refused when, at any moment of its window, it would put more than `max_assets`
designations in force. Checking only "now" would let a backdated designation slip under the
limit while overlapping the others for weeks.
"""

from __future__ import annotations

from .errors import Refused
from .protections.core_asset_immunity import CoreAssetImmunity
from .recording import check_not_future
from .state import CoreRecord, StateStore
from .timestamps import days, format_instant


class CoreLimitError(Refused):
    """A designation the policy does not allow: a refused operation, not a broken store."""


def designate(store: StateStore, rules: CoreAssetImmunity, asset: str, at: int, reason: str = "", *, now: int) -> CoreRecord:
    """Make `asset` core from `at` for `expiry_days`, if that never puts more than `max_assets` in force."""
    check_not_future(at, now, "$.at")
    end = at + days(rules.expiry_days)
    existing = store.core(asset)
    if existing and _overlaps(existing, at, end):
        raise CoreLimitError(
            f"`{asset}` is already core from {format_instant(existing.designated_at)} until {_until(existing)}; use `extend`"
        )
    _check_limit(store, rules, asset, at, end)
    record = CoreRecord(asset, at, end, 0, reason)
    store.put_core(record)
    return record


def extend(store: StateStore, rules: CoreAssetImmunity, asset: str, at: int, *, now: int) -> CoreRecord:
    """Push the expiry out by another `expiry_days`, at most `max_extensions` times."""
    check_not_future(at, now, "$.at")
    existing = store.core(asset)
    if existing is None or not _overlaps(existing, at, at + 1):
        raise CoreLimitError(f"`{asset}` is not a core asset at {format_instant(at)}")
    if existing.extensions >= rules.max_extensions:
        raise CoreLimitError(
            f"`{asset}` was already extended {existing.extensions} times; the policy allows {rules.max_extensions}"
        )
    if existing.expires_at is None:
        raise CoreLimitError(f"`{asset}` is core with no expiry; there is nothing to extend")
    expires = existing.expires_at + days(rules.expiry_days)
    _check_limit(store, rules, asset, existing.expires_at, expires)
    record = CoreRecord(asset, existing.designated_at, expires, existing.extensions + 1, existing.reason)
    store.put_core(record)
    return record


def revoke(store: StateStore, asset: str) -> None:
    if store.core(asset) is None:
        raise CoreLimitError(f"`{asset}` is not a core asset")
    store.delete_core(asset)


def _check_limit(store: StateStore, rules: CoreAssetImmunity, asset: str, start: int, end: int) -> None:
    """Refuse when the others in force at some instant of [start, end), plus this one, exceed the limit."""
    others = [c for c in store.cores() if c.asset != asset and _overlaps(c, start, end)]
    # the count only rises where a window starts, so the peak is at `start` or at one of those
    for moment in sorted({start} | {c.designated_at for c in others if c.designated_at > start}):
        in_force = [c for c in others if _overlaps(c, moment, moment + 1)]
        if len(in_force) >= rules.max_assets:
            names = ", ".join(f"`{c.asset}`" for c in in_force)
            raise CoreLimitError(
                f"at {format_instant(moment)} {len(in_force)} core assets are already in force ({names}); "
                f"the policy allows {rules.max_assets}"
            )


def _overlaps(record: CoreRecord, start: int, end: int) -> bool:
    """Whether the designation's window [designated_at, expires_at) meets [start, end)."""
    return record.designated_at < end and (record.expires_at is None or start < record.expires_at)


def _until(record: CoreRecord) -> str:
    return format_instant(record.expires_at) if record.expires_at is not None else "no expiry"
