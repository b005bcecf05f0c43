"""Options shared by commands: the policy, the state store and the audit trail; and how a command
reports: `--format`, `-o/--output` (written atomically), `-q/-v`.

The reporting options keep what they were given in `ctx.meta` (shared by every context of one
invocation), where `echo_report`, `verbosity` and the error handler in `cli/__init__.py` find it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from ..engine import Engine
from ..errors import AuditError, OutputError, UsageError, os_reason
from ..paths import AUDIT_ENV, STATE_ENV, default_audit_path, default_state_path
from ..postgres import database_url
from ..reading import STDIN
from ..resources import default_policy_path, policies_dir
from ..timestamps import parse_instant

if TYPE_CHECKING:
    from ..state import StateStore

policy_option = click.option(
    "--policy", "policy_path", type=click.Path(), default=None, help="Policy YAML. [default: the shipped default policy]"
)


state_option = click.option(
    "--state",
    "state_path",
    envvar=STATE_ENV,
    type=click.Path(dir_okay=False),
    default=None,
    help=f"State store: a SQLite file, or a postgresql:// URL. [env {STATE_ENV}; default: {default_state_path()}]",
)


audit_path_option = click.option(
    "--audit",
    "audit_path",
    envvar=AUDIT_ENV,
    type=click.Path(dir_okay=False),
    default=None,
    help=(
        "Audit trail: SQLite, JSON Lines when the name ends in .jsonl, or a postgresql:// URL. "
        f"[env {AUDIT_ENV}; default: {default_audit_path()}]"
    ),
)


def audit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--no-audit", is_flag=True, help="Do not record the decisions (they are recorded by default).")(fn)
    return audit_path_option(fn)


def audit_target(path: str | None) -> str | Path:
    """The audit trail a command uses: `--audit`, else `$PROTECT_AUDIT`, else the default path;
    a postgresql:// URL stays a URL (`postgres.database_url` decides, here as in the API)."""
    if not path:
        return default_audit_path()
    return database_url(path) or Path(path)


def open_store(path: str | None, *, for_writing: bool) -> StateStore | None:
    """The state store a command uses.

    An explicit path (flag or env) must exist unless the command writes state (a usage error):
    a mistyped path read as "no state" would loosen protections. The default path is used when it
    exists, or when the command writes state. A postgresql:// URL is a database that must hold
    the schema already unless the command writes state.
    """
    url = database_url(path)
    if url is None:
        target = Path(path) if path else default_state_path()
        if not for_writing and not target.exists():
            if path:
                raise UsageError(f"{path}: no such file")
            return None
    from ..state import open_state  # only when there is a store: with it, sqlite3

    return open_state(url if url is not None else target, create=for_writing)


def policy_files(paths: tuple[str, ...]) -> list[str]:
    """The policy files a command reads: each path, every `*.yaml`/`*.yml` of a folder, `-` for
    standard input (once); none given: `./policies` if it is a folder, else the shipped policies."""
    if not paths:
        local = Path("policies")
        paths = (str(local if local.is_dir() else policies_dir()),)
    if paths.count(STDIN) > 1:
        raise UsageError("`-` (standard input) may be given only once")
    files: list[str] = []
    for raw in paths:
        path = Path(raw)
        if raw != STDIN and path.is_dir():
            found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not found:
                raise UsageError(f"{raw}: no *.yaml policy files in this folder")
            files.extend(str(f) for f in found)
        else:
            files.append(raw if raw == STDIN else existing(raw))
    return files


def existing_audit(path: str | Path) -> str | Path:
    """An audit trail the command reads: a file must exist (else a usage error); a postgresql://
    URL passes, as opening it read-only checks that the database holds an audit log."""
    return path if database_url(str(path)) is not None else existing(str(path))


def existing(path: str) -> str:
    """A file the command reads: one that does not exist is a usage error, never created."""
    if not Path(path).exists():
        raise UsageError(f"{path}: no such file")
    return path


def open_sink(path: str | None, no_audit: bool) -> Any:
    """The audit sink for a command; one that cannot be opened makes every decision a deny."""
    if no_audit:
        return None
    from ..audit import UnwritableAudit, open_audit

    target = audit_target(path)
    try:
        return open_audit(target, clock=time.time)
    except AuditError as exc:
        return UnwritableAudit(str(target), str(exc))


def instant_option(value: str, param_hint: str) -> int:
    """An option's ISO-8601 instant, as epoch microseconds; a malformed one is a usage error."""
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=param_hint) from None


def build_engine(policy_path: str | None, **options: Any) -> Engine:
    return Engine.from_policy(policy_path or default_policy_path(), **options)


