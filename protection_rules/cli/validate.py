"""`protect validate`: check policy files, reporting every error with file, line and column."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import PolicyInvalid
from ..policy import load_policy
from ..policy_diff import version_bump_issues
from ..reporting import to_json_line
from ..resources import policies_dir
from .options import existing


def _policy_files(paths: tuple[str, ...]) -> list[Path]:
    if not paths:
        local = Path("policies")
        paths = (str(local if local.is_dir() else policies_dir()),)
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not found:
                raise click.UsageError(f"{raw}: no *.yaml policy files in this folder")
            files.extend(found)
        else:
            files.append(Path(existing(raw)))
    return files


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--require-bump-from",
    "bump_rev",
    metavar="REV",
    default=None,
    help="Also fail a policy whose content differs from the same file at git revision REV while its version does not.",
)
def validate(paths: tuple[str, ...], fmt: str, bump_rev: str | None) -> None:
    """Validate policy files (default: every policy under ./policies, else the shipped ones).

    Prints `file:line:col: path: message` for every error. Exit 0 when all are valid, 1 when
    any is invalid, 2 on a usage error (such as a file that does not exist).

    \b
    Example:
      protect validate policies/default.yaml
      protect validate --format json policies/
      protect validate --require-bump-from origin/main policies/
    """
    results = []
    for path in _policy_files(paths):
        try:
            policy = load_policy(path)
            if bump_rev and (unbumped := version_bump_issues(path, policy, bump_rev)):
                raise PolicyInvalid(unbumped)
            results.append(
                {
                    "file": str(path),
                    "valid": True,
                    "policy": {"name": policy.name, "version": policy.version, "sha256": policy.sha256},
                    "errors": [],
                }
            )
        except PolicyInvalid as exc:
            results.append(
                {"file": str(path), "valid": False, "errors": [issue.to_dict() for issue in exc.issues], "_issues": exc.issues}
            )
    invalid = [r for r in results if not r["valid"]]
    if fmt == "json":
        click.echo(
            to_json_line({"valid": not invalid, "files": [{k: v for k, v in r.items() if k != "_issues"} for r in results]})
        )
    else:
        for result in results:
            if result["valid"]:
                meta = result["policy"]
                click.echo(f"{result['file']}: ok ({meta['name']} {meta['version']}, sha256 {meta['sha256'][:12]})")
            else:
                for issue in result["_issues"]:
                    click.echo(str(issue))
        errors = sum(len(r["errors"]) for r in invalid)
        click.echo(f"{len(results)} file(s) checked, {len(invalid)} invalid, {errors} error(s)", err=True)
    raise click.exceptions.Exit(1 if invalid else 0)
