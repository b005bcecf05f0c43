"""The static difference between two policies: every parameter, protection, hierarchy and bypass
change, and whether content changed without a version bump."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import Issue, PolicyInvalid
from .loading import DocumentInvalid, load_yaml
from .policy import Policy
from .policy_source import PolicySource, policy_at_revision

ChangeKind = Literal[
    "metadata", "hierarchy", "added", "removed", "enabled", "disabled", "bypass", "parameter", "condition", "alerts"
]


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()  # a key one side does not have


@dataclass(frozen=True, slots=True)
class Change:
    """One difference; `path` is dotted (`protections.holding_period.min_days`), `protection`
    names the protection it belongs to (None for metadata and the hierarchy)."""

    kind: ChangeKind
    path: str
    protection: str | None
    old: Any
    new: Any

    def __str__(self) -> str:
        if self.kind in ("added", "removed"):
            return f"{self.path}: protection {self.kind}"
        return f"{self.path}: {_shown(self.old)} -> {_shown(self.new)}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "path": self.path, "protection": self.protection, "text": str(self)}
        if self.old is not ABSENT:
            out["old"] = self.old
        if self.new is not ABSENT:
            out["new"] = self.new
        return out


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    old: Policy
    new: Policy
    changes: tuple[Change, ...]

    @property
    def content_changed(self) -> bool:
        return self.old.sha256 != self.new.sha256

    @property
    def version_not_bumped(self) -> bool:
        """Content changed (the sha256 differs) but `metadata.version` did not."""
        return self.content_changed and self.old.version == self.new.version

    def for_protections(self, names: set[str]) -> list[Change]:
        return [change for change in self.changes if change.protection in names]


def diff_policies(old: Policy, new: Policy) -> PolicyDiff:
    """Every difference between two validated policies, metadata first, then the hierarchy,
    then each protection in the new hierarchy's order (protections only the old one has last),
    then the `alerts` block (which changes no decision)."""
    changes = _walk(old.document.get("metadata", {}), new.document.get("metadata", {}), "metadata", None, "metadata")
    if old.hierarchy != new.hierarchy:
        changes.append(Change("hierarchy", "hierarchy", None, list(old.hierarchy), list(new.hierarchy)))
    old_blocks, new_blocks = old.document["protections"], new.document["protections"]
    order = [*new.hierarchy, *new_blocks, *old.hierarchy, *old_blocks]
    for name in dict.fromkeys(order):
        path = f"protections.{name}"
        if name not in old_blocks and name in new_blocks:
            changes.append(Change("added", path, name, ABSENT, new_blocks[name]))
        elif name in old_blocks and name not in new_blocks:
            changes.append(Change("removed", path, name, old_blocks[name], ABSENT))
        elif name in old_blocks:
            changes += _walk(old_blocks[name], new_blocks[name], path, name, "parameter")
    if "alerts" in old.document or "alerts" in new.document:
        changes += _walk(old.document.get("alerts", ABSENT), new.document.get("alerts", ABSENT), "alerts", None, "alerts")
    return PolicyDiff(old, new, tuple(changes))


def _walk(old: Any, new: Any, path: str, protection: str | None, kind: ChangeKind) -> list[Change]:
    if kind == "parameter" and path.count(".") == 2 and path.endswith(".when"):
        kind = "condition"  # a custom protection's condition, walked down to the test that changed
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found: list[Change] = []
        for key in dict.fromkeys([*new, *old]):
            found += _walk(old.get(key, ABSENT), new.get(key, ABSENT), f"{path}.{key}", protection, kind)
        return found
    if kind == "condition" and _conditions(old) and _conditions(new) and len(old) == len(new):
        return [
            change
            for index, pair in enumerate(zip(old, new, strict=True))
            for change in _walk(*pair, f"{path}[{index}]", protection, kind)
        ]
    if _same(old, new):
        return []
    if kind == "parameter" and path.endswith(".enabled") and path.count(".") == 2:
        kind = "enabled" if new is True else "disabled"
    elif kind == "parameter" and ".bypass." in path:
        kind = "bypass"
    return [Change(kind, path, protection, old, new)]


def _conditions(value: Any) -> bool:
    """An `all`/`any` list (of mappings), as opposed to the values of an `in`."""
    return isinstance(value, list) and all(isinstance(item, Mapping) for item in value)


def _same(old: Any, new: Any) -> bool:
    # `1` and `1.0`, or `true` and `1`, are different content (the sha256 differs): compare as JSON
    return old is not ABSENT and new is not ABSENT and json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True)


def _shown(value: Any) -> str:
    return "(absent)" if value is ABSENT else json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------------------- version bumps


def version_bump_issues(path: str | Path, current: Policy, rev: str) -> list[Issue]:
    """`version-not-bumped` when the policy file's content differs from the same file at git
    revision `rev` but `metadata.version` does not, at `$.metadata.version` with its line. A file
    absent at `rev` is new: nothing to compare. A text at `rev` that no longer validates still
    counts when its version can be read: its content surely differs, so the version must too."""
    previous = policy_at_revision(rev, path)
    if previous is None:
        return []
    try:
        old_version, old_sha = _version_and_sha(previous)
    except DocumentInvalid:
        return []  # not even YAML at `rev`: there is no version to compare with
    if old_version != current.version or old_sha == current.sha256:
        return []
    message = f"the content changed since `{rev}` but `metadata.version` is still `{current.version}`: bump it"
    return [current.source_map.issue("version-not-bumped", ("metadata", "version"), message)]


def _version_and_sha(previous: PolicySource) -> tuple[Any, str | None]:
    try:
        policy = previous.load()
    except PolicyInvalid:
        data, _ = load_yaml(previous.text, previous.name)
        metadata = data.get("metadata") if isinstance(data, dict) else None
        return (metadata.get("version") if isinstance(metadata, dict) else None), None
    return policy.version, policy.sha256