# ------------------------------------------------------------------------------ reporting options

FORMAT_KEY = "protect.format"
OUTPUT_KEY = "protect.output"
VERBOSITY_KEY = "protect.verbosity"
JSON_NAMES = ("json", "jsonl")  # `jsonl` is accepted where a command prints JSON Lines


class FormatChoice(click.Choice):
    """`text|json`, also taking hidden aliases (`jsonl` for `json`) that help and completion do not offer."""

    def __init__(self, choices: tuple[str, ...], aliases: dict[str, str]):
        super().__init__(choices)
        self.aliases = aliases

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return super().convert(self.aliases.get(value, value), param, ctx)


def _remember_format(ctx: click.Context, param: click.Parameter, value: str) -> str:
    ctx.meta[FORMAT_KEY] = value
    return value


def format_option(
    *, choices: tuple[str, ...] = ("text", "json"), aliases: dict[str, str] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--format`, passed to the command as `fmt`; under `json` an error is a JSON report too."""
    return click.option(
        "--format",
        "fmt",
        type=FormatChoice(choices, aliases or {}),
        default=choices[0],
        show_default=True,
        callback=_remember_format,
        help="Output format. Under json, errors are JSON too (schemas/error.v1.schema.json).",
    )


class ReportOutput:
    """A report file written atomically: into a temporary file beside it, renamed over it at the end.

    A reader of the file sees the previous report or the whole new one, never half of one.
    """

    def __init__(self, path: str):
        self.path = Path(path)
        folder = self.path.parent
        if not folder.is_dir():
            raise UsageError(f"{folder}: no such folder (for --output {path})")
        import tempfile  # only --output needs it (with shutil, random...: ~5 ms at start-up)

        try:
            fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise UsageError(f"{path}: cannot write here: {os_reason(exc)}") from None
        self.temp = Path(temp)
        self.file: IO[str] = os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def finish(self, *, keep: bool) -> None:
        """Rename the report over the target (`keep`), or drop it and leave the target as it was."""
        try:
            if keep:
                self.file.flush()
                os.fsync(self.file.fileno())
            self.file.close()
            if keep:
                os.chmod(self.temp, _mode_for(self.path))
                os.replace(self.temp, self.path)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write the report: {os_reason(exc)}") from None
        finally:
            self.temp.unlink(missing_ok=True)


def _mode_for(target: Path) -> int:
    """The mode the target has, or a new file's mode under the umask (mkstemp's 0600 is for secrets)."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _open_output(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None and value != "-":
        ctx.meta[OUTPUT_KEY] = ReportOutput(value)


output_option = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default=None,
    expose_value=False,
    callback=_open_output,
    metavar="FILE",
    help="Write the report to FILE instead of standard output, atomically (when the command ends).",
)


def report_file(ctx: click.Context | None = None) -> IO[str] | None:
    """Where the report goes: the `--output` file, or None for standard output."""
    ctx = ctx or click.get_current_context(silent=True)
    output = ctx.meta.get(OUTPUT_KEY) if ctx else None
    return output.file if output else None


def echo_report(message: str = "") -> None:
    """One line of the command's report, to `--output` or standard output."""
    file = report_file()
    if file is None:
        click.echo(message)  # click itself handles a closed pipe on standard output
        return
    try:
        click.echo(message, file=file)
    except OSError as exc:
        raise OutputError(f"cannot write the report: {os_reason(exc)}") from None


def finish_output(ctx: click.Context, *, keep: bool) -> None:
    output = ctx.meta.pop(OUTPUT_KEY, None)
    if output is not None:
        output.finish(keep=keep)


def _remember_verbosity(level: int) -> Callable[[click.Context, click.Parameter, bool], None]:
    def remember(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            if ctx.meta.get(VERBOSITY_KEY, level) != level:
                raise UsageError("--quiet and --verbose exclude each other")
            ctx.meta[VERBOSITY_KEY] = level

    return remember


def verbosity_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`-q/--quiet` and `-v/--verbose`, read with `verbosity()`; they change text output only."""
    fn = click.option(
        "-v", "--verbose", is_flag=True, expose_value=False, callback=_remember_verbosity(1), help="Say more (text only)."
    )(fn)
    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=_remember_verbosity(-1),
        help="Only the verdict and errors (text only).",
    )(fn)


def verbosity() -> int:
    """-1 under `--quiet`, 1 under `--verbose`, else 0."""
    return click.get_current_context().meta.get(VERBOSITY_KEY, 0)


def say(message: str, *, level: int = 1) -> None:
    """A diagnostic on standard error, shown from verbosity `level` up (0: unless quiet)."""
    if verbosity() >= level:
        click.echo(message, err=True)
