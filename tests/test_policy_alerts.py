"""The policy's optional `alerts` block: validated like every other block, defaulted without
touching the hash of a policy that lacks it, formatted in the schema's key order, diffed,
linted (nothing to warn about)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from click.testing import CliRunner
from test_policy_validation import DEFAULT_TEXT, At, issues_of, resolve

from protection_rules.alerts import AlertThresholds
from protection_rules.cli import cli
from protection_rules.formatting import format_text
from protection_rules.policy import parse_policy
from protection_rules.policy_diff import diff_policies
from protection_rules.resources import schema

DEFAULT_SHA = "0183b96819be093b73ad049a8a6e5bdb1178615b1fde83b92fad3b955f2c0d3b"  # README, quick start
AL = "$.alerts"

# the default policy with the block written canonically: keys in the schema's order, a blank line before it
CANONICAL = DEFAULT_TEXT + "\nalerts:\n  error_rate: 0.01\n  window: 500\n  denial_share: 0.75\n  min_batch: 10\n"


def with_alerts(block: str) -> str:
    return DEFAULT_TEXT + block


def test_a_policy_without_the_block_gets_the_defaults_and_keeps_its_hash() -> None:
    policy = parse_policy(DEFAULT_TEXT, "default.yaml")
    assert policy.sha256 == DEFAULT_SHA and "alerts" not in policy.document
    assert policy.alerts == AlertThresholds(error_rate=0.001, window=1000, denial_share=0.5, min_batch=20)


def test_the_block_is_read_and_missing_keys_default() -> None:
    policy = parse_policy(with_alerts("alerts:\n  window: 200\n  min_batch: 5\n"), "p.yaml")
    assert policy.alerts == AlertThresholds(error_rate=0.001, window=200, denial_share=0.5, min_batch=5)
    assert parse_policy(with_alerts("alerts: {}\n"), "p.yaml").alerts == AlertThresholds()


def test_the_block_is_content_but_not_its_layout() -> None:
    written = parse_policy(CANONICAL, "p.yaml").sha256
    flow = parse_policy(with_alerts("alerts: {min_batch: 10, denial_share: 0.75, window: 500, error_rate: 0.01}\n"), "p.yaml")
    assert written != DEFAULT_SHA and flow.sha256 == written


def test_the_schema_defaults_are_the_engine_defaults() -> None:
    properties = schema("policy")["properties"]["alerts"]["properties"]
    defaults = AlertThresholds()
    assert {key: spec["default"] for key, spec in properties.items()} == {
        "error_rate": defaults.error_rate,
        "window": defaults.window,
        "denial_share": defaults.denial_share,
        "min_batch": defaults.min_batch,
    }


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("alerts:\n  error_rat: 0.01\n", [("schema-unknown-field", f"{AL}.error_rat", At("error_rat"))]),
        ("alerts:\n  error_rate: 1.5\n", [("schema-range", f"{AL}.error_rate", At("error_rate"))]),
        ("alerts:\n  error_rate: -0.1\n", [("schema-range", f"{AL}.error_rate", At("error_rate"))]),
        ("alerts:\n  window: 0\n", [("schema-range", f"{AL}.window", At("window"))]),
        ("alerts:\n  window: 100001\n", [("schema-range", f"{AL}.window", At("window"))]),
        ("alerts:\n  window: 10.5\n", [("schema-type", f"{AL}.window", At("window"))]),
        ("alerts:\n  denial_share: half\n", [("schema-type", f"{AL}.denial_share", At("denial_share"))]),
        ("alerts:\n  min_batch: 0\n", [("schema-range", f"{AL}.min_batch", At("min_batch"))]),
        ("alerts: [error_rate]\n", [("schema-type", AL, At("alerts:"))]),
        (
            "alerts:\n  window: 0\n  min_batch: -1\n",
            [("schema-range", f"{AL}.window", At("window")), ("schema-range", f"{AL}.min_batch", At("min_batch"))],
        ),
    ],
)
def test_a_broken_block_reports_code_path_and_line(tmp_path, block: str, expected) -> None:
    text = with_alerts(block)
    assert issues_of(tmp_path, text) == resolve(text, expected)


def test_a_misspelt_key_gets_a_suggestion(tmp_path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(with_alerts("alerts:\n  min_bach: 5\n"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    assert "unknown field `min_bach`; did you mean `min_batch`?" in result.output


# ------------------------------------------------------------------------------ fmt, lint, diff


def test_fmt_writes_the_block_in_the_schema_order_after_a_blank_line() -> None:
    messy = with_alerts(
        "alerts:\n    min_batch: 10\n    denial_share: 0.75    # share\n    window: 500\n    error_rate: 1.0e-2\n"
    )
    result = format_text(messy, "p.yaml")
    assert result.text == DEFAULT_TEXT + (
        "\nalerts:\n  error_rate: 0.01\n  window: 500\n  denial_share: 0.75  # share\n  min_batch: 10\n"
    )
    assert result.sha256 == parse_policy(CANONICAL, "p.yaml").sha256


def test_fmt_check_accepts_the_canonical_block_and_flags_another_layout(tmp_path) -> None:
    clean, messy = tmp_path / "clean.yaml", tmp_path / "messy.yaml"
    clean.write_text(CANONICAL, encoding="utf-8")
    messy.write_text(with_alerts("alerts:\n  min_batch: 10\n  error_rate: 0.01\n"), encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(cli, ["fmt", "--check", str(clean)]).exit_code == 0
    flagged = runner.invoke(cli, ["fmt", "--check", str(messy)])
    assert (flagged.exit_code, flagged.stdout) == (1, f"{messy}: not in the canonical layout\n")


def test_validate_strict_has_nothing_to_say_about_the_block(tmp_path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(CANONICAL, encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", "--strict", str(path)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("old_block", "new_block", "expected"),
    [
        ("", "alerts:\n  window: 500\n", ['alerts: (absent) -> {"window": 500}']),
        ("alerts:\n  window: 500\n", "", ['alerts: {"window": 500} -> (absent)']),
        (
            "alerts:\n  window: 500\n",
            "alerts:\n  window: 200\n  min_batch: 5\n",
            ["alerts.window: 500 -> 200", "alerts.min_batch: (absent) -> 5"],
        ),
        ("alerts:\n  window: 500\n", "alerts: {window: 500}\n", []),
    ],
)
def test_diff_names_every_change_of_the_block(old_block: str, new_block: str, expected: list[str]) -> None:
    old, new = parse_policy(with_alerts(old_block), "old.yaml"), parse_policy(with_alerts(new_block), "new.yaml")
    diff = diff_policies(old, new)
    assert [str(change) for change in diff.changes] == expected
    assert {(change.kind, change.protection) for change in diff.changes} <= {("alerts", None)}


def test_the_diff_report_with_an_alerts_change_validates_against_its_schema(tmp_path) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(DEFAULT_TEXT, encoding="utf-8")
    new.write_text(with_alerts("alerts:\n  window: 500\n"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["diff", "--format", "json", str(old), str(new)])
    report = json.loads(result.stdout)
    jsonschema.validate(report, schema("diff-report"))
    assert report["changes"] == [
        {
            "kind": "alerts",
            "path": "alerts",
            "protection": None,
            "text": 'alerts: (absent) -> {"window": 500}',
            "new": {"window": 500},
        }
    ]
