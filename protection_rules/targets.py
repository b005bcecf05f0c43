"""What a rebalance asks for: `RebalancingTarget` values (the plan's fields), checked on
construction, and the files `protect rebalance` reads (targets, regime).

A target that does not validate is an error naming the target and the field (`TargetInvalid`),
never a request the engine would decide: a mislabelled action (an `increase` to 0, which is a
close) would otherwise slip past the protections that block closes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import Issue, RequestInvalid, TargetInvalid
from .loading import MAX_MAGNITUDE, SourceMap, json_path, load_json, read_text
from .models import ProtectionDecision
from .parsing import parse_request
from .reading import DocumentInvalid, display_name
from .resources import schema
from .timestamps import format_instant
from .validation import fast_valid, schema_issues

TargetAction = Literal["open", "increase", "decrease", "close", "hold"]
Priority = Literal["portfolio", "trending", "regime", "fallback"]

_ASSET = re.compile(schema("request")["properties"]["asset"]["pattern"])

# Drift within this share of the current allocation is not worth a trade: a hold. The plan names
# no band; relative, because an absolute 5 points would hold every change of a 2% position.
HOLD_BAND = 0.05


@dataclass(frozen=True, slots=True)
class RebalancingTarget:
    """One asset's proposed change in a rebalance (the plan's `RebalancingTarget`).

    Allocations are fractions of the portfolio (0.05 is 5%, at most 1). With no `action`, the
    rebalancer derives it from the allocations (`derive_action`); a given action must agree with
    them. `decision` is set by `ProtectionAwareRebalancer.validate` (None for a hold).
    Raises `TargetInvalid` naming the target and the field.
    """

    asset: str
    action: TargetAction | None = None
    current_allocation_pct: float = 0.0
    target_allocation_pct: float = 0.0
    priority: Priority = "portfolio"
    score: float | None = None
    reason: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    decision: ProtectionDecision | None = None

    def __post_init__(self) -> None:
        issues = _target_issues(self.to_dict())
        if issues:
            raise TargetInvalid(issues)

    def to_dict(self) -> dict[str, Any]:
        """The target as a rebalance-targets.v1 item (without its decision)."""
        return {
            "asset": self.asset,
            "action": self.action,
            "current_allocation_pct": self.current_allocation_pct,
            "target_allocation_pct": self.target_allocation_pct,
            "priority": self.priority,
            "score": self.score,
            "reason": self.reason,
            "metadata": dict(self.metadata) if isinstance(self.metadata, Mapping) else self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RebalancingTarget:
        """A target from a rebalance-targets.v1 item (`null` means the default); `TargetInvalid`
        for anything else."""
        issues = _target_issues(data)
        if issues:
            raise TargetInvalid(issues)
        return cls(**{key: value for key, value in data.items() if value is not None})

    def resolved(self, hold_band: float = HOLD_BAND) -> RebalancingTarget:
        """This target with its action: the given one, or derived from the allocations."""
        if self.action is not None:
            return self
        action = derive_action(self.current_allocation_pct, self.target_allocation_pct, hold_band)
        return dataclasses.replace(self, action=action)


def derive_action(current: float, target: float, hold_band: float = HOLD_BAND) -> TargetAction:
    """0 to more: open; to 0: close; a change within `hold_band` of the current allocation: hold."""
    if current == 0:
        return "open" if target > 0 else "hold"
    if target == 0:
        return "close"
    if abs(target - current) <= hold_band * current:
        return "hold"
    return "increase" if target > current else "decrease"


# What each given action needs of the allocations, and how to say it
_AGREES = {
    "open": (lambda current, target: current == 0 < target, "needs a current allocation of 0 and a target above 0"),
    "close": (lambda current, target: target == 0 < current, "needs a current allocation above 0 and a target of 0"),
    "increase": (lambda current, target: 0 < current < target, "needs a target above a current allocation above 0"),
    "decrease": (lambda current, target: 0 < target < current, "needs a target above 0 and below the current allocation"),
}


def _target_issues(data: Any, source: SourceMap | None = None, path: tuple[str | int, ...] = ()) -> list[Issue]:
    """Every problem of one target item: its shape (the schema), then finite numbers and an
    action that agrees with the allocations. Each message names the target."""
    source = source or SourceMap(None)
    if not isinstance(data, Mapping):
        return [source.issue("schema-type", path, f"a target must be an object, got `{type(data).__name__}`")]
    if _fast_valid(data):
        return _named(data, _value_issues(data, source, path))
    issues = schema_issues("rebalance-targets", {"targets": [data]}, source)
    return _named(data, [dataclasses.replace(issue, path=_moved(issue.path, path)) for issue in issues])


def _named(data: Any, issues: list[Issue]) -> list[Issue]:
    asset = data.get("asset") if isinstance(data, Mapping) else None
    named = f"target `{asset}`: " if isinstance(asset, str) and _ASSET.search(asset) else ""
    return [dataclasses.replace(issue, message=named + issue.message) for issue in issues]


def _moved(found: str, path: tuple[str | int, ...]) -> str:
    """`$.targets[0].x` (as checked) -> the item's own path."""
    return json_path(path) + found.removeprefix("$.targets[0]")


