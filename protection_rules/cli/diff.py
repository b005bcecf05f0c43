"""`protect diff`: what changes between two policies, and which decisions of a corpus it flips."""

from __future__ import annotations

import os

import click

from ..diff_report import report_dict, report_text
from ..impact import FAIL_ON, measure_impact
from ..policy_diff import diff_policies
from ..policy_source import read_policy_source
from ..reporting import to_json_line
from .options import echo_report, existing, format_option, output_option
from .progress import progress_bar


@click.command()
@click.argument("old")
@click.argument("new")
@click.option("--requests", "requests", multiple=True, metavar="FILE", help="Requests to decide: .jsonl (one per line) or .json.")
@click.option(
    "--replay", multiple=True, metavar="AUDIT", help="The decisions of an audit trail, with the state recorded beside each."
)
@click.option(
    "--cases",
    multiple=True,
    metavar="DIR",
    help="The requests of `protect test` case files (a file or a folder); cases with policy_overrides are skipped.",
)
@click.option("--fail-on", type=click.Choice(sorted(FAIL_ON)), default=None, help="Exit 1 when decisions change this way.")
@format_option()
@output_option
@click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default="the number of cores")
@click.option("--examples", type=click.IntRange(min=0), default=3, show_default=True, help="Examples shown per group.")
def diff(old, new, requests, replay, cases, fail_on, fmt, workers, examples) -> None:
    """Compare policy OLD with NEW: every changed parameter, and with a corpus, every decision
    that changes, grouped by the protection and parameters that changed it.

    OLD and NEW are policy files or `git:REV:PATH` (read with `git show`, no checkout; PATH from
    the repository's root). Corpora (any number): --requests, --replay (each audited request
    with its own current_date and the state snapshot recorded beside it, so the replay is
    exact), --cases. An audited decision made under OLD by this engine version is taken as
    OLD's without deciding it again (`protect audit replay` proves they are the same). Exit 0,
    or 1 when --fail-on finds such changes.

    \b
    Example:
      protect diff git:HEAD:policies/default.yaml policies/default.yaml
      protect diff old.yaml new.yaml --replay audit.sqlite --fail-on approve-to-deny
      protect diff old.yaml new.yaml --requests batch.jsonl --format json
    """
    sources = read_policy_source(old), read_policy_source(new)
    changes = diff_policies(sources[0].load(), sources[1].load())
    corpora = [("requests", p) for p in requests] + [("replay", existing(p)) for p in replay] + [("cases", p) for p in cases]
    impact = None
    if corpora:
        with progress_bar("deciding") as advance:
            impact = measure_impact(*sources, changes, corpora, workers=workers, examples=examples, progress=advance)
    if fmt == "json":
        echo_report(to_json_line(report_dict(changes, impact, fail_on)))
    else:
        echo_report(report_text(changes, impact, fail_on))
    raise click.exceptions.Exit(1 if impact is not None and impact.fails(fail_on) else 0)
