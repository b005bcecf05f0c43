"""`protect validate`: check policy files, reporting every error and warning with file, line and column."""

from __future__ import annotations

import click

from ..lint import check_policy
from ..reporting import to_json_line, warning_text
from .options import policy_files


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--strict", is_flag=True, help="Warnings fail too: exit 1 when any valid policy has a warning.")
def validate(paths: tuple[str, ...], fmt: str, strict: bool) -> None:
    """Validate policy files (default: every policy under ./policies, else the shipped ones;
    `-` reads standard input), then lint the valid ones.

    Prints `file:line:col: path: message` for every error and
    `file:line:col: path: warning: message [code]` for every warning. Exit 0 when all are
    valid, 1 when any is invalid (or, with --strict, has a warning), 2 on a usage error (such
    as a file that does not exist).

    \b
    Example:
      protect validate policies/default.yaml
      protect validate --strict --format json policies/
      cat policy.yaml | protect validate -
    """
    results = [check_policy(path) for path in policy_files(paths)]
    invalid = [r for r in results if not r.valid]
    warnings = sum(len(r.warnings) for r in results)
    if fmt == "json":
        click.echo(to_json_line({"valid": not invalid, "strict": strict, "files": [r.to_dict() for r in results]}))
    else:
        for result in results:
            if result.policy is not None:
                meta = result.policy
                click.echo(f"{result.file}: ok ({meta.name} {meta.version}, sha256 {meta.sha256[:12]})")
            for line in [*map(str, result.errors), *map(warning_text, result.warnings)]:
                click.echo(line)
        errors = sum(len(r.errors) for r in invalid)
        failing = " (--strict: warnings fail)" if strict and warnings else ""
        click.echo(
            f"{len(results)} file(s) checked, {len(invalid)} invalid, {errors} error(s), {warnings} warning(s){failing}", err=True
        )
    raise click.exceptions.Exit(1 if invalid or (strict and warnings) else 0)
