"""The `protect` command: a thin layer over the library.

Commands raise the package's errors; `ProtectCommand` is the one place that turns them into a
message on stderr and the exit code the error class carries.
"""

from __future__ import annotations

from typing import Any

import click

from .. import __version__
from ..errors import InputInvalid, ProtectionRulesError
from ..reporting import issues_text
from .audit import audit
from .commit import commit
from .diff import diff
from .evaluate import evaluate
from .state import state
from .validate import validate

EXIT_CODES_HELP = """\b
Exit codes (every command):
  0  approved / valid
  1  denied / invalid policy (validate) / broken audit chain (audit verify)
  2  usage error (bad option, a named file that does not exist, closed stdin)
  3  invalid input (request, policy, decision) or a refused operation
  4  internal or environment failure (rule network, state store or audit trail unusable)"""


class ProtectGroup(click.Group):
    """Maps the package's one exception tree to messages and exit codes, for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ProtectionRulesError as exc:
            click.echo(describe(exc), err=True)
            ctx.exit(exc.exit_code)


def describe(exc: ProtectionRulesError) -> str:
    """Every issue of an invalid input on its own line; any other error as one line."""
    if isinstance(exc, InputInvalid) and exc.issues:
        return issues_text(exc.issues)
    return f"protect: {exc}"


@click.group(cls=ProtectGroup, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="protect")
def cli() -> None:
    """Approve or deny portfolio position changes under a versioned protection policy."""


cli.add_command(validate)
cli.add_command(evaluate)
cli.add_command(commit)
cli.add_command(state)
cli.add_command(audit)
cli.add_command(diff)


def main() -> None:
    cli.main(prog_name="protect")
