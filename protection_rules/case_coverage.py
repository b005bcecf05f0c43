"""What a run of cases exercised: rule ids fired, statuses per protection and action, overrides.

Coverage is measured per policy file. Cases with `policy_overrides` run under their own
compiled variant and count there; a policy file's figures are the union over its variants: a
rule id counts once, as fired when it fired under any variant that compiled it. The overall
percentage is the rule ids fired over the rule ids compiled, summed over the policy files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, get_args

from .compiler import CompiledPolicy
from .models import Action
from .protections.regime_override import SEVERITIES, RegimeOverride
from .testing import CaseResult

ACTIONS: tuple[str, ...] = get_args(Action)
# the action an invalid request is counted under when it names none of the four
OTHER_ACTION = "other"


@dataclass
class VariantCoverage:
    """One compiled policy (a policy file, or it with overrides) and the cases decided under it."""

    compiled: CompiledPolicy
    overridden: bool
    cases: int = 0
    fired: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        ref = self.compiled.ref
        return {
            "name": ref.name,
            "version": ref.version,
            "sha256": ref.sha256,
            "overridden": self.overridden,
            "cases": self.cases,
            "rules": {rule.id: self.fired[rule.id] for rule in self.compiled.rules},
        }


@dataclass
class PolicyCoverage:
    """One policy file: its variants and, over all of them, what the cases exercised."""

    file: str
    variants: dict[str, VariantCoverage] = field(default_factory=dict)
    # protection -> action -> status -> count
    outcomes: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)
    overrides_applied: Counter[str] = field(default_factory=Counter)

    @property
    def cases(self) -> int:
        return sum(v.cases for v in self.variants.values())

    @property
    def rules(self) -> dict[str, int]:
        """Every rule id any variant compiled, in compile order, with how often it fired."""
        out: dict[str, int] = {}
        for variant in self.variants.values():
            for rule in variant.compiled.rules:
                out[rule.id] = out.get(rule.id, 0) + variant.fired[rule.id]
        return out

    @property
    def fired(self) -> int:
        return sum(1 for count in self.rules.values() if count)

    def gaps(self) -> list[str]:
        """What the cases never exercised, in words."""
        gaps = [f"rule `{rule}` never fired" for rule, count in self.rules.items() if not count]
        blocks, bypassed, severities = self._blocking()
        for protection, actions in blocks.items():
            seen = self.outcomes.get(protection, {})
            for action in actions:
                statuses = seen.get(action, Counter())
                an = f"{_article(action)} `{action}`"
                if not statuses["block"]:
                    gaps.append(f"{protection} never blocked {an}")
                if not statuses["pass"]:
                    gaps.append(f"{protection} never passed {an}")
                if protection in bypassed and not statuses["overridden"]:
                    gaps.append(f"{protection} was never overridden on {an}")
        gaps += [f"no `{s}` regime override was ever applied" for s in severities if not self.overrides_applied[s]]
        return gaps

    def _blocking(self) -> tuple[dict[str, list[str]], set[str], list[str]]:
        """Over the variants: the actions each enabled protection may block, the protections a
        bypass list names, and the severities that bypass something."""
        blocks: dict[str, list[str]] = {}
        bypassed: set[str] = set()
        severities: set[str] = set()
        for variant in self.variants.values():
            policy = variant.compiled.policy
            for name in policy.hierarchy:
                protection = policy.protections[name]
                if not protection.enabled:
                    continue
                if protection.can_block:
                    known = blocks.setdefault(name, [])
                    known += [a for a in protection.blocks if a not in known]
                if isinstance(protection, RegimeOverride):
                    for severity, names in protection.bypass.items():
                        if names:
                            severities.add(severity)
                            bypassed.update(names)
        return blocks, bypassed, [s for s in SEVERITIES if s in severities]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "cases": self.cases,
            "rules_compiled": len(self.rules),
            "rules_fired": self.fired,
            "percent": _percent(self.fired, len(self.rules)),
            "rules": self.rules,
            "outcomes": {p: {a: dict(s) for a, s in actions.items()} for p, actions in self.outcomes.items()},
            "overrides_applied": dict(self.overrides_applied),
            "gaps": self.gaps(),
            "variants": [variant.to_dict() for variant in self.variants.values()],
        }


@dataclass(frozen=True)
class Coverage:
    """Coverage of every policy file the cases used, and the overall rule-id percentage."""

    policies: tuple[PolicyCoverage, ...]

    @property
    def compiled(self) -> int:
        return sum(len(p.rules) for p in self.policies)

    @property
    def fired(self) -> int:
        return sum(p.fired for p in self.policies)

    @property
    def percent(self) -> float:
        """Rule ids fired / rule ids compiled, in percent (100 when nothing was compiled)."""
        return _percent(self.fired, self.compiled)

    def meets(self, minimum: float) -> bool:
        """Whether the percentage is at least `minimum`, compared exactly (not rounded)."""
        return self.compiled == 0 or 100.0 * self.fired >= minimum * self.compiled

    def to_dict(self) -> dict[str, Any]:
        return {
            "percent": self.percent,
            "rules_compiled": self.compiled,
            "rules_fired": self.fired,
            "policies": [policy.to_dict() for policy in self.policies],
        }


def measure_coverage(results: Iterable[CaseResult]) -> Coverage:
    """What the decisions of `results` exercised, per policy file (see the module docstring)."""
    policies: dict[str, PolicyCoverage] = {}
    for result in results:
        case, decision = result.case, result.decision
        policy = policies.setdefault(str(case.policy.resolve()), PolicyCoverage(str(case.policy)))
        variant = policy.variants.setdefault(
            result.compiled.sha256, VariantCoverage(result.compiled, overridden=bool(case.policy_overrides))
        )
        variant.cases += 1
        action = decision.action if decision.action in ACTIONS else OTHER_ACTION
        for entry in decision.trace:
            variant.fired.update(entry.rules)
            policy.outcomes.setdefault(entry.system, {}).setdefault(action, Counter())[entry.status] += 1
        for change in decision.state_changes:
            if change.type == "override_used" and change.severity:
                policy.overrides_applied[change.severity] += 1
    return Coverage(tuple(policies.values()))


def _percent(fired: int, compiled: int) -> float:
    return round(100.0 * fired / compiled, 2) if compiled else 100.0


def _article(action: str) -> str:
    return "an" if action[0] in "aeiou" else "a"
