"""The report of `protect diff`: JSON (schemas/diff-report.v1.schema.json) and text."""

from __future__ import annotations

from typing import Any

from .impact import CATEGORIES, Impact
from .policy import Policy
from .policy_diff import PolicyDiff

REPORT_FORMAT = "protection-rules/diff-report/v1"


def report_dict(diff: PolicyDiff, impact: Impact | None, fail_on: str | None) -> dict[str, Any]:
    return {
        "format": REPORT_FORMAT,
        "old": _policy(diff.old),
        "new": _policy(diff.new),
        "content_changed": diff.content_changed,
        "version_not_bumped": diff.version_not_bumped,
        "changes": [change.to_dict() for change in diff.changes],
        "impact": impact.to_dict() if impact is not None else None,
        "fail_on": fail_on,
        "failed": impact is not None and impact.fails(fail_on),
    }


def report_text(diff: PolicyDiff, impact: Impact | None, fail_on: str | None) -> str:
    lines = [f"policy diff: {_named(diff.old)} -> {_named(diff.new)}"]
    if not diff.content_changed:
        lines.append("  same content")
    lines += [f"  {change}" for change in diff.changes]
    if diff.version_not_bumped:
        lines.append(f"  the content changed but `metadata.version` is still `{diff.new.version}`")
    if impact is not None:
        lines += ["", *_impact_lines(impact)]
        if impact.fails(fail_on):
            lines += ["", f"failed: --fail-on {fail_on}"]
    return "\n".join(lines)


def _impact_lines(impact: Impact) -> list[str]:
    sources = "; ".join(
        f"{c.source}: {c.decided} decided" + "".join(f", {n} {reason} skipped" for reason, n in sorted(c.skipped.items()))
        for c in impact.corpora
    )
    counts = ", ".join(f"{impact.counts[c]} {c}" for c in CATEGORIES if impact.counts[c])
    lines = [f"impact: {impact.changed} of {impact.decided} decisions change ({counts or 'none'})", f"  corpora: {sources}"]
    for group in impact.ordered_groups():
        how = ", ".join(f"{name} {old} -> {new}" for name, old, new in group.transitions) or "no protection's status"
        lines += ["", f"{group.category}: {group.count}  ({how})"]
        lines += [f"  because {change}" for change in group.parameters] or [
            "  because: no parameter of these protections changed"
        ]
        for example in group.examples:
            old, new = example["old"], example["new"]
            lines.append(
                f"  {example['source']}  {example['request_id'] or '-'}  {example['action']} {example['asset']}"
                f" at {example['current_date']}: {_verdict(old)} -> {_verdict(new)}"
            )
    return lines


def _verdict(brief: dict[str, Any]) -> str:
    if brief["decision"] == "deny":
        return f"deny ({', '.join(brief['blocking_systems'])})"
    return "approve (override)" if brief["override_applied"] else "approve"


def _policy(policy: Policy) -> dict[str, Any]:
    return {"source": policy.source, "name": policy.name, "version": policy.version, "sha256": policy.sha256}


def _named(policy: Policy) -> str:
    return f"{policy.source} ({policy.name} {policy.version}, sha256 {policy.sha256[:12]})"
