"""`protect validate`: check policy files, reporting every error with file, line and column."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import PolicyInvalid
from ..policy import load_policy
from ..reporting import to_json_line
from ..resources import policies_dir
from .options import echo_report, existing, format_option, output_option, say, verbosity, verbosity_options


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
@format_option()
@output_option
@verbosity_options
def validate(paths: tuple[str, ...], fmt: str) -> None:
    """Validate policy files (default: every policy under ./policies, else the shipped ones).

    Prints `file:line:col: path: message` for every error. Exit 0 when all are valid, 1 when
    any is invalid, 2 on a usage error (such as a file that does not exist). Text: -q prints
    only the errors; -v also each valid policy's full sha256.

    \b
    Example:
      protect validate policies/default.yaml
      protect validate --format json policies/
    """
    results = []
    for path in _policy_files(paths):
        try:
            policy = load_policy(path)
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
        echo_report(
            to_json_line({"valid": not invalid, "files": [{k: v for k, v in r.items() if k != "_issues"} for r in results]})
        )
    else:
        for result in results:
            if result["valid"]:
                meta = result["policy"]
                digest = meta["sha256"] if verbosity() > 0 else meta["sha256"][:12]
                if verbosity() >= 0:
                    echo_report(f"{result['file']}: ok ({meta['name']} {meta['version']}, sha256 {digest})")
            else:
                for issue in result["_issues"]:
                    echo_report(str(issue))
        errors = sum(len(r["errors"]) for r in invalid)
        say(f"{len(results)} file(s) checked, {len(invalid)} invalid, {errors} error(s)", level=0)
    raise click.exceptions.Exit(1 if invalid else 0)
