"""Options shared by commands: the policy, the state store and the audit trail."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..engine import Engine
from ..errors import AuditError, UsageError
from ..paths import AUDIT_ENV, STATE_ENV, default_audit_path, default_state_path
from ..reading import STDIN
from ..resources import default_policy_path, policies_dir
from ..state import StateStore, open_state

policy_option = click.option(
    "--policy", "policy_path", type=click.Path(), default=None, help="Policy YAML. [default: the shipped default policy]"
)


state_option = click.option(
    "--state",
    "state_path",
    envvar=STATE_ENV,
    type=click.Path(dir_okay=False),
    default=None,
    help=f"State store (SQLite). [env {STATE_ENV}; default: {default_state_path()}]",
)


audit_path_option = click.option(
    "--audit",
    "audit_path",
    envvar=AUDIT_ENV,
    type=click.Path(dir_okay=False),
    default=None,
    help=f"Audit trail: SQLite, or JSON Lines when the name ends in .jsonl. [env {AUDIT_ENV}; default: {default_audit_path()}]",
)


def audit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--no-audit", is_flag=True, help="Do not record the decisions (they are recorded by default).")(fn)
    return audit_path_option(fn)


def audit_target(path: str | None) -> Path:
    """The audit trail a command uses: `--audit`, else `$PROTECT_AUDIT`, else the default path."""
    return Path(path) if path else default_audit_path()


def open_store(path: str | None, *, for_writing: bool) -> StateStore | None:
    """The state store a command uses.

    An explicit path (flag or env) must exist unless the command writes state (a usage error):
    a mistyped path read as "no state" would loosen protections. The default path is used when it
    exists, or when the command writes state.
    """
    target = Path(path) if path else default_state_path()
    if not for_writing and not target.exists():
        if path:
            raise UsageError(f"{path}: no such file")
        return None
    return open_state(target, create=for_writing)


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


def build_engine(policy_path: str | None, **options: Any) -> Engine:
    return Engine.from_policy(policy_path or default_policy_path(), **options)
