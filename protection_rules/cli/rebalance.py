"""`protect rebalance`: validate a rebalance's targets, record the decisions, print the split."""

from __future__ import annotations

import json

import click

from ..rebalance_report import report_dict, report_text
from ..rebalancer import ProtectionAwareRebalancer
from ..targets import HOLD_BAND, load_regime, load_targets
from .options import (
    audit_options,
    build_engine,
    echo_report,
    existing,
    format_option,
    instant_option,
    open_sink,
    open_store,
    output_option,
    policy_option,
    say,
    state_option,
    verbosity,
    verbosity_options,
)


@click.command()
@click.argument("targets", type=click.Path(allow_dash=True))
@click.option(
    "--date", "current_date", required=True, metavar="ISO", help="The instant of the rebalance (each request's current_date)."
)
@click.option(
    "--regime",
    "regime_path",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="The regime object (JSON) every request carries.",
)
@click.option(
    "--hold-band",
    type=click.FloatRange(0, 1, max_open=True),
    default=HOLD_BAND,
    show_default=True,
    help="A target without an action whose allocation moves by at most this share of the current one is a hold.",
)
@policy_option
@format_option()
@output_option
@state_option
@audit_options
@verbosity_options
def rebalance(targets, current_date, regime_path, hold_band, policy_path, fmt, state_path, audit_path, no_audit) -> None:
    """Validate TARGETS (a rebalance-targets JSON file, or - for stdin) as of --date.

    Every target that is not a hold is decided in one batch, with the asset's state from the
    state store, and recorded in the audit trail; a denial's state changes (a grace period that
    starts) are committed at once. Prints each target approved or denied, with the blocking
    protections and when they unblock. An explicit --state must exist: a mistyped path would
    read as no history and loosen every protection. Exit 0 when all are approved, 1 when any is
    denied, 3 for an invalid target, regime or request, 4 on an internal failure.

    \b
    Example:
      protect rebalance targets.json --date 2026-03-12T09:00:00Z
      protect rebalance targets.json --date 2026-03-12T09:00:00Z --regime regime.json --format json -o report.json
    """
    now = instant_option(current_date, "--date")
    wanted = load_targets(targets)
    regime = load_regime(existing(regime_path), now) if regime_path else None
    store = open_store(state_path, for_writing=state_path is None)
    sink = open_sink(audit_path, no_audit)
    try:
        engine = build_engine(policy_path, state=store, audit=sink)
        say(f"policy {engine.policy.source} ({engine.policy.name} {engine.policy.version}, sha256 {engine.policy.sha256})")
        say(f"state {store.path if store else 'none'}; audit {sink.path if sink else 'none'}")
        result = ProtectionAwareRebalancer(engine, hold_band=hold_band).validate(wanted, now, regime=regime)
    finally:
        for resource in (store, sink):
            if resource is not None:
                resource.close()
    if fmt == "json":
        echo_report(json.dumps(report_dict(result), indent=2, ensure_ascii=False, allow_nan=False))
    else:
        echo_report(report_text(result, quiet=verbosity() < 0))
    raise click.exceptions.Exit(result.exit_code)
