"""`protect validate`: check policy files, reporting every error and warning with file, line and column."""

from __future__ import annotations

import click

from ..lint import check_policy
from ..reporting import to_json_line, warning_text
from .options import echo_report, format_option, output_option, policy_files, say, verbosity, verbosity_options


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@format_option()
@click.option("--strict", is_flag=True, help="Warnings fail too: exit 1 when any valid policy has a warning.")
@click.option(
    "--require-bump-from",
    "bump_rev",
    metavar="REV",
    default=None,
    help="Also fail a policy whose content differs from the same file at git revision REV while its version does not.",
)
@output_option
@verbosity_options
def validate(paths: tuple[str, ...], fmt: str, strict: bool, bump_rev: str | None) -> None:
    """Validate policy files (default: every policy under ./policies, else the shipped ones;
    `-` reads standard input), then lint the valid ones.

    Prints `file:line:col: path: message` for every error and
    `file:line:col: path: warning: message [code]` for every warning. Exit 0 when all are
    valid, 1 when any is invalid (or, with --strict, has a warning), 2 on a usage error (such
    as a file that does not exist). Text: -q prints only the errors and warnings; -v also each
    valid policy's full sha256.

    \b
    Example:
      protect validate policies/default.yaml
      protect validate --strict --format json policies/
      cat policy.yaml | protect validate -
      protect validate --require-bump-from origin/main policies/
    """
    results = [check_policy(path, bump_from=bump_rev) for path in policy_files(paths)]
    invalid = [r for r in results if not r.valid]
    warnings = sum(len(r.warnings) for r in results)
    if fmt == "json":
        echo_report(to_json_line({"valid": not invalid, "strict": strict, "files": [r.to_dict() for r in results]}))
    else:
        for result in results:
            if result.policy is not None and verbosity() >= 0:
                meta = result.policy
                digest = meta.sha256 if verbosity() > 0 else meta.sha256[:12]
                echo_report(f"{result.file}: ok ({meta.name} {meta.version}, sha256 {digest})")
            for line in [*map(str, result.errors), *map(warning_text, result.warnings)]:
                echo_report(line)
        errors = sum(len(r.errors) for r in invalid)
        failing = " (--strict: warnings fail)" if strict and warnings else ""
        say(f"{len(results)} file(s) checked, {len(invalid)} invalid, {errors} error(s), {warnings} warning(s){failing}", level=0)
    raise click.exceptions.Exit(1 if invalid or (strict and warnings) else 0)
