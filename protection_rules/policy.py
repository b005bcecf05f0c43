"""Load a policy file: YAML with line numbers, JSON Schema, then the semantic pass."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .alerts import AlertThresholds
from .canonical import content_hash
from .condition_checks import custom_issues
from .errors import Issue, PolicyInvalid
from .loading import DocumentInvalid, SourceMap, json_path, load_yaml, read_text
from .protections import REGISTRY, Protection
from .protections.condition import TYPE, ConditionProtection
from .protections.regime_override import SEVERITIES
from .reading import display_name
from .validation import did_you_mean, fast_valid, not_one_of, schema_issues

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


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
    issues = _schema_issues(data, source) + semantic_issues(data, source)
    if issues:
        raise PolicyInvalid(_dedupe(issues))
    meta = data["metadata"]
    return Policy(
        name=meta["name"],
        version=meta["version"],
        description=meta["description"],
        owner=meta["owner"],
        hierarchy=tuple(data["hierarchy"]),
        protections={key: _protection(key, block) for key, block in data["protections"].items()},
        sha256=content_hash(data),
        source=source.file or "<policy>",
        document=data,
        source_map=source,
        alerts=AlertThresholds.from_block(data.get("alerts")),
    )


def _protection(name: str, block: Mapping[str, Any]) -> Protection:
    return REGISTRY[name](block) if name in REGISTRY else ConditionProtection(name, block)


def custom_names(blocks: Mapping[str, Any]) -> list[str]:
    """The custom protections of a policy's `protections`, in file order: the blocks with a
    `type` (the schema says which type), named as no built-in is."""
    return [name for name, block in blocks.items() if name not in REGISTRY and isinstance(block, dict) and "type" in block]


def _closest_builtin(name: str) -> list[str]:
    import difflib  # only a misspelt block needs it

    return difflib.get_close_matches(name, REGISTRY, n=1, cutoff=0.6)


def _schema_issues(data: Mapping[str, Any], source: SourceMap) -> list[Issue]:
    """The schema's issues, less two kinds the semantic pass says better: those inside a custom
    protection's `when` (condition_checks.py), and those inside a misspelt built-in's block,
    which is one mistake (an unknown field with a did-you-mean), not a custom protection
    missing its `type`."""
    blocks = data.get("protections") if isinstance(data.get("protections"), dict) else {}
    replaced, issues = [], []
    for name, block in blocks.items():
        if name in REGISTRY or not isinstance(block, dict):
            continue
        if block.get("type") == TYPE and "when" in block:
            replaced.append(json_path(("protections", name, "when")))
        elif "type" not in block and (match := _closest_builtin(name)):
            replaced.append(json_path(("protections", name)))
            message = f"unknown field `{name}`; did you mean `{match[0]}`?"
            issues.append(source.issue("schema-unknown-field", ("protections", name), message, key=True))
    if fast_valid("policy", data):  # the fast gate passes a valid policy without importing jsonschema
        return issues
    for issue in schema_issues("policy", data, source):
        if not any(issue.path == prefix or issue.path.startswith((prefix + ".", prefix + "[")) for prefix in replaced):
            issues.append(issue)
    return issues


def semantic_issues(data: Mapping[str, Any], source: SourceMap) -> list[Issue]:
    """Second pass: what the schema cannot say. Tolerant of shapes the schema already rejected."""
    issues: list[Issue] = []
    raw_hierarchy = data.get("hierarchy")
    hierarchy = [h for h in raw_hierarchy if isinstance(h, str)] if isinstance(raw_hierarchy, list) else []
    blocks = data.get("protections") if isinstance(data.get("protections"), dict) else {}
    custom = custom_names(blocks)
    known = [*REGISTRY, *custom]

    seen: set[str] = set()
    for index, name in enumerate(hierarchy):
        if name in seen:
            issues.append(source.issue("hierarchy-duplicate", ("hierarchy", index), f"`{name}` appears twice in the hierarchy"))
        seen.add(name)
        if name not in known and _NAME.match(name):  # else the schema reports its pattern
            issues.append(source.issue("schema-enum", ("hierarchy", index), _unknown_name(name, known)))

    unknown_blocks = [key for key in blocks if key not in known]
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
    # A misspelt hierarchy entry is reported above (with a did-you-mean); checks that read the
    # hierarchy would only echo it as more errors, so they wait for a clean hierarchy.
    trusted = isinstance(raw_hierarchy, list) and all(h in known for h in raw_hierarchy)
    for name, block in blocks.items():
        enabled = isinstance(block, dict) and block.get("enabled") is True
        if trusted and name in known and enabled and name not in hierarchy:
            issues.append(
                source.issue(
                    "hierarchy-missing",
                    ("protections", name),
                    f"`{name}` is enabled but not placed in the hierarchy",
                    key=True,
                )
            )

    issues.extend(_bypass_issues(hierarchy if trusted else None, blocks.get("regime_override"), known, source))
    for name in custom:
        if blocks[name]["type"] == TYPE:
            issues.extend(custom_issues(name, blocks[name], blocks, source))

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


def _unknown_name(name: str, known: list[str]) -> str:
    message = not_one_of(name, known)
    if did_you_mean(name, known):
        return message
    return message + ", nor a custom protection: give it a block with `type: condition` under `protections`"


def _bypass_issues(hierarchy: list[str] | None, block: Any, known: list[str], source: SourceMap) -> list[Issue]:
    """Bypass lists name known protections; with a clean `hierarchy` (else None), only those
    below `regime_override` and never `core_asset_immunity`."""
    if not isinstance(block, dict) or not isinstance(block.get("bypass"), dict):
        return []
    own = hierarchy.index("regime_override") if hierarchy and "regime_override" in hierarchy else None
    issues = []
    for severity in SEVERITIES:
        names = block["bypass"].get(severity)
        if not isinstance(names, list):
            continue
        for index, name in enumerate(names):
            path = ("protections", "regime_override", "bypass", severity, index)
            if not isinstance(name, str) or not _NAME.match(name):
                continue  # the schema reports it
            if name not in known:
                issues.append(source.issue("schema-enum", path, _unknown_name(name, known)))
            elif hierarchy is None:
                continue
            elif name in REGISTRY and not REGISTRY[name].overridable:
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
