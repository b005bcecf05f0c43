"""Run cases (see cases.py): decide each request and compare the decision with what it expects.

Engines are built once per (policy file, overrides) and shared by every case that uses them;
they record nothing (`audit=None`) and read no state store, so running cases changes nothing.
"""

from __future__ import annotations

import copy
import json
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cases import Case
from .compiler import CompiledPolicy, compile_policy
from .engine import Engine
from .errors import CasesInvalid, Issue, PolicyInvalid
from .loading import SourceMap, json_path
from .models import ProtectionDecision, ProtectionResult
from .policy import Policy, load_policy, policy_from_data
from .timestamps import format_instant, parse_instant
from .validation import did_you_mean


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One expected field the decision does not match.

    `field` names it as the case does, down to the protection and fact (`decision`,
    `statuses.grace_period`, `facts.grace_period.advised_size`); `expected` is the value the
    case gives, `actual` the decision's (JSON values, instants as ISO text; None when absent);
    `message` says it in one line.
    """

    field: str
    expected: Any
    actual: Any
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "expected": self.expected, "actual": self.actual, "message": self.message}


@dataclass(frozen=True, slots=True)
class CaseResult:
    """A case, the decision it got, the compiled policy that gave it, and what differs."""

    case: Case
    decision: ProtectionDecision
    compiled: CompiledPolicy
    mismatches: tuple[Mismatch, ...]

    @property
    def passed(self) -> bool:
        return not self.mismatches


def deep_merge(base: Any, overrides: Any) -> Any:
    """`overrides` merged into a copy of `base`: mappings merge key by key, anything else replaces."""
    if isinstance(base, Mapping) and isinstance(overrides, Mapping):
        out = {key: copy.deepcopy(value) for key, value in base.items()}
        for key, value in overrides.items():
            out[key] = deep_merge(out[key], value) if key in out else copy.deepcopy(value)
        return out
    return copy.deepcopy(overrides)


class Engines:
    """One engine per (policy file, overrides), built on first use: each owns a rule network.

    The engines record nothing and read no state store. Safe to share between threads.
    """

    def __init__(self) -> None:
        self._engines: dict[str, Engine] = {}
        self._policies: dict[Path, Policy] = {}
        self._lock = threading.Lock()

    def get(self, policy: str | Path, overrides: Mapping[str, Any] | None = None, *, source: SourceMap | None = None) -> Engine:
        """The engine for `policy` with `overrides` merged in. `source` locates the overrides,
        for the issues of a merged policy that does not validate (`PolicyInvalid`)."""
        key = json.dumps([str(Path(policy).resolve()), overrides], sort_keys=True)
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                base = self._policy(policy)
                if overrides:
                    label = SourceMap(f"{policy} with overrides")
                    base = policy_from_data(deep_merge(base.document, overrides), source or label)
                engine = self._engines[key] = Engine(compile_policy(base), audit=None)
            return engine

    def _policy(self, policy: str | Path) -> Policy:
        path = Path(policy).resolve()
        if path not in self._policies:
            self._policies[path] = load_policy(policy)
        return self._policies[path]

    def for_case(self, case: Case) -> Engine:
        """The engine of a case. Raises `PolicyInvalid` for a policy file that does not
        validate, `CasesInvalid` (at the overrides' lines) for overrides that break it."""
        with self._lock:
            self._policy(case.policy)
        try:
            return self.get(case.policy, case.policy_overrides, source=case.overrides_source)
        except PolicyInvalid as exc:
            if not case.policy_overrides:  # the policy file itself fails to compile
                raise
            prefix = json_path(("cases", case.index, "policy_overrides"))
            raise CasesInvalid(
                Issue(i.code, prefix + i.path[1:], f"the policy with these overrides is invalid: {i.message}", *_where(i, case))
                for i in exc.issues
            ) from None

    def close(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.close()
            self._engines.clear()

    def __enter__(self) -> Engines:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _where(issue: Issue, case: Case) -> tuple[str | None, int | None, int | None]:
    # a compile error carries no line: point at the case
    if issue.line is None:
        return case.file, case.line, None
    return issue.file, issue.line, issue.column


def run_cases(cases: Iterable[Case], *, engines: Engines | None = None) -> list[CaseResult]:
    """Decide every case and compare; the results are in the order of `cases`.

    Every engine is built before any case runs, so a policy that does not validate stops the
    run at once: `PolicyInvalid` for a policy file, `CasesInvalid` (every case's issues) for
    overrides that break it. Without `engines`, a cache of its own is used and closed.
    """
    cases = list(cases)
    own = engines is None
    cache = Engines() if engines is None else engines
    try:
        issues: list[Issue] = []
        for case in cases:
            try:
                cache.for_case(case)
            except CasesInvalid as exc:
                issues.extend(exc.issues)
        if issues:
            raise CasesInvalid(issues)
        return [run_case(case, cache) for case in cases]
    finally:
        if own:
            cache.close()


def run_case(case: Case, engines: Engines) -> CaseResult:
    """Decide one case with its engine from `engines` and compare the decision with `expect`."""
    engine = engines.for_case(case)
    decision = engine.evaluate(case.request, source=case.location)
    return CaseResult(case, decision, engine.compiled, tuple(compare(case.expect, decision)))


def summary(results: Iterable[CaseResult]) -> str:
    """`N passed, M failed`."""
    outcomes = [result.passed for result in results]
    return f"{sum(outcomes)} passed, {len(outcomes) - sum(outcomes)} failed"


# ---------------------------------------------------------------------------------- comparing


def compare(expect: Mapping[str, Any], decision: ProtectionDecision) -> list[Mismatch]:
    """Every field of `expect` that `decision` does not match, in the order of the case format."""
    out: list[Mismatch] = []

    def differs(field: str, wanted: Any, seen: Any, message: str | None = None) -> None:
        out.append(Mismatch(field, wanted, seen, message or f"{field}: expected {_show(wanted)}, got {_show(seen)}"))

    if "decision" in expect and decision.decision != expect["decision"]:
        differs("decision", expect["decision"], decision.decision)
    if "blocking_systems" in expect and list(decision.blocking_systems) != list(expect["blocking_systems"]):
        differs("blocking_systems", expect["blocking_systems"], list(decision.blocking_systems))
    trace = {entry.system: entry for entry in decision.trace}
    for system, status in expect.get("statuses", {}).items():
        seen = trace[system].status if system in trace else None
        if seen != status:
            differs(
                f"statuses.{system}", status, seen, None if system in trace else _no_entry(f"statuses.{system}", status, trace)
            )
    if "unblocks_at" in expect and decision.unblocks_at != _instant(expect["unblocks_at"]):
        differs("unblocks_at", expect["unblocks_at"], _iso(decision.unblocks_at))
    for system, when in expect.get("trace_unblocks_at", {}).items():
        field = f"trace_unblocks_at.{system}"
        if system not in trace:
            differs(field, when, None, _no_entry(field, when, trace))
        elif trace[system].unblocks_at != _instant(when):
            differs(field, when, _iso(trace[system].unblocks_at))
    if "override_applied" in expect and decision.override_applied is not expect["override_applied"]:
        differs("override_applied", expect["override_applied"], decision.override_applied)
    for text in _texts(expect.get("override_reason_contains")):
        if decision.override_reason is None or text not in decision.override_reason:
            differs(
                "override_reason_contains",
                text,
                decision.override_reason,
                _missing_text("override_reason", text, decision.override_reason),
            )
    if "state_changes" in expect:
        seen_changes = [change.type for change in decision.state_changes]
        if seen_changes != list(expect["state_changes"]):
            differs("state_changes", expect["state_changes"], seen_changes)
    for text in _texts(expect.get("reason_contains")):
        if text not in decision.reason:
            differs("reason_contains", text, decision.reason, _missing_text("reason", text, decision.reason))
    for system, wanted in expect.get("facts", {}).items():
        out.extend(_fact_mismatches(system, wanted, trace))
    return out


def _fact_mismatches(system: str, wanted: Mapping[str, Any], trace: Mapping[str, ProtectionResult]) -> list[Mismatch]:
    out = []
    entry = trace.get(system)
    facts = entry.facts if entry is not None else {}
    for key, value in wanted.items():
        field = f"facts.{system}.{key}"
        if entry is None:
            out.append(Mismatch(field, value, None, _no_entry(field, value, trace)))
        elif key not in facts:
            out.append(Mismatch(field, value, None, f"{field}: expected {_show(value)}, got no such fact"))
        elif not same_value(facts[key], value):
            out.append(Mismatch(field, value, facts[key], f"{field}: expected {_show(value)}, got {_show(facts[key])}"))
    return out


def same_value(seen: Any, wanted: Any) -> bool:
    """Equality, with a relative tolerance of 1e-9 when either is a float (advised sizes are
    products of powers); a bool is never equal to a number, nor an int to a string."""
    if isinstance(wanted, float) or isinstance(seen, float):
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (seen, wanted))
        return numbers and math.isclose(seen, wanted, rel_tol=1e-9, abs_tol=1e-12)
    return seen == wanted and type(seen) is type(wanted)


def _instant(value: str | None) -> int | None:
    return None if value is None else parse_instant(value)


def _iso(instant: int | None) -> str | None:
    return None if instant is None else format_instant(instant)


def _texts(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=True)


def _no_entry(field: str, wanted: Any, trace: Mapping[str, ProtectionResult]) -> str:
    # a custom protection is named only in its policy, so a misspelt one is found here
    name = field.split(".")[1]
    return f"{field}: expected {_show(wanted)}, got no trace entry for this protection{did_you_mean(name, trace)}"


def _missing_text(field: str, text: str, seen: str | None) -> str:
    return f"{field}: expected a text containing {_show(text)}, got {_show(seen)}"
