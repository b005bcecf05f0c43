"""`protect fmt`: the canonical layout keeps content (sha256) and comments, and is a fixed point.

The expected layouts below are written by hand from the rules in the README ("protect fmt").
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from test_policy_validation import DEFAULT_TEXT, LAYOUT_EDITS, edited

from protection_rules import formatting
from protection_rules.cli import cli
from protection_rules.errors import PolicyInvalid, Refused
from protection_rules.formatting import format_text, scan_comments
from protection_rules.policy import parse_policy

REPO = Path(__file__).resolve().parent.parent

MESSY = """\
--- # policy for tests
# Messy on purpose.
kind: 'ProtectionPolicy'
protections:
    whipsaw_protection: {enabled: yes, blocks: [open], max_cycles: 1, period_days: 14}

    # holding before grace here
    holding_period:
        max_days:    90   # review after this
        min_days: 3
        blocks:
          - close   # closing
          - decrease
        enabled: True
    grace_period:
      enabled: true
      blocks: [close]
      days: 5
      score_threshold: 0.60
      decay_rate: 8.0e-1
      min_decay_factor: 1.0e-1
    regime_override:
      enabled: true
      bypass: {normal: [], high: [grace_period, holding_period],
               critical: [grace_period, holding_period, whipsaw_protection]}  # severe
      cooldown_days: 30
      max_age_days: 7
    core_asset_immunity: {enabled: true, blocks: [close, decrease], max_assets: 3, expiry_days: 90, max_extensions: 2}
apiVersion: "protection-rules/v1"


hierarchy: [core_asset_immunity, regime_override, grace_period, holding_period, whipsaw_protection]  # order matters
metadata:
  owner: "risk: team"
  description: Messy but valid,
    folded over two lines
  version: '1.0.0'
  name: messy
# the end
"""

MESSY_FORMATTED = """\
# policy for tests
# Messy on purpose.
apiVersion: protection-rules/v1
kind: ProtectionPolicy
metadata:
  name: messy
  version: 1.0.0
  description: Messy but valid, folded over two lines
  owner: 'risk: team'

hierarchy:  # order matters
  - core_asset_immunity
  - regime_override
  - grace_period
  - holding_period
  - whipsaw_protection

protections:
  core_asset_immunity:
    enabled: true
    blocks: [close, decrease]
    max_assets: 3
    expiry_days: 90
    max_extensions: 2

  regime_override:
    enabled: true
    bypass:
      normal: []
      high: [grace_period, holding_period]
      critical: [grace_period, holding_period, whipsaw_protection]  # severe
    cooldown_days: 30
    max_age_days: 7

  grace_period:
    enabled: true
    blocks: [close]
    days: 5
    score_threshold: 0.6
    decay_rate: 0.8
    min_decay_factor: 0.1

  # holding before grace here
  holding_period:
    enabled: true
    blocks: [close, decrease]  # closing
    min_days: 3
    max_days: 90  # review after this

  whipsaw_protection:
    enabled: true
    blocks: [open]
    max_cycles: 1
    period_days: 14

