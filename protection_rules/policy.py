"""Load a policy file: YAML with line numbers, JSON Schema, then the semantic pass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .alerts import AlertThresholds
from .canonical import content_hash
from .errors import Issue, PolicyInvalid
from .loading import DocumentInvalid, SourceMap, load_yaml, read_text
from .protections import REGISTRY, Protection
from .protections.regime_override import SEVERITIES
from .reading import display_name
from .validation import did_you_mean, schema_issues


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy. `sha256` hashes its canonical JSON, so comments and layout don't count.

    `source_map` keeps where each value was written, so findings about a valid policy (lint
    warnings) carry lines like errors do. `alerts` is the optional `alerts` block with its
    defaults filled in (the document, and so the sha256, stays as written).
    """

    name: str
    version: str
    description: str
    owner: str
    hierarchy: tuple[str, ...]
    protections: Mapping[str, Protection]
    sha256: str
    source: str
    document: Mapping[str, Any]
    source_map: SourceMap = field(compare=False, repr=False)
    alerts: AlertThresholds = field(default_factory=AlertThresholds)

    def priority(self, name: str) -> int:
        return self.hierarchy.index(name) + 1


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raises `PolicyInvalid` carrying every issue found."""
    return parse_policy(*read_policy_text(path))


def read_policy_text(path: str | Path) -> tuple[str, str]:
    """The text of a policy file (`-`: standard input, bounded) and the name its issues give it."""
    name = display_name(path)
    try:
        return read_text(path, name), name
    except DocumentInvalid as exc:
        raise PolicyInvalid(exc.issues) from None


def parse_policy(text: str, name: str) -> Policy:
    """Validate the text of a policy; `name` names it in issues. Raises `PolicyInvalid`."""
    try:
        data, source = load_yaml(text, name)
    except DocumentInvalid as exc:
        raise PolicyInvalid(exc.issues) from None
    return policy_from_data(data, source)


def policy_from_data(data: Any, source: SourceMap) -> Policy:
    if not isinstance(data, dict):
        raise PolicyInvalid(
            [source.issue("document-not-mapping", (), f"a policy must be a mapping, got a {type(data).__name__}")]
        )
    issues = schema_issues("policy", data, source) + semantic_issues(data, source)
    if issues:
        raise PolicyInvalid(_dedupe(issues))
    meta = data["metadata"]
    return Policy(
        name=meta["name"],
        version=meta["version"],
        description=meta["description"],
        owner=meta["owner"],
        hierarchy=tuple(data["hierarchy"]),
        protections={key: REGISTRY[key](block) for key, block in data["protections"].items()},
        sha256=content_hash(data),
        source=source.file or "<policy>",
        document=data,
        source_map=source,
        alerts=AlertThresholds.from_block(data.get("alerts")),
    )


def semantic_issues(data: Mapping[str, Any], source: SourceMap) -> list[Issue]:
    """Second pass: what the schema cannot say. Tolerant of shapes the schema already rejected."""
    issues: list[Issue] = []
    raw_hierarchy = data.get("hierarchy")
    hierarchy = [h for h in raw_hierarchy if isinstance(h, str)] if isinstance(raw_hierarchy, list) else []
    blocks = data.get("protections") if isinstance(data.get("protections"), dict) else {}

    seen: set[str] = set()
    for index, name in enumerate(hierarchy):
        if name in seen:
            issues.append(source.issue("hierarchy-duplicate", ("hierarchy", index), f"`{name}` appears twice in the hierarchy"))
        seen.add(name)

    unknown_blocks = [key for key in blocks if key not in REGISTRY]
    for name in hierarchy:
        # a misspelt block is reported once, by the schema, as an unknown field with a did-you-mean
        if name in REGISTRY and name not in blocks and not did_you_mean(name, unknown_blocks):
            issues.append(
                source.issue(
                    "protection-missing",
                    ("protections",),
                    f"`{name}` is in the hierarchy but has no block under `protections`",
                    key=True,
                )
            )
    # A misspelt hierarchy entry is reported by the schema (with a did-you-mean); checks that
    # read the hierarchy would only echo it as more errors, so they wait for a clean hierarchy.
    trusted = isinstance(raw_hierarchy, list) and all(h in REGISTRY for h in raw_hierarchy)
    for name, block in blocks.items():
        enabled = isinstance(block, dict) and block.get("enabled") is True
        if trusted and name in REGISTRY and enabled and name not in hierarchy:
            issues.append(
                source.issue(
                    "hierarchy-missing",
                    ("protections", name),
                    f"`{name}` is enabled but not placed in the hierarchy",
                    key=True,
                )
            )

    if trusted:
        issues.extend(_bypass_issues(hierarchy, blocks.get("regime_override"), source))

    holding = blocks.get("holding_period")
    if isinstance(holding, dict):
        low, high = holding.get("min_days"), holding.get("max_days")
        if _is_int(low) and _is_int(high) and high < low:
            issues.append(
                source.issue(
                    "range-order",
                    ("protections", "holding_period", "max_days"),
                    f"`max_days` ({high}) must be >= `min_days` ({low})",
                )
            )
    return issues


def _bypass_issues(hierarchy: list[str], block: Any, source: SourceMap) -> list[Issue]:
    if not isinstance(block, dict) or not isinstance(block.get("bypass"), dict):
        return []
    own = hierarchy.index("regime_override") if "regime_override" in hierarchy else None
    issues = []
    for severity in SEVERITIES:
        names = block["bypass"].get(severity)
        if not isinstance(names, list):
            continue
        for index, name in enumerate(names):
            path = ("protections", "regime_override", "bypass", severity, index)
            if not isinstance(name, str) or name not in REGISTRY:
                continue  # the schema reports it, with a did-you-mean
            if not REGISTRY[name].overridable:
                issues.append(source.issue("bypass-core", path, f"`{name}` is never overridable"))
            elif name == "regime_override":
                issues.append(source.issue("bypass-not-lower", path, "`regime_override` cannot bypass itself"))
            elif name not in hierarchy:
                hint = did_you_mean(name, hierarchy)
                issues.append(source.issue("bypass-not-in-hierarchy", path, f"`{name}` is not in the hierarchy{hint}"))
            elif own is not None and hierarchy.index(name) < own:
                issues.append(
                    source.issue(
                        "bypass-not-lower",
                        path,
                        f"`{name}` has a higher priority than `regime_override`; an override may only bypass lower ones",
                    )
                )
    return issues


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dedupe(issues: list[Issue]) -> list[Issue]:
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: (i.line or 0, i.column or 0, i.path, i.code))
