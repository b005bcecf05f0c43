"""The `protect` command: a thin layer over the library. Exit codes live on the error classes."""

from __future__ import annotations

import click

from .. import __version__
from .audit import audit
from .evaluate import evaluate
from .state import commit, state
from .validate import validate

EXIT_CODES_HELP = """\b
Exit codes (every command):
  0  approved / valid
  1  denied / invalid policy (validate)
  2  usage error
  3  invalid input (request or policy)
  4  internal or environment failure (state or audit store unusable)"""


@click.group(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="protect")
def cli() -> None:
    """Approve or deny portfolio position changes under a versioned protection policy."""


cli.add_command(validate)
cli.add_command(evaluate)
cli.add_command(commit)
cli.add_command(state)
cli.add_command(audit)


def main() -> None:
    cli.main(prog_name="protect")
