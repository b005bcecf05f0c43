"""Lint: warnings for a valid policy that is probably wrong, with codes, paths and lines.

Cases edit the text of `policies/default.yaml` (see test_policy_validation.py for `edited` and
the `At` line locators); the expected warnings are worked out from the edit alone.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_policy_validation import DEFAULT_TEXT, At, edited

from protection_rules.cli import cli
from protection_rules.errors import PolicyInvalid
from protection_rules.lint import USUAL, check_policy, lint_policy
from protection_rules.policy import load_policy, parse_policy

REPO = Path(__file__).resolve().parent.parent
RO = "$.protections.regime_override"
GP = "$.protections.grace_period"
HP = "$.protections.holding_period"


def disabled(name: str) -> tuple[str, str]:
    return (f"  {name}:\n    enabled: true", f"  {name}:\n    enabled: false")


ALL_DISABLED = [
    disabled(name) for name in ("core_asset_immunity", "regime_override", "grace_period", "holding_period", "whipsaw_protection")
]

CASES = [
    ("default-is-clean", [], []),
    ("every-protection-disabled", ALL_DISABLED, [("no-protection-enabled", "$.protections", At("protections:"))]),
    # regime_override never blocks, so it alone still approves everything (and bypasses only disabled ones)
    (
        "only-override-enabled",
        ALL_DISABLED[:1] + ALL_DISABLED[2:],
        [
            ("no-protection-enabled", "$.protections", At("protections:")),
            ("bypass-disabled", f"{RO}.bypass.high[0]", At("high:")),
            ("bypass-disabled", f"{RO}.bypass.high[1]", At("high:")),
            ("bypass-disabled", f"{RO}.bypass.critical[0]", At("critical:")),
            ("bypass-disabled", f"{RO}.bypass.critical[1]", At("critical:")),
            ("bypass-disabled", f"{RO}.bypass.critical[2]", At("critical:")),
        ],
    ),
    ("empty-blocks", [("blocks: [close]\n", "blocks: []\n")], [("blocks-empty", f"{GP}.blocks", At("blocks: []"))]),
    # a disabled protection is not in force: its empty list is not flagged
    (
        "empty-blocks-disabled",
        [("blocks: [open]", "blocks: []"), disabled("whipsaw_protection")],
        [("bypass-disabled", f"{RO}.bypass.critical[2]", At("critical:"))],
    ),
    (
        "bypass-names-disabled",
        [disabled("holding_period")],
        [
            ("bypass-disabled", f"{RO}.bypass.high[1]", At("high:")),
            ("bypass-disabled", f"{RO}.bypass.critical[1]", At("critical:")),
        ],
    ),
    (
        "normal-bypasses-more-than-high",
        [("normal: []", "normal: [whipsaw_protection]")],
        [
            ("bypass-normal", f"{RO}.bypass.normal", At("normal:")),
            ("bypass-not-escalating", f"{RO}.bypass.normal[0]", At("normal:")),
        ],
    ),
    ("normal-within-high", [("normal: []", "normal: [grace_period]")], [("bypass-normal", f"{RO}.bypass.normal", At("normal:"))]),
    (
        "high-bypasses-more-than-critical",
        [("critical: [grace_period, holding_period, whipsaw_protection]", "critical: [grace_period]")],
        [("bypass-not-escalating", f"{RO}.bypass.high[1]", At("high:"))],
    ),
    # overrides switched off: their lists are not in force
    ("override-disabled", [("normal: []", "normal: [whipsaw_protection]"), disabled("regime_override")], []),
    (
        "cooldown-zero",
        [("cooldown_days: 30", "cooldown_days: 0")],
        [("value-unusual", f"{RO}.cooldown_days", At("cooldown_days:"))],
    ),
    ("holding-min-zero", [("min_days: 3", "min_days: 0")], [("value-unusual", f"{HP}.min_days", At("min_days:"))]),
    (
        "holding-min-zero-disabled",
        [("min_days: 3", "min_days: 0"), disabled("holding_period")],
        [
            ("bypass-disabled", f"{RO}.bypass.high[1]", At("high:")),
            ("bypass-disabled", f"{RO}.bypass.critical[1]", At("critical:")),
        ],
    ),
]


@pytest.mark.parametrize(("edits", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_lint_reports_code_path_and_line(tmp_path, edits, expected):
    text = edited(*edits)
    file = tmp_path / "policy.yaml"
    file.write_text(text, encoding="utf-8")
    policy = load_policy(file)
    document, sha = copy.deepcopy(dict(policy.document)), policy.sha256
    warnings = lint_policy(policy)
    assert [(w.code, w.path, w.line) for w in warnings] == [(c, p, at.line(text)) for c, p, at in expected]
    assert all(w.file == str(file) for w in warnings)
    # lint reads the policy, never changes it
    assert policy.document == document and policy.sha256 == sha == parse_policy(text, "again").sha256


# Each parameter of the usual-range table, just inside and just outside its range (by hand,
# from the README's table): (protection, key, value, warned)
RANGES = [
    ("grace_period", "score_threshold", 0, True),
    ("grace_period", "score_threshold", 0.04, True),
    ("grace_period", "score_threshold", 0.05, False),
    ("grace_period", "score_threshold", 0.95, False),
    ("grace_period", "score_threshold", 0.96, True),
    ("grace_period", "score_threshold", 1, True),
    ("grace_period", "decay_rate", 0.49, True),
    ("grace_period", "decay_rate", 0.5, False),
    ("grace_period", "decay_rate", 0.99, False),
    ("grace_period", "decay_rate", 1, True),
    ("grace_period", "min_decay_factor", 0, True),
    ("grace_period", "min_decay_factor", 0.01, False),
    ("grace_period", "min_decay_factor", 0.9, False),
    ("grace_period", "min_decay_factor", 1, True),
    ("grace_period", "days", 90, False),
    ("grace_period", "days", 91, True),
    ("holding_period", "min_days", 0, True),
    ("holding_period", "min_days", 1, False),
    ("holding_period", "min_days", 365, False),
    ("holding_period", "min_days", 366, True),
    ("whipsaw_protection", "max_cycles", 10, False),
    ("whipsaw_protection", "max_cycles", 11, True),
    ("regime_override", "cooldown_days", 0, True),
    ("regime_override", "cooldown_days", 1, False),
    ("regime_override", "cooldown_days", 365, False),
    ("regime_override", "cooldown_days", 366, True),
    ("regime_override", "max_age_days", 90, False),
    ("regime_override", "max_age_days", 91, True),
]

DEFAULTS = {
    "score_threshold": "0.6",
    "decay_rate": "0.8",
    "min_decay_factor": "0.1",
    "days": "5",
    "min_days": "3",
    "max_cycles": "1",
    "cooldown_days": "30",
    "max_age_days": "7",
}


@pytest.mark.parametrize(("name", "key", "value", "warned"), RANGES)
def test_values_outside_the_usual_range_warn(tmp_path, name, key, value, warned):
    edits = [(f"    {key}: {DEFAULTS[key]}\n", f"    {key}: {value}\n")]
    if key == "min_days":
        edits.append(("max_days: 90", "max_days: 1000"))  # max_days >= min_days
    text = edited(*edits)
    warnings = lint_policy(parse_policy(text, "p.yaml"))
    expected = [("value-unusual", f"$.protections.{name}.{key}", At(f"    {key}: {value}").line(text))] if warned else []
    assert [(w.code, w.path, w.line) for w in warnings] == expected


def test_the_range_table_covers_every_linted_parameter():
    assert {(name, key) for name, key, _, _ in RANGES} == set(USUAL)


def test_unusual_values_of_a_disabled_protection_are_not_flagged():
    text = edited(("score_threshold: 0.6", "score_threshold: 0"), disabled("grace_period"))
    codes = [w.code for w in lint_policy(parse_policy(text, "p.yaml"))]
    assert "value-unusual" not in codes


def test_warning_message_says_what_the_value_does():
    text = edited(("score_threshold: 0.6", "score_threshold: 0"))
    (warning,) = lint_policy(parse_policy(text, "p.yaml"))
    assert warning.message == (
        "`score_threshold` is `0`, outside the usual 0.05 to 0.95: "
        "(almost) no score is below it, so grace periods (almost) never start"
    )


def test_max_cycles_zero_is_an_error_not_a_warning():
    # the schema's minimum is 1, so lint never sees it
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy(edited(("max_cycles: 1", "max_cycles: 0")), "p.yaml")
    assert [i.code for i in caught.value.issues] == ["schema-range"]


def test_an_invalid_policy_is_not_linted(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text(edited(("min_days: 3", "min_days: -1"), ("cooldown_days: 30", "cooldown_days: 0")), encoding="utf-8")
    result = check_policy(file)
    assert not result.valid and [i.code for i in result.errors] == ["schema-range"] and result.warnings == ()


SHIPPED = sorted((REPO / "policies").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_policies_have_no_warnings(path):
    assert lint_policy(load_policy(path)) == []


# ------------------------------------------------------------------------ protect validate


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


WARNED = edited(("cooldown_days: 30", "cooldown_days: 0"), ("blocks: [close]\n", "blocks: []\n"))


def test_validate_prints_warnings_like_errors_and_passes(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text(WARNED, encoding="utf-8")
    result = run("validate", str(file))
    assert result.exit_code == 0
    blocks, cooldown = At("blocks: []").line(WARNED), At("cooldown_days:").line(WARNED)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{file}: ok (default 1.0.0, sha256 ")
    assert lines[1:] == [
        f"{file}:{cooldown}:20: {RO}.cooldown_days: warning: `cooldown_days` is `0`, outside the usual 1 to 365: "
        "without a cooldown an asset may be overridden again at once, on every request [value-unusual]",
        f"{file}:{blocks}:13: {GP}.blocks: warning: `grace_period` is enabled but blocks no action [blocks-empty]",
    ]
    assert result.stderr == "1 file(s) checked, 0 invalid, 0 error(s), 2 warning(s)\n"


def test_validate_strict_fails_on_warnings(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text(WARNED, encoding="utf-8")
    result = run("validate", "--strict", str(file))
    assert result.exit_code == 1
    assert "(--strict: warnings fail)" in result.stderr


def test_validate_strict_passes_the_shipped_policies():
    assert run("validate", "--strict", str(REPO / "policies")).exit_code == 0


def test_validate_json_carries_warnings_with_codes(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text(WARNED, encoding="utf-8")
    result = run("validate", "--format", "json", "--strict", str(file), str(REPO / "policies" / "default.yaml"))
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["valid"] is True and report["strict"] is True
    warned, clean = report["files"]
    assert [(w["code"], w["path"], w["line"]) for w in warned["warnings"]] == [
        ("value-unusual", f"{RO}.cooldown_days", At("cooldown_days:").line(WARNED)),
        ("blocks-empty", f"{GP}.blocks", At("blocks: []").line(WARNED)),
    ]
    assert warned["errors"] == [] and clean["warnings"] == []


def test_validate_reads_standard_input():
    result = run("validate", "-", input=DEFAULT_TEXT)
    assert result.exit_code == 0
    assert result.stdout.startswith("<stdin>: ok (default 1.0.0, sha256 ")


def test_validate_standard_input_errors_name_it():
    text = DEFAULT_TEXT.replace("  - grace_period\n", "  - grace_perod\n", 1)
    result = run("validate", "--format", "json", "-", input=text)
    assert result.exit_code == 1
    (error,) = json.loads(result.stdout)["files"][0]["errors"]
    assert (error["file"], error["line"], error["code"]) == ("<stdin>", At("grace_perod").line(text), "schema-enum")


def test_validate_standard_input_only_once():
    result = run("validate", "-", "-", input=DEFAULT_TEXT)
    assert result.exit_code == 2
    assert result.stderr == "protect: `-` (standard input) may be given only once\n"