# the end
"""


def test_messy_policy_is_normalised():
    result = format_text(MESSY, "messy.yaml")
    assert result.text == MESSY_FORMATTED
    assert result.changed
    assert result.sha256 == parse_policy(MESSY, "messy.yaml").sha256 == parse_policy(MESSY_FORMATTED, "out.yaml").sha256


def test_protections_follow_the_hierarchy_then_the_schema():
    # whipsaw before holding in the hierarchy; core left out of it (disabled): it comes last
    text = edited(
        ("  - core_asset_immunity\n", ""),
        ("  - holding_period\n  - whipsaw_protection\n", "  - whipsaw_protection\n  - holding_period\n"),
        ("  core_asset_immunity:\n    enabled: true", "  core_asset_immunity:\n    enabled: false"),
    )
    lines = format_text(text, "p.yaml").text.splitlines()
    blocks = [line.strip(" :") for line in lines[lines.index("protections:") + 1 :] if line.startswith("  ") and line[2] != " "]
    assert blocks == ["regime_override", "grace_period", "whipsaw_protection", "holding_period", "core_asset_immunity"]


# Inputs of every shape the tests know: each must keep its sha256 and reach a fixed point.
INPUTS = [("default", DEFAULT_TEXT), ("messy", MESSY)] + [(name, edited(*edits)) for name, edits in LAYOUT_EDITS]


@pytest.mark.parametrize("text", [t for _, t in INPUTS], ids=[n for n, _ in INPUTS])
def test_layout_is_idempotent_and_keeps_the_hash(text):
    once = format_text(text, "p.yaml")
    twice = format_text(once.text, "p.yaml")
    assert twice.text == once.text and not twice.changed
    assert parse_policy(once.text, "p.yaml").sha256 == parse_policy(text, "p.yaml").sha256


@pytest.mark.parametrize("text", [t for _, t in INPUTS], ids=[n for n, _ in INPUTS])
def test_every_comment_is_kept(text):
    before = sorted(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
    after = format_text(text, "p.yaml").text
    assert sorted(line.split("#", 1)[1] for line in after.splitlines() if "#" in line) == before


# Where comments go: (name, edits of the default policy, lines expected in the output, in order)
COMMENT_CASES = [
    # a comment on its own line stays above the key it precedes, at that key's indentation
    ("leading", [("    min_days: 3\n", "        # at least\n    min_days: 3\n")], ["    # at least", "    min_days: 3"]),
    # a comment after a value stays on that value's line, two spaces after it
    ("trailing", [("    days: 5\n", "    days: 5       # five\n")], ["    days: 5  # five"]),
    # the items of a block list (other than the hierarchy) join their key's line, comments too
    ("block-list", [("    blocks: [open]\n", "    blocks:\n      - open  # re-entry\n")], ["    blocks: [open]  # re-entry"]),
    # a flow list over two lines with two trailing comments: the second goes above the line
    (
        "two-trailing",
        [
            (
                "    blocks: [close, decrease]\n    min_days",
                "    blocks: [close,  # first\n      decrease]  # second\n    min_days",
            )
        ],
        ["    # second", "    blocks: [close, decrease]  # first", "    min_days: 3"],
    ),
    # a hierarchy item keeps its own comment
    ("hierarchy-item", [("  - regime_override\n", "  - regime_override # overrides\n")], ["  - regime_override  # overrides"]),
    # a comment at the end of the file stays at the end, after a blank line
    (
        "footer",
        [("    period_days: 14\n", "    period_days: 14\n\n\n   # last words\n")],
        ["    period_days: 14", "", "# last words"],
    ),
    # a `#` inside a quoted string is no comment
    ("hash-in-string", [("  owner: risk-team", "  owner: 'risk #1 team' # real")], ["  owner: 'risk #1 team'  # real"]),
]


@pytest.mark.parametrize(("edits", "expected"), [c[1:] for c in COMMENT_CASES], ids=[c[0] for c in COMMENT_CASES])
def test_comments_are_placed_by_the_rules(edits, expected):
    lines = format_text(edited(*edits), "p.yaml").text.splitlines()
    start = lines.index(expected[0])
    assert lines[start : start + len(expected)] == expected


def test_scan_comments_finds_comments_not_hashes_in_values():
    text = "a: 'x # y'  # one\n# two\nb: |\n  # three is text\nc: [1, # four\n  2]\n"
    assert [(c.line, c.column, c.text, c.own_line) for c in scan_comments(text)] == [
        (1, 13, "# one", False),
        (2, 1, "# two", True),
        (5, 8, "# four", False),
    ]


@pytest.mark.parametrize("brk", ["\r", "\r\n", "\x85", "\u2028", "\u2029"], ids=["CR", "CRLF", "NEL", "LS", "PS"])
def test_scan_comments_counts_lines_as_yaml_does(brk):
    # PyYAML's marks (where the keys comments anchor to are) end a line at each of these too;
    # counting only LF put a comment after one on the wrong key
    text = f"a: 'x{brk}y'  # one{brk}# two{brk}b: 1\n"
    assert [(c.line, c.column, c.text, c.own_line) for c in scan_comments(text)] == [
        (2, 5, "# one", False),
        (3, 1, "# two", True),
    ]
    assert yaml.compose(text, Loader=yaml.SafeLoader).value[1][0].start_mark.line + 1 == 4


@pytest.mark.parametrize("brk", ["\x85", "\u2028", "\u2029"], ids=["NEL", "LS", "PS"])
def test_a_description_holding_a_line_break_yaml_counts_reaches_a_fixed_point(brk):
    # found by test_any_valid_policy_keeps_its_hash_and_reaches_a_fixed_point (two LS characters)
    text = (
        "\n".join(
            f"  description: {escaped(brk * 2)}" if line.startswith("  description: ") else line
            for line in DEFAULT_TEXT.splitlines()
        )
        + "\n"
    )
    once = format_text(text, "p.yaml")
    assert format_text(once.text, "p.yaml").text == once.text


# Scalars: each written plain where that reads back the same, quoted where it would not.
SCALARS = [
    ("risk-team", "risk-team"),
    ("risk: team", "'risk: team'"),
    ("it's #1", "'it''s #1'"),
    ("it's", "it's"),
    ("yes", "'yes'"),
    ("123", "'123'"),
    ("1.0.0", "1.0.0"),
    (" padded", "' padded'"),
    ("two\nlines", '"two\\nlines"'),
    ("bell\x07", '"bell\\x07"'),
    ("don't: stop", "'don''t: stop'"),
    ("café", "café"),
    (True, "true"),
    (3, "3"),
    (0.6, "0.6"),
    (1.0, "1.0"),
    (1e-05, "1.0e-05"),
    (2.5e-07, "2.5e-07"),
]


@pytest.mark.parametrize(("value", "expected"), SCALARS)
def test_scalars_are_quoted_only_where_needed(value, expected):
    assert formatting.scalar(value) == expected
    assert yaml.safe_load(f"key: {expected}") == {"key": value}


def test_flow_list_items_with_flow_indicators_are_quoted():
    assert formatting.scalar("a,b", flow=True) == "'a,b'"


DESCRIPTIONS = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=60)


def escaped(text: str) -> str:
    """`text` as a YAML double-quoted scalar with every character but letters, digits and spaces
    escaped as `\\UXXXXXXXX`: any character at all, written independently of the formatter."""
    return '"' + "".join(c if c.isascii() and (c.isalnum() or c == " ") else f"\\U{ord(c):08x}" for c in text) + '"'


@settings(max_examples=25, deadline=None)
@given(description=DESCRIPTIONS, threshold=st.floats(0, 1), decay=st.floats(1e-9, 1))
def test_any_valid_policy_keeps_its_hash_and_reaches_a_fixed_point(description, threshold, decay):
    text = edited(
        ("score_threshold: 0.6", f"score_threshold: {threshold:.17e}"),
        ("decay_rate: 0.8", f"decay_rate: {decay:.17e}"),
    )
    described = f"  description: {escaped(description)}"
    text = "\n".join(described if line.startswith("  description: ") else line for line in text.splitlines()) + "\n"
    policy = parse_policy(text, "p.yaml")
    assert policy.document["metadata"]["description"] == description
    once = format_text(text, "p.yaml")
    assert parse_policy(once.text, "p.yaml").sha256 == policy.sha256
    assert format_text(once.text, "p.yaml").text == once.text


def test_an_invalid_policy_is_not_formatted():
    with pytest.raises(PolicyInvalid):
        format_text(DEFAULT_TEXT.replace("min_days: 3", "min_days: -3"), "p.yaml")


def test_a_layout_that_changes_the_hash_is_refused(monkeypatch):
    monkeypatch.setattr(formatting, "_float", lambda value: repr(value + 0.01))
    with pytest.raises(Refused, match="would change the policy's sha256"):
        format_text(DEFAULT_TEXT, "p.yaml")


def test_a_layout_that_loses_a_comment_is_refused(monkeypatch):
    original = formatting._anchored
    monkeypatch.setattr(formatting, "_anchored", lambda comments, source: original(comments[1:], source))
    with pytest.raises(Refused, match="would lose a comment"):
        format_text(DEFAULT_TEXT, "p.yaml")


# ------------------------------------------------------------------------------- protect fmt


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


SHIPPED = sorted((REPO / "policies").glob("*.yaml"))
EXAMPLES = sorted(p for p in (REPO / "examples").rglob("*.y*ml") if "ProtectionPolicy" in p.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", SHIPPED + EXAMPLES, ids=[str(p.relative_to(REPO)) for p in SHIPPED + EXAMPLES])
def test_every_shipped_and_example_policy_is_in_the_canonical_layout(path):
    result = run("fmt", "--check", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""


def test_fmt_prints_the_layout():
    result = run("fmt", "-", input=MESSY)
    assert result.exit_code == 0
    assert result.stdout == MESSY_FORMATTED


def test_fmt_check_lists_files_not_in_the_layout_and_shows_a_diff(tmp_path):
    messy, clean = tmp_path / "messy.yaml", tmp_path / "clean.yaml"
    messy.write_text(MESSY, encoding="utf-8")
    clean.write_text(DEFAULT_TEXT, encoding="utf-8")
    result = run("fmt", "--check", str(clean), str(messy))
    assert result.exit_code == 1
    assert result.stdout == f"{messy}: not in the canonical layout\n"
    assert result.stderr == "2 file(s) checked, 1 not in the canonical layout\n"
    diff = run("fmt", "--check", "--diff", str(messy)).stdout.splitlines()
    assert diff[1:4] == [f"--- {messy}", f"+++ {messy} (formatted)", "@@ -1,39 +1,56 @@"]
    assert "-kind: 'ProtectionPolicy'" in diff and "+apiVersion: protection-rules/v1" in diff
    assert messy.read_text(encoding="utf-8") == MESSY  # --check changes nothing


def test_fmt_write_rewrites_in_place_keeping_the_mode(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text(MESSY, encoding="utf-8")
    file.chmod(0o640)
    result = run("fmt", "--write", str(file))
    assert result.exit_code == 0
    assert file.read_text(encoding="utf-8") == MESSY_FORMATTED
    assert stat.S_IMODE(file.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["p.yaml"]  # no temporary file left
    assert result.stderr == "1 file(s) checked, 1 reformatted\n"
    assert run("fmt", "--check", str(file)).exit_code == 0


def test_fmt_write_follows_a_symlink(tmp_path):
    target, link = tmp_path / "real.yaml", tmp_path / "link.yaml"
    target.write_text(MESSY, encoding="utf-8")
    link.symlink_to(target)
    assert run("fmt", "--write", str(link)).exit_code == 0
    assert link.is_symlink() and target.read_text(encoding="utf-8") == MESSY_FORMATTED


def test_fmt_write_leaves_every_file_alone_when_one_is_invalid(tmp_path):
    messy, bad = tmp_path / "a.yaml", tmp_path / "b.yaml"
    messy.write_text(MESSY, encoding="utf-8")
    bad.write_text(DEFAULT_TEXT.replace("    min_days: 3\n", "    min_days: -3\n"), encoding="utf-8")
    result = run("fmt", "--write", str(messy), str(bad))
    assert result.exit_code == 3
    assert (
        result.stderr.startswith(f"{bad}:") and "$.protections.holding_period.min_days: `min_days` must be >= 0" in result.stderr
    )
    assert messy.read_text(encoding="utf-8") == MESSY


def test_fmt_write_refuses_a_layout_that_changes_the_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(formatting, "_float", lambda value: repr(value + 0.01))
    file = tmp_path / "p.yaml"
    file.write_text(MESSY, encoding="utf-8")
    result = run("fmt", "--write", str(file))
    assert result.exit_code == 3
    assert "would change the policy's sha256" in result.stderr
    assert file.read_text(encoding="utf-8") == MESSY


def test_fmt_write_refuses_a_file_changed_since_it_was_read(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text(MESSY, encoding="utf-8")
    result = formatting.format_policy(file)
    file.write_text(MESSY + "# edited meanwhile\n", encoding="utf-8")
    with pytest.raises(Refused, match="changed while it was formatted"):
        formatting.write_formatted(file, result)
    assert file.read_text(encoding="utf-8").endswith("# edited meanwhile\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--check", "--write"], "--check and --write cannot be used together"),
        (["--write", "-"], "--write cannot rewrite standard input"),
        (["POLICY", "POLICY"], "printing the layout takes one file"),
    ],
)
def test_fmt_usage_errors(args, message):
    policy = str(REPO / "policies" / "default.yaml")
    result = run("fmt", *[policy if a == "POLICY" else a for a in args], input=DEFAULT_TEXT)
    assert result.exit_code == 2
    assert message in result.stderr


def test_fmt_missing_file_is_a_usage_error(tmp_path):
    result = run("fmt", "--check", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert result.stderr == f"protect: {tmp_path / 'nope.yaml'}: no such file\n"


def test_fmt_write_that_cannot_create_its_temporary_file_is_exit_4(tmp_path, monkeypatch):
    def refuse(**_):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(formatting.tempfile, "mkstemp", refuse)
    file = tmp_path / "p.yaml"
    file.write_text(MESSY, encoding="utf-8")
    result = run("fmt", "--write", str(file))
    assert result.exit_code == 4
    assert result.stderr == f"protect: {file}: cannot write: permission denied\n"
    assert file.read_text(encoding="utf-8") == MESSY


def test_fmt_write_that_cannot_rename_leaves_the_file_and_no_temporary(tmp_path, monkeypatch):
    def refuse(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(formatting.os, "replace", refuse)
    file = tmp_path / "p.yaml"
    file.write_text(MESSY, encoding="utf-8")
    result = run("fmt", "--write", str(file))
    assert result.exit_code == 4
    assert "cannot write: the disk is full" in result.stderr
    assert file.read_text(encoding="utf-8") == MESSY
    assert sorted(os.listdir(tmp_path)) == ["p.yaml"]
