"""Lint a valid policy: warnings for what is allowed but probably wrong.

Validation (policy.py) refuses what cannot work; lint flags what works but is unlikely to be
meant, such as a policy that approves everything. It reads the validated document and never
changes the policy or its hash. Only what is in force is linted: the parameters and lists of a
disabled protection are not. Each warning is an `Issue` with a stable code, located through
the policy's source map like an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from .errors import Issue, PolicyInvalid
from .fact_catalogue import BY_NAME
from .loading import Path_, SourceMap
from .policy import Policy, custom_names, load_policy
from .policy_diff import version_bump_issues
from .protections.regime_override import SEVERITIES
from .reading import display_name


@dataclass(frozen=True, slots=True)
class Usual:
    """The range a parameter usually lies in (inclusive), and what a value outside it does."""

    low: float
    high: float
    below: str = ""
    above: str = ""


# The README's table of usual ranges is this one; the schema's ranges are the hard limits.
USUAL: dict[tuple[str, str], Usual] = {
    ("grace_period", "score_threshold"): Usual(
        0.05,
        0.95,
        below="(almost) no score is below it, so grace periods (almost) never start",
        above="(almost) every score is below it, so (almost) every asset is failing",
    ),
    ("grace_period", "decay_rate"): Usual(
        0.5,
        0.99,
        below="the advised size more than halves every day in grace",
        above="the advised size (almost) never shrinks",
    ),
    ("grace_period", "min_decay_factor"): Usual(
        0.01,
        0.9,
        below="the advised size may shrink to (almost) nothing",
        above="the advised size (almost) never shrinks",
    ),
    ("grace_period", "days"): Usual(1, 90, above="a failing asset is kept for more than three months"),
    ("holding_period", "min_days"): Usual(
        1, 365, below="a minimum of 0 days never blocks", above="a position is locked for more than a year"
    ),
    ("whipsaw_protection", "max_cycles"): Usual(
        1, 10, above="more than 10 round trips in the window are allowed before re-entry is blocked"
    ),
    ("regime_override", "cooldown_days"): Usual(
        1,
        365,
        below="without a cooldown an asset may be overridden again at once, on every request",
        above="an asset may be overridden less than once a year",
    ),
    ("regime_override", "max_age_days"): Usual(
        1, 90, above="an override stays available for more than three months after a regime change"
    ),
}


def lint_policy(policy: Policy) -> list[Issue]:
    """Every warning for `policy`, in the order of the file."""
    source = policy.source_map
    blocks: Mapping[str, Mapping[str, Any]] = policy.document["protections"]
    enabled = {name for name, block in blocks.items() if block["enabled"]}
    found: list[Issue] = []
    if not any(policy.protections[name].can_block for name in enabled):
        message = "no protection that can block is enabled: every request is approved"
        found.append(source.issue("no-protection-enabled", ("protections",), message, key=True))
    for name, block in blocks.items():
        if name not in enabled:
            continue
        if "blocks" in block and not block["blocks"]:
            found.append(
                source.issue("blocks-empty", ("protections", name, "blocks"), f"`{name}` is enabled but blocks no action")
            )
        found.extend(_unusual(name, block, source))
    for name in custom_names(blocks):
        if name in enabled:
            found.extend(_unguarded(name, blocks[name]["when"], ("protections", name, "when"), source))
    if "regime_override" in enabled:
        found.extend(_bypass(blocks["regime_override"]["bypass"], enabled, source))
    return sorted(found, key=lambda i: (i.line or 0, i.column or 0, i.path, i.code))


def _unusual(name: str, block: Mapping[str, Any], source: SourceMap) -> list[Issue]:
    found = []
    for key, value in block.items():
        usual = USUAL.get((name, key))
        if usual is None or usual.low <= value <= usual.high:
            continue
        effect = usual.below if value < usual.low else usual.above
        message = f"`{key}` is `{value}`, outside the usual {usual.low:g} to {usual.high:g}: {effect}"
        found.append(source.issue("value-unusual", ("protections", name, key), message))
    return found


def _unguarded(name: str, when: Mapping[str, Any], path: Path_, source: SourceMap) -> list[Issue]:
    """A comparison on an optional fact (one a request may lack) when the condition has no
    `exists` test on that fact: absence then decides silently (the comparison is false)."""
    tests = list(_tests(when, path))
    guarded = {test["fact"] for _, test in tests if "exists" in test}
    found = []
    for where, test in tests:
        fact = test["fact"]
        if BY_NAME[fact].optional and "exists" not in test and fact not in guarded:
            message = (
                f"`{fact}` may be absent, and then this comparison is false (under `not`, true) whatever `{name}` "
                f"is for: add an `exists` test on `{fact}` to say what its absence should do"
            )
            found.append(source.issue("fact-absent-unguarded", (*where, "fact"), message))
    return found


def _tests(node: Mapping[str, Any], path: Path_) -> Iterator[tuple[Path_, Mapping[str, Any]]]:
    if "fact" in node:
        yield path, node
    elif "not" in node:
        yield from _tests(node["not"], (*path, "not"))
    else:
        [word] = [key for key in ("all", "any") if key in node]
        for index, item in enumerate(node[word]):
            yield from _tests(item, (*path, word, index))


def _bypass(bypass: Mapping[str, list[str]], enabled: set[str], source: SourceMap) -> list[Issue]:
    found = []
    base = ("protections", "regime_override", "bypass")
    if bypass["normal"]:
        message = "a `normal` regime change bypasses protections; usually only `high` and `critical` do"
        found.append(source.issue("bypass-normal", base + ("normal",), message))
    for severity, names in bypass.items():
        for index, name in enumerate(names):
            if name not in enabled:
                message = f"`{name}` is disabled: bypassing it does nothing"
                found.append(source.issue("bypass-disabled", base + (severity, index), message))
    # A more severe regime change should bypass at least what a milder one does.
    for milder, severer in pairwise(SEVERITIES):
        for index, name in enumerate(bypass[milder]):
            if name not in bypass[severer]:
                message = f"`{name}` is bypassed by a `{milder}` regime change but not by a `{severer}` one"
                found.append(source.issue("bypass-not-escalating", base + (milder, index), message))
    return found


@dataclass(frozen=True, slots=True)
class PolicyCheck:
    """What `protect validate` found in one file: errors, or the valid policy and its warnings."""

    file: str
    policy: Policy | None
    errors: tuple[Issue, ...] = ()
    warnings: tuple[Issue, ...] = ()

    @property
    def valid(self) -> bool:
        return self.policy is not None and not self.errors

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"file": self.file, "valid": self.valid}
        if self.policy is not None:
            data["policy"] = {"name": self.policy.name, "version": self.policy.version, "sha256": self.policy.sha256}
        data["errors"] = [issue.to_dict() for issue in self.errors]
        data["warnings"] = [issue.to_dict() for issue in self.warnings]
        return data


def check_policy(path: str | Path, *, bump_from: str | None = None) -> PolicyCheck:
    """Validate a policy file (`-`: standard input) and, when it is valid, lint it. With
    `bump_from` (a git revision), a content change since then without a version bump is an error."""
    try:
        policy = load_policy(path)
    except PolicyInvalid as exc:
        return PolicyCheck(display_name(path), None, errors=exc.issues)
    unbumped = tuple(version_bump_issues(path, policy, bump_from)) if bump_from else ()
    return PolicyCheck(display_name(path), policy, errors=unbumped, warnings=tuple(lint_policy(policy)))
