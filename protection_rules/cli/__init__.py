"""The `protect` command: a thin layer over the library.

Commands raise the package's errors; `ProtectGroup` is the one place that turns them, and
click's usage errors, into a message and the exit code the error class carries: one line on
standard error, and under `--format json` also an error report (schemas/error.v1.schema.json)
where the command's report goes (standard output or `--output`), so a pipeline reading the
report always reads JSON. It also finishes the `--output` file and names every option's
environment variable.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any

import click

from .. import __version__
from ..errors import InputInvalid, OutputError, ProtectionRulesError
from ..errors import error_report as error_document
from ..reporting import issues_text, to_json_line
from .options import FORMAT_KEY, JSON_NAMES, finish_output, report_file

EXIT_CODES_HELP = """\b
Exit codes (every command):
  0  approved / valid
  1  denied / invalid policy (validate) / not in the canonical layout (fmt --check) / broken audit chain (audit verify)
  2  usage error (bad option, a named file that does not exist, closed stdin)
  3  invalid input (request, policy, decision) or a refused operation
  4  internal or environment failure (rule network, state store or audit trail unusable)

\b
Every option can also be set in the environment: PROTECT_<COMMAND>_<OPTION>
(PROTECT_EVALUATE_FORMAT=json, PROTECT_AUDIT_QUERY_ASSET=AAPL); --state and --audit
read PROTECT_STATE and PROTECT_AUDIT. Shell completion: eval "$(_PROTECT_COMPLETE=bash_source protect)"."""

ENV_PREFIX = "PROTECT"
ARGV_KEY = "protect.argv"


class ProtectGroup(click.Group):
    """Maps the package's one exception tree to messages and exit codes, for every command."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(cmd, name)
        name_envvars(cmd, f"{ENV_PREFIX}_{name or cmd.name}")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGV_KEY] = tuple(args)
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as exc:  # a bad option of `protect` itself
            if not wants_json(ctx):
                raise
            report_error(ctx, exc)
            ctx.exit(exc.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return self._invoke_and_finish(ctx)
        except OutputError as exc:  # the report itself cannot be written: say so where it can be seen
            click.echo(describe(exc), err=True)
            ctx.exit(exc.exit_code)

    def _invoke_and_finish(self, ctx: click.Context) -> Any:
        keep = False  # whether the --output file takes what was written, or stays as it was
        try:
            result = super().invoke(ctx)
            keep = True
            return result
        except click.exceptions.Exit:
            keep = True
            raise
        except ProtectionRulesError as exc:
            keep = report_error(ctx, exc)
            ctx.exit(exc.exit_code)
        except click.ClickException as exc:
            if not wants_json(ctx):
                raise
            keep = report_error(ctx, exc)
            ctx.exit(exc.exit_code)
        finally:
            finish_output(ctx, keep=keep)


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's subcommands by name, each imported the first time it is looked up.

    A cold `protect evaluate` then pays only for what evaluating imports: not the audit
    backends of `protect audit`, the reports of `protect diff` or jsonschema for `validate`.
    Listing the names imports nothing; `protect --help` imports every command for its summary.
    """

    def __init__(self, targets: dict[str, str]):
        self._targets = dict(targets)  # name -> "module:attribute", relative to this package
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, _, attribute = self._targets[name].partition(":")
            command = getattr(importlib.import_module(module, __package__), attribute)
            name_envvars(command, f"{ENV_PREFIX}_{name}")
            self._loaded[name] = command
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._targets.setdefault(name, "")
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._targets[name]
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets


def describe(exc: ProtectionRulesError) -> str:
    """Every issue of an invalid input on its own line; any other error as one line."""
    if isinstance(exc, InputInvalid) and exc.issues:
        return issues_text(exc.issues)
    return f"protect: {exc}"


def error_report(exc: ProtectionRulesError | click.ClickException) -> dict[str, Any]:
    """The error as schemas/error.v1.schema.json describes it."""
    if isinstance(exc, click.ClickException):
        code = "usage" if isinstance(exc, click.UsageError) else "error"
        return {"error": {"code": code, "message": exc.format_message(), "exit_code": exc.exit_code, "issues": []}}
    return error_document(exc)


def report_error(ctx: click.Context, exc: ProtectionRulesError | click.ClickException) -> bool:
    """Tell the person (stderr) and, under `--format json`, the machine; True when the report holds it."""
    if isinstance(exc, click.ClickException):
        exc.show()
    else:
        click.echo(describe(exc), err=True)
    if not wants_json(ctx):
        return False
    click.echo(to_json_line(error_report(exc)), file=report_file(ctx))
    return True


def wants_json(ctx: click.Context) -> bool:
    """Whether the invoked command reports in JSON: its parsed `--format`, else the command line or env."""
    chosen = ctx.meta.get(FORMAT_KEY)
    if chosen is None:
        chosen = requested_format(ctx.find_root().command, ctx.meta.get(ARGV_KEY, ()))
    return chosen in JSON_NAMES


def requested_format(root: click.Command, argv: Sequence[str]) -> str | None:
    """`--format` as given on the command line, else in the invoked command's environment variable.

    Used when the command failed before its options were processed (a usage error).
    """
    command, given = root, None
    tokens = iter(argv)
    for token in tokens:
        if token == "--":
            break
        if token == "--format":
            given = next(tokens, None)
        elif token.startswith("--format="):
            given = token.partition("=")[2]
        elif isinstance(command, click.Group) and token in command.commands:
            command = command.commands[token]
    if given is not None:
        return given
    option = next((p for p in command.params if isinstance(p, click.Option) and "--format" in p.opts), None)
    return os.environ.get(option.envvar) if option is not None and isinstance(option.envvar, str) else None


def name_envvars(command: click.Command, prefix: str) -> None:
    """Give every option without one the environment variable PREFIX_<COMMAND>_<OPTION>.

    Named after the option's long flag (`--format`: PROTECT_EVALUATE_FORMAT). click's own
    `auto_envvar_prefix` would name it after the Python parameter (`fmt`, `policy_path`) and would
    also read `--version` from PROTECT_VERSION. Options that already name a variable keep it
    (`--state`: PROTECT_STATE, `--audit`: PROTECT_AUDIT).
    """
    for param in command.params:
        if isinstance(param, click.Option) and not param.envvar:
            flag = max(param.opts, key=len).lstrip("-")
            param.envvar = f"{prefix}_{flag}".upper().replace("-", "_")
            param.show_envvar = True
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            name_envvars(sub, f"{prefix}_{name}")


def _colour(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # https://no-color.org: NO_COLOR (set and not empty) turns colour off; a flag on the command line wins
    if value == "always":
        ctx.color = True
    elif value == "never" or os.environ.get("NO_COLOR"):
        ctx.color = False
    return value  # auto: click colours standard output only when it is a terminal


@click.group(cls=ProtectGroup, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="protect")
@click.option(
    "--color",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    envvar=f"{ENV_PREFIX}_COLOR",
    show_envvar=True,
    expose_value=False,
    is_eager=True,
    callback=_colour,
    help="Colour text output: auto (on a terminal, unless NO_COLOR is set), always or never.",
)
def cli() -> None:
    """Approve or deny portfolio position changes under a versioned protection policy."""


cli.commands = LazyCommands(
    {
        "validate": ".validate:validate",
        "evaluate": ".evaluate:evaluate",
        "commit": ".commit:commit",
        "state": ".state:state",
        "audit": ".audit:audit",
        "fmt": ".fmt:fmt",
        "test": ".test:test_command",
        "diff": ".diff:diff",
        "rebalance": ".rebalance:rebalance",
        "serve": ".serve:serve",
    }
)


def main() -> None:
    cli.main(prog_name="protect")
