"""`protect test`: decide case files under a policy and report every case that decides otherwise."""

from __future__ import annotations

from pathlib import Path

import click

from ..case_coverage import measure_coverage
from ..case_reporting import coverage_text, failure_text, junit_xml, report_dict
from ..cases import load_case_files
from ..errors import UsageError, os_reason
from ..reporting import to_json_line
from ..testing import run_cases, summary
from .options import echo_report, existing, format_option, output_option, verbosity, verbosity_options


@click.command("test")
@click.argument("cases", nargs=-1, required=True, type=click.Path())
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(),
    default=None,
    help="Policy YAML for every case. [default: each file's `policy:`, else the shipped default policy]",
)
@format_option()
@output_option
@verbosity_options
@click.option("--junit-xml", "junit_path", type=click.Path(dir_okay=False), default=None, help="Also write JUnit XML to FILE.")
@click.option(
    "--coverage",
    "with_coverage",
    is_flag=True,
    help="Report what the cases exercised: statuses per protection and action, override severities, "
    "rule ids fired. Coverage % = rule ids fired / rule ids compiled.",
)
@click.option(
    "--min-coverage",
    type=click.FloatRange(0, 100),
    default=None,
    metavar="PCT",
    help="Fail (exit 1) when coverage is below PCT percent; implies --coverage.",
)
def test_command(cases, policy_path, fmt, junit_path, with_coverage, min_coverage) -> None:
    """Decide every case in CASES (case files, or folders of *.yaml) and compare with what each expects.

    Prints one block per failing case (`file:line`, its name, expected and actual for each
    field that differs) and `N passed, M failed`. Exit 0 when all pass, 1 when any fails (or
    coverage is below --min-coverage), 2 on a usage error such as a missing file, 3 when a case
    file or a policy is invalid.

    \b
    Example:
      protect test tests/cases
      protect test --coverage --min-coverage 90 --policy policies/new.yaml examples/cases
      protect test --format json --junit-xml report.xml cases/
    """
    files = load_case_files(cases, policy=existing(policy_path) if policy_path else None)
    results = run_cases(case for file in files for case in file.cases)
    coverage = measure_coverage(results) if with_coverage or min_coverage is not None else None
    if junit_path:
        _write(junit_path, junit_xml(results))
    report = report_dict(results, coverage, min_coverage)
    if fmt == "json":
        echo_report(to_json_line(report))
    else:
        for result in results:
            if not result.passed and verbosity() >= 0:
                echo_report(failure_text(result) + "\n")
        if coverage is not None:
            echo_report(coverage_text(coverage, min_coverage) + "\n")
        echo_report(summary(results))
    raise click.exceptions.Exit(0 if report["ok"] else 1)


def _write(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {os_reason(exc)}") from None
