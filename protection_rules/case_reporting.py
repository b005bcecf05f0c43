"""Render a run of cases: text for people, a JSON report (schemas/test-report.v1.schema.json)
and JUnit XML for CI systems."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from itertools import groupby
from typing import Any

import click

from .case_coverage import Coverage, PolicyCoverage
from .testing import CaseResult

# What XML 1.0 cannot carry at all, not even escaped: control characters and lone surrogates
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def failure_text(result: CaseResult) -> str:
    """`FAIL file:line name`, then one line per field that differs."""
    head = f"{click.style('FAIL', fg='red', bold=True)} {result.case.location} {result.case.name}"
    return "\n".join([head, *(f"  {mismatch.message}" for mismatch in result.mismatches)])


def coverage_text(coverage: Coverage, minimum: float | None = None) -> str:
    """Per policy file: the rule ids fired, statuses per protection and action, overrides, gaps."""
    lines: list[str] = []
    for policy in coverage.policies:
        lines += _policy_coverage_text(policy)
    lines.append(f"coverage: {coverage.percent:g}% of rule ids fired ({coverage.fired} of {coverage.compiled})")
    if minimum is not None and not coverage.meets(minimum):
        lines.append(f"coverage {coverage.percent:g}% is below --min-coverage {minimum:g}")
    return "\n".join(lines)


def _policy_coverage_text(policy: PolicyCoverage) -> list[str]:
    variants = len(policy.variants)
    lines = [
        f"coverage of {policy.file}: {policy.fired} of {len(policy.rules)} rule ids fired "
        f"({policy.to_dict()['percent']:g}%), {policy.cases} cases, {variants} compiled variant{'s' * (variants != 1)}"
    ]
    width = max((len(name) for name in policy.outcomes), default=0)
    for protection, actions in policy.outcomes.items():
        seen = "; ".join(
            f"{action}: " + ", ".join(f"{status} {count}" for status, count in sorted(statuses.items()))
            for action, statuses in sorted(actions.items())
        )
        lines.append(f"  {protection:<{width}}  {seen}")
    applied = ", ".join(f"{severity} {count}" for severity, count in sorted(policy.overrides_applied.items()))
    lines.append(f"  overrides applied: {applied or 'none'}")
    gaps = policy.gaps()
    lines.append("  gaps:" if gaps else "  gaps: none")
    lines += [f"    {gap}" for gap in gaps]
    return lines


def report_dict(results: Sequence[CaseResult], coverage: Coverage | None = None, minimum: float | None = None) -> dict[str, Any]:
    """The test report (schemas/test-report.v1.schema.json)."""
    files = []
    for file, group in groupby(results, key=lambda r: r.case.file):
        items = list(group)
        files.append({"file": file, "policy": str(items[0].case.policy), "cases": [_case_dict(r) for r in items]})
    passed = sum(r.passed for r in results)
    report: dict[str, Any] = {
        "passed": passed,
        "failed": len(results) - passed,
        "ok": passed == len(results) and (coverage is None or minimum is None or coverage.meets(minimum)),
        "files": files,
    }
    if coverage is not None:
        report["coverage"] = {**coverage.to_dict(), "min_coverage": minimum}
    return report


def _case_dict(result: CaseResult) -> dict[str, Any]:
    return {
        "name": result.case.name,
        "line": result.case.line,
        "passed": result.passed,
        "decision": result.decision.decision,
        "policy": result.decision.policy.to_dict(),
        "overridden": bool(result.case.policy_overrides),
        "mismatches": [mismatch.to_dict() for mismatch in result.mismatches],
    }


def junit_xml(results: Sequence[CaseResult]) -> bytes:
    """JUnit XML: a `testsuite` per case file, a `testcase` per case, a `failure` per failing case."""
    root = ET.Element("testsuites", name="protect test", tests=str(len(results)), failures=str(_failures(results)))
    for file, group in groupby(results, key=lambda r: r.case.file):
        items = list(group)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_xml(file),
            tests=str(len(items)),
            failures=str(_failures(items)),
            errors="0",
            skipped="0",
            time=_seconds(items),
        )
        for result in items:
            case = ET.SubElement(
                suite,
                "testcase",
                name=_xml(result.case.name),
                classname=_xml(file),
                file=_xml(file),
                line=str(result.case.line),
                time=_seconds([result]),
            )
            if not result.passed:
                messages = [m.message for m in result.mismatches]
                failure = ET.SubElement(case, "failure", message=_xml(messages[0]), type="mismatch")
                failure.text = _xml("\n".join([f"{result.case.location} {result.case.name}", *messages]))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _failures(results: Sequence[CaseResult]) -> int:
    return sum(not r.passed for r in results)


def _seconds(results: Sequence[CaseResult]) -> str:
    return f"{sum(r.decision.decision_time_ms for r in results) / 1000:.6f}"


def _xml(text: str) -> str:
    """`text` with what XML cannot hold shown as a `\\xNN`-style escape; ElementTree escapes the rest."""
    return _NOT_XML.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), text)
