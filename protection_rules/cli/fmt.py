"""`protect fmt`: the canonical layout of policy files, comments kept, content unchanged."""

from __future__ import annotations

import click

from ..formatting import format_policies, write_formatted
from ..reading import STDIN
from .options import policy_files


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--check", is_flag=True, help="Change nothing; exit 1 listing each file not in the canonical layout.")
@click.option("--write", is_flag=True, help="Rewrite each file not in the canonical layout, in place (atomically).")
@click.option("--diff", "show_diff", is_flag=True, help="Print a unified diff of each change instead of the text.")
def fmt(paths: tuple[str, ...], check: bool, write: bool, show_diff: bool) -> None:
    """Put policy files in the canonical layout (default: print it; `-` reads standard input).

    Only valid policies are formatted: any invalid one exits 3 with its errors, and nothing
    is written. The layout never changes a policy's content or sha256.

    \b
    Example:
      protect fmt policies/default.yaml
      protect fmt --check --diff policies/
      protect fmt --write policies/
    """
    if check and write:
        raise click.UsageError("--check and --write cannot be used together")
    files = policy_files(paths)
    if write and STDIN in files:
        raise click.UsageError("--write cannot rewrite standard input")
    if not (check or write or show_diff) and len(files) > 1:
        raise click.UsageError("printing the layout takes one file; use --check or --write for several")
    results = format_policies(files)
    if not (check or write or show_diff):
        click.echo(results[0].text, nl=False)
        return
    changed = [(path, result) for path, result in zip(files, results, strict=True) if result.changed]
    for path, result in changed:
        if write:
            write_formatted(path, result)
        if check:
            click.echo(f"{result.name}: not in the canonical layout")
        if show_diff:
            click.echo(result.diff(), nl=False)
    if check or write:
        done = "not in the canonical layout" if check else "reformatted"
        click.echo(f"{len(results)} file(s) checked, {len(changed)} {done}", err=True)
    raise click.exceptions.Exit(1 if check and changed else 0)