def _value_issues(data: Mapping[str, Any], source: SourceMap, path: tuple[str | int, ...]) -> list[Issue]:
    issues = []
    for name in ("current_allocation_pct", "target_allocation_pct", "score"):
        value = data.get(name)
        # NaN passes JSON Schema's `minimum` and `maximum` (every comparison with it is false)
        if value is not None and not abs(value) <= MAX_MAGNITUDE:
            message = f"`{name}` must be a finite number within +/-{MAX_MAGNITUDE:g}, got `{_short(value)}`"
            issues.append(source.issue("number-not-finite", (*path, name), message))
    if issues:
        return issues
    for name in ("reason", "metadata"):
        try:
            json.dumps(data.get(name), allow_nan=False, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError, UnicodeEncodeError) as exc:
            issues.append(source.issue("value-not-json", (*path, name), f"`{name}` must be plain JSON: {exc}"))
    action, current, target = data.get("action"), data["current_allocation_pct"], data["target_allocation_pct"]
    if action in _AGREES and not _AGREES[action][0](current, target):
        issues.append(
            source.issue(
                "action-mismatch",
                (*path, "action"),
                f"`{action}` {_AGREES[action][1]}, got {current!r} to {target!r}",
            )
        )
    return issues


def _item(path: str) -> int:
    """The index of the item an issue's path is in (`$.targets[10].x`: 10), else -1."""
    found = re.match(r"\$\.targets\[(\d+)\]", path)
    return int(found.group(1)) if found else -1


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _fast_valid(data: Any) -> bool:
    return fast_valid("rebalance-targets", data, "target")


# ------------------------------------------------------------------------------------- files


def load_targets(path: str | Path) -> list[RebalancingTarget]:
    """The targets of a rebalance-targets.v1 JSON file (`-`: standard input), all issues at once.

    A missing file is a `UsageError`; anything else wrong is `TargetInvalid` naming the file,
    the JSON path of each problem and the target."""
    name = display_name(path)
    try:
        data = load_json(read_text(path), name)
    except DocumentInvalid as exc:
        raise TargetInvalid(exc.issues) from None
    source = SourceMap(name)
    issues = schema_issues("rebalance-targets", data, source)
    items = data.get("targets") if isinstance(data, dict) else None
    if isinstance(items, list):
        issues = [_named(items[at], [issue])[0] if (at := _item(issue.path)) >= 0 else issue for issue in issues]
        # the schema said what is wrong with each item's shape; the items of the right shape
        # are checked further, and all of them for duplicates
        for index, item in enumerate(items):
            if _fast_valid(item):
                issues.extend(_named(item, _value_issues(item, source, ("targets", index))))
        issues.extend(duplicate_issues(items, source, ("targets",)))
    if issues:
        raise TargetInvalid(sorted(issues, key=lambda issue: (_item(issue.path), issue.path)))
    return [RebalancingTarget.from_dict(item) for item in items]  # type: ignore[union-attr]


def duplicate_issues(items: list[Any], source: SourceMap | None = None, prefix: tuple[str, ...] = ()) -> list[Issue]:
    """A second target for the same asset: which one is meant cannot be guessed. Items (targets
    or target documents) that name no asset are left to the other checks."""
    source = source or SourceMap(None)
    first: dict[str, int] = {}
    issues = []
    for index, item in enumerate(items):
        asset = item.get("asset") if isinstance(item, Mapping) else getattr(item, "asset", None)
        if not isinstance(asset, str):
            continue
        if asset in first:
            issues.append(
                source.issue(
                    "target-duplicate",
                    (*prefix, index, "asset"),
                    f"target `{asset}`: a second target for `{asset}` (the first is {json_path((*prefix, first[asset]))}); "
                    "give one per asset",
                )
            )
        first.setdefault(asset, index)
    return issues


def load_regime(path: str | Path, current_date: int) -> dict[str, Any]:
    """The regime object of a regime.v1 JSON file, checked as a request checks it."""
    name = display_name(path)
    try:
        data = load_json(read_text(path), name)
    except DocumentInvalid as exc:
        raise RequestInvalid(exc.issues) from None
    if not isinstance(data, dict):
        raise RequestInvalid([Issue("schema-type", "$", "a regime must be a JSON object", name)])
    check_regime(data, current_date, source=name)
    return data


def check_regime(regime: Mapping[str, Any], current_date: int, *, source: str | None = None) -> None:
    """Raise `RequestInvalid` for a regime no request could carry at `current_date`.

    A request checks its regime (the schema, a `change_date` not after `current_date`); checking
    one request that carries it reports every problem once, before any target is decided. A file
    names its fields from its own root (`$.severity`), a Python caller's from the request
    (`$.regime.severity`)."""
    probe = {"asset": "regime", "action": "open", "current_date": format_instant(current_date), "regime": regime}
    try:
        parse_request(probe, source=source)
    except RequestInvalid as exc:
        if source is None:
            raise
        moved = [dataclasses.replace(issue, path="$" + issue.path.removeprefix("$.regime")) for issue in exc.issues]
        raise RequestInvalid(moved) from None
