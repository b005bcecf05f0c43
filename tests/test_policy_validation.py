"""Broken policies: every schema and semantic check reports the right code, JSON path and line.

Each case starts from the text of `policies/default.yaml` and applies small textual edits
(each `old` snippet must occur exactly once), so a case reads as "the default policy, but ...".

Expected lines are given as locators, `At("snippet")`: the one line of the *edited* text that
contains the snippet (plus an optional offset). They are worked out from the text alone, never
from the loader, and they survive harmless edits to default.yaml (new parameters, comments). A
missing required field is reported where its parent mapping starts, i.e. the line after the
parent's key: `At("  regime_override:", 1)`.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from protection_rules.errors import PolicyInvalid
from protection_rules.policy import Policy, load_policy
from protection_rules.resources import default_policy_path, policies_dir

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TEXT = (REPO / "policies" / "default.yaml").read_text(encoding="utf-8")
POLICY_SCHEMA = json.loads((REPO / "schemas" / "policy.v1.schema.json").read_text(encoding="utf-8"))

RO = "$.protections.regime_override"
GP = "$.protections.grace_period"
HP = "$.protections.holding_period"
WP = "$.protections.whipsaw_protection"


@dataclass(frozen=True)
class At:
    """The line of the edited text that contains `snippet` (it must be on exactly one line)."""

    snippet: str
    offset: int = 0

    def line(self, text: str) -> int:
        found = [n for n, line in enumerate(text.splitlines(), start=1) if self.snippet in line]
        assert len(found) == 1, f"locator {self.snippet!r} matches lines {found}"
        return found[0] + self.offset


def edited(*edits: tuple[str, str]) -> str:
    """The default policy text with each `(old, new)` applied; `old` must be unique."""
    text = DEFAULT_TEXT
    for old, new in edits:
        assert text.count(old) == 1, f"fixture snippet {old!r} is not unique in default.yaml"
        text = text.replace(old, new)
    return text


def resolve(text: str, expected) -> list[tuple[str, str, int]]:
    return [(code, path, at.line(text) if isinstance(at, At) else at) for code, path, at in expected]


def issues_of(tmp_path: Path, text: str) -> list[tuple[str, str, int | None]]:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyInvalid) as caught:
        load_policy(path)
    for issue in caught.value.issues:
        assert issue.file == str(path)  # every issue names the file it is about
    return [(i.code, i.path, i.line) for i in caught.value.issues]


def test_locator_sanity():
    # The locators agree with a hand count of the (original) default.yaml: apiVersion is on
    # line 2 after the opening comment, the hierarchy list starts on line 12.
    assert At("apiVersion:").line(DEFAULT_TEXT) == 2
    assert At("  - core_asset_immunity").line(DEFAULT_TEXT) == 12
    assert At("  - whipsaw_protection").line(DEFAULT_TEXT) == 16
    assert At("hierarchy:").line(DEFAULT_TEXT) == 11


# (id, edits, expected issues as (code, path, At), in reported order: by line, then column)
CASES = [
    # ---------------------------------------------------------------- schema-type
    ("type-int-given-word", [("    days: 5\n", "    days: five\n")], [("schema-type", f"{GP}.days", At("days: five"))]),
    (
        "type-number-given-word",
        [("score_threshold: 0.6", "score_threshold: high")],
        [("schema-type", f"{GP}.score_threshold", At("score_threshold"))],
    ),
    # YAML `true` is a boolean, and a boolean is not an integer in JSON Schema
    ("type-bool-for-integer", [("max_cycles: 1", "max_cycles: true")], [("schema-type", f"{WP}.max_cycles", At("max_cycles"))]),
    # an unquoted 1 is an integer, not the string a version must be
    ("type-version-integer", [("version: 1.0.0", "version: 1")], [("schema-type", "$.metadata.version", At("version:"))]),
    (
        "type-enabled-string",
        [("  regime_override:\n    enabled: true", "  regime_override:\n    enabled: yes please")],
        [("schema-type", f"{RO}.enabled", At("yes please"))],
    ),
    # ---------------------------------------------------------------- schema-required
    # a missing field is reported where its parent mapping starts (the line after its key)
    (
        "required-max-age-days",
        [("    max_age_days: 7\n", "\n")],
        [("schema-required", f"{RO}.max_age_days", At("  regime_override:", 1))],
    ),
    ("required-owner", [("  owner: risk-team\n", "\n")], [("schema-required", "$.metadata.owner", At("metadata:", 1))]),
    # the root mapping starts at its first key, after the opening comment
    ("required-kind", [("kind: ProtectionPolicy\n", "\n")], [("schema-required", "$.kind", At("apiVersion:"))]),
    # ---------------------------------------------------------------- schema-unknown-field
    # a misspelt key is reported once, as an unknown field (at the key), not also as a missing one
    ("unknown-field-min-days", [("min_days: 3", "min_dais: 3")], [("schema-unknown-field", f"{HP}.min_dais", At("min_dais"))]),
    (
        "unknown-field-owner",
        [("  owner: risk-team", "  ownr: risk-team")],
        [("schema-unknown-field", "$.metadata.ownr", At("ownr"))],
    ),
    (
        "unknown-field-extra",
        [("    max_days: 90\n", "    max_days: 90\n    review_days: 30\n")],
        [("schema-unknown-field", f"{HP}.review_days", At("review_days"))],
    ),
    (
        "unknown-field-top-level",
        [("kind: ProtectionPolicy\n", "kind: ProtectionPolicy\nnotes: hello\n")],
        [("schema-unknown-field", "$.notes", At("notes:"))],
    ),
    # a misspelt protection block is one typo: one issue, as for a misspelt parameter key (no
    # cascading "whipsaw_protection is in the hierarchy but has no block")
    (
        "unknown-protection-block",
        [("  whipsaw_protection:\n", "  whipsaw_protecton:\n")],
        [("schema-unknown-field", "$.protections.whipsaw_protecton", At("whipsaw_protecton"))],
    ),
    # ---------------------------------------------------------------- schema-enum
    (
        "enum-bypass-list",
        [("high: [grace_period, holding_period]", "high: [grace_period, holdng_period]")],
        [("schema-enum", f"{RO}.bypass.high[1]", At("holdng_period"))],
    ),
    ("enum-blocks-action", [("blocks: [open]", "blocks: [opne]")], [("schema-enum", f"{WP}.blocks[0]", At("opne"))]),
    # a misspelt name in the hierarchy is one issue; the checks that read the hierarchy
    # (grace_period unplaced, bypassed but not placed) do not echo it
    ("enum-hierarchy", [("  - grace_period\n", "  - grace_perod\n")], [("schema-enum", "$.hierarchy[2]", At("grace_perod"))]),
    # ---------------------------------------------------------------- schema-const
    ("const-api-version", [("protection-rules/v1", "protection-rules/v2")], [("schema-const", "$.apiVersion", At("apiVersion"))]),
    ("const-kind", [("kind: ProtectionPolicy", "kind: Policy")], [("schema-const", "$.kind", At("kind:"))]),
    # ---------------------------------------------------------------- schema-range
    # (one case per bound of every numeric parameter is generated from the schema below)
    # ---------------------------------------------------------------- schema-pattern
    (
        "pattern-version-two-parts",
        [("version: 1.0.0", "version: '1.0'")],
        [("schema-pattern", "$.metadata.version", At("version:"))],
    ),
    (
        "pattern-version-v-prefix",
        [("version: 1.0.0", "version: v1.0.0")],
        [("schema-pattern", "$.metadata.version", At("version:"))],
    ),
    (
        "pattern-version-leading-zero",
        [("version: 1.0.0", "version: 01.0.0")],
        [("schema-pattern", "$.metadata.version", At("version:"))],
    ),
    # JSON Schema's `$` is the end of the text: a trailing newline is not allowed before it
    (
        "pattern-version-trailing-newline",
        [("version: 1.0.0", 'version: "1.0.0\\n"')],
        [("schema-pattern", "$.metadata.version", At("version:"))],
    ),
    (
        "pattern-name-trailing-newline",
        [("  name: default", '  name: "default\\n"')],
        [("schema-pattern", "$.metadata.name", At("name:"))],
    ),
    ("pattern-name-uppercase", [("  name: default", "  name: Default")], [("schema-pattern", "$.metadata.name", At("name:"))]),
    ("pattern-name-space", [("  name: default", "  name: my policy")], [("schema-pattern", "$.metadata.name", At("name:"))]),
    # ---------------------------------------------------------------- schema-length
    # An empty hierarchy: every enabled block is unplaced and every bypass names an unplaced
    # protection. `hierarchy: []` plus five blank lines keeps the later lines where they were.
    (
        "length-empty-hierarchy",
        [
            (
                "hierarchy:\n  - core_asset_immunity\n  - regime_override\n  - grace_period\n  - holding_period\n"
                "  - whipsaw_protection\n",
                "hierarchy: []\n\n\n\n\n\n",
            )
        ],
        [
            ("schema-length", "$.hierarchy", At("hierarchy: []")),
            ("hierarchy-missing", "$.protections.core_asset_immunity", At("  core_asset_immunity:")),
            ("hierarchy-missing", "$.protections.regime_override", At("  regime_override:")),
            ("bypass-not-in-hierarchy", f"{RO}.bypass.high[0]", At("high:")),
            ("bypass-not-in-hierarchy", f"{RO}.bypass.high[1]", At("high:")),
            ("bypass-not-in-hierarchy", f"{RO}.bypass.critical[0]", At("critical:")),
            ("bypass-not-in-hierarchy", f"{RO}.bypass.critical[1]", At("critical:")),
            ("bypass-not-in-hierarchy", f"{RO}.bypass.critical[2]", At("critical:")),
            ("hierarchy-missing", "$.protections.grace_period", At("  grace_period:")),
            ("hierarchy-missing", "$.protections.holding_period", At("  holding_period:")),
            ("hierarchy-missing", "$.protections.whipsaw_protection", At("  whipsaw_protection:")),
        ],
    ),
    ("length-empty-owner", [("  owner: risk-team", "  owner: ''")], [("schema-length", "$.metadata.owner", At("owner:"))]),
    (
        "length-long-description",
        [("  description: Default protections", "  description: " + "x" * 2001 + " Default protections")],
        [("schema-length", "$.metadata.description", At("xxx"))],
    ),
    # ---------------------------------------------------------------- schema-unique
    ("unique-blocks", [("blocks: [open]", "blocks: [open, open]")], [("schema-unique", f"{WP}.blocks", At("[open, open]"))]),
    (
        "unique-bypass",
        [("high: [grace_period, holding_period]", "high: [grace_period, grace_period]")],
        [("schema-unique", f"{RO}.bypass.high", At("high:"))],
    ),
    # ---------------------------------------------------------------- semantic checks
    (
        "hierarchy-duplicate",
        [("  - whipsaw_protection\n", "  - whipsaw_protection\n  - holding_period\n")],
        [("hierarchy-duplicate", "$.hierarchy[5]", At("  - whipsaw_protection", 1))],
    ),
    # the hierarchy names whipsaw_protection, but its whole block is gone; reported at the
    # `protections:` key
    (
        "protection-missing",
        [("\n  whipsaw_protection:\n    enabled: true\n    blocks: [open]\n    max_cycles: 1\n    period_days: 14\n", "\n")],
        [("protection-missing", "$.protections", At("protections:"))],
    ),
    # a comment in place of the hierarchy entry keeps the line numbers
    (
        "hierarchy-missing",
        [("  - core_asset_immunity\n", "  # core_asset_immunity\n")],
        [("hierarchy-missing", "$.protections.core_asset_immunity", At("  core_asset_immunity:"))],
    ),
    (
        "bypass-core",
        [("normal: []", "normal: [core_asset_immunity]")],
        [("bypass-core", f"{RO}.bypass.normal[0]", At("normal:"))],
    ),
    (
        "bypass-self",
        [("normal: []", "normal: [regime_override]")],
        [("bypass-not-lower", f"{RO}.bypass.normal[0]", At("normal:"))],
    ),
    # regime_override placed below grace_period, which both high and critical bypass
    (
        "bypass-not-lower",
        [("  - regime_override\n  - grace_period\n", "  - grace_period\n  - regime_override\n")],
        [
            ("bypass-not-lower", f"{RO}.bypass.high[0]", At("high:")),
            ("bypass-not-lower", f"{RO}.bypass.critical[0]", At("critical:")),
        ],
    ),
    # whipsaw_protection disabled and out of the hierarchy, but still in the critical bypass list
    (
        "bypass-not-in-hierarchy",
        [
            ("  - whipsaw_protection\n", "  # whipsaw_protection\n"),
            ("  whipsaw_protection:\n    enabled: true", "  whipsaw_protection:\n    enabled: false"),
        ],
        [("bypass-not-in-hierarchy", f"{RO}.bypass.critical[2]", At("critical:"))],
    ),
    ("range-order", [("max_days: 90", "max_days: 2")], [("range-order", f"{HP}.max_days", At("max_days"))]),
]


def _numeric_parameters():
    """(block, parameter, schema) for every number or integer parameter of every protection."""
    blocks = POLICY_SCHEMA["properties"]["protections"]["properties"]
    for block, block_schema in blocks.items():
        for name, spec in block_schema["properties"].items():
            if spec.get("type") in ("integer", "number"):
                yield block, name, spec


def _range_cases():
    """Just below the minimum and just above the maximum of every numeric parameter."""
    policy = yaml.safe_load(DEFAULT_TEXT)
    cases = []
    for block, name, spec in _numeric_parameters():
        step = 1 if spec["type"] == "integer" else 0.5
        bad = []
        if "minimum" in spec:
            bad.append(("min", spec["minimum"] - step))
        if "exclusiveMinimum" in spec:
            bad.append(("min", spec["exclusiveMinimum"]))  # the bound itself is out
        if "maximum" in spec:
            bad.append(("max", spec["maximum"] + step))
        assert {side for side, _ in bad} == {"min", "max"}, f"{block}.{name} has no full range"
        old = f"\n    {name}: {policy['protections'][block][name]}\n"
        # the parameter's line, found by scanning from its block's key (names repeat across blocks)
        start = DEFAULT_TEXT.index(f"\n  {block}:\n")
        at = DEFAULT_TEXT.index(old, start)
        for side, value in bad:
            text = DEFAULT_TEXT[:at] + f"\n    {name}: {value}\n" + DEFAULT_TEXT[at + len(old) :]
            line = DEFAULT_TEXT[: at + 1].count("\n") + 1
            expected = [("schema-range", f"$.protections.{block}.{name}", line)]
            holding = yaml.safe_load(text)["protections"]["holding_period"]
            if block == "holding_period" and holding["max_days"] < holding["min_days"]:
                order = ("range-order", f"{HP}.max_days", At("max_days").line(text))
                expected = sorted(expected + [order], key=lambda i: (i[2], i[1], i[0]))
            cases.append(pytest.param(text, expected, id=f"range-{block}-{name}-{side}"))
    return cases


RANGE_CASES = _range_cases()


@pytest.mark.parametrize(("edits", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_policy_reports_code_path_and_line(tmp_path, edits, expected):
    text = edited(*edits)
    assert issues_of(tmp_path, text) == resolve(text, expected)


@pytest.mark.parametrize(("text", "expected"), RANGE_CASES)
def test_parameter_out_of_range_reports_code_path_and_line(tmp_path, text, expected):
    assert issues_of(tmp_path, text) == expected


def test_range_cases_by_hand():
    # Spot-check the generator: the grace period's `days` is 3 lines below `  grace_period:`
    # (enabled, blocks, days), and its minimum is 1.
    [case] = [c for c in RANGE_CASES if c.id == "range-grace_period-days-min"]
    text, expected = case.values
    assert "    days: 0\n" in text
    assert expected == [("schema-range", f"{GP}.days", At("  grace_period:", 3).line(DEFAULT_TEXT))]


def test_broken_policy_table_covers_every_code():
    # The issue asks for at least 30 broken policies, covering every schema and semantic code.
    from protection_rules.validation import _CODES

    codes = {code for case in CASES for code, _, _ in case[2]} | {"schema-range"}
    semantic = {
        "hierarchy-duplicate",
        "protection-missing",
        "hierarchy-missing",
        "bypass-core",
        "bypass-not-lower",
        "bypass-not-in-hierarchy",
        "range-order",
    }
    assert len(CASES) + len(RANGE_CASES) >= 30 and len(CASES) >= 30
    assert set(_CODES.values()) | semantic <= codes
    # every numeric parameter is tested at both ends (two generated cases each)
    assert len(RANGE_CASES) == 2 * len(list(_numeric_parameters())) >= 2 * 10


# Did-you-mean text, and the value shown in the message, for the cases that promise them.
MESSAGES = [
    ([("min_days: 3", "min_dais: 3")], f"{HP}.min_dais", ["unknown field `min_dais`", "did you mean `min_days`?"]),
    (
        [("  whipsaw_protection:\n", "  whipsaw_protecton:\n")],
        "$.protections.whipsaw_protecton",
        ["did you mean `whipsaw_protection`?"],
    ),
    ([("  - grace_period\n", "  - grace_perod\n")], "$.hierarchy[2]", ['`"grace_perod"`', "did you mean `grace_period`?"]),
    (
        [("high: [grace_period, holding_period]", "high: [grace_period, holdng_period]")],
        f"{RO}.bypass.high[1]",
        ["did you mean `holding_period`?"],
    ),
    ([("blocks: [open]", "blocks: [opne]")], f"{WP}.blocks[0]", ["did you mean `open`?"]),
    ([("kind: ProtectionPolicy", "kind: Policy")], "$.kind", ['must be `"ProtectionPolicy"`', 'got `"Policy"`']),
    ([("decay_rate: 0.8", "decay_rate: 0")], f"{GP}.decay_rate", ["> 0"]),
    ([("max_days: 90", "max_days: 2")], f"{HP}.max_days", ["(2)", "(3)"]),
    ([("normal: []", "normal: [core_asset_immunity]")], f"{RO}.bypass.normal[0]", ["never overridable"]),
]


@pytest.mark.parametrize(("edits", "path", "fragments"), MESSAGES)
def test_issue_message_explains_the_mistake(tmp_path, edits, path, fragments):
    file = tmp_path / "policy.yaml"
    file.write_text(edited(*edits), encoding="utf-8")
    with pytest.raises(PolicyInvalid) as caught:
        load_policy(file)
    [issue] = [i for i in caught.value.issues if i.path == path]
    for fragment in fragments:
        assert fragment in issue.message


def test_unknown_field_far_from_any_name_has_no_suggestion(tmp_path):
    text = edited(("    max_days: 90\n", "    max_days: 90\n    zzz: 1\n"))
    file = tmp_path / "policy.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyInvalid) as caught:
        load_policy(file)
    [issue] = caught.value.issues
    assert issue.message == "unknown field `zzz`"


def test_column_points_at_the_value_or_key(tmp_path):
    # `    days: 0` -> the value starts at column 11; `    min_dais: 3` -> the key at column 5.
    text = edited(("    days: 5\n", "    days: 0\n"))
    assert _columns(tmp_path, text) == [("$.protections.grace_period.days", At("days: 0").line(text), 11)]
    text = edited(("min_days: 3", "min_dais: 3"))
    assert _columns(tmp_path, text) == [("$.protections.holding_period.min_dais", At("min_dais").line(text), 5)]


def _columns(tmp_path, text):
    file = tmp_path / "policy.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyInvalid) as caught:
        load_policy(file)
    return [(i.path, i.line, i.column) for i in caught.value.issues]


def test_three_independent_mistakes_are_all_reported_with_their_lines(tmp_path):
    # The issue's "done when": one mistake per pass (schema pattern, semantic bypass, range order),
    # far apart in the file; all three come back at once, in file order.
    text = edited(
        ("version: 1.0.0", "version: '1.0'"),  # metadata: not semver (line 6 of the original)
        ("normal: []", "normal: [core_asset_immunity]"),  # regime_override: core cannot be bypassed
        ("max_days: 90", "max_days: 1"),  # holding_period: max_days < min_days
    )
    lines = [At("version: '1.0'").line(text), At("normal: [core_asset_immunity]").line(text), At("max_days: 1").line(text)]
    assert lines[0] == 6 and lines[0] < lines[1] < lines[2]
    assert issues_of(tmp_path, text) == [
        ("schema-pattern", "$.metadata.version", lines[0]),
        ("bypass-core", f"{RO}.bypass.normal[0]", lines[1]),
        ("range-order", f"{HP}.max_days", lines[2]),
    ]


def test_policy_invalid_message_counts_the_other_issues(tmp_path):
    text = edited(("    days: 5\n", "    days: 0\n"), ("max_cycles: 1", "max_cycles: 0"))
    file = tmp_path / "p.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyInvalid) as caught:
        load_policy(file)
    line = At("days: 0").line(text)
    assert str(caught.value).startswith(f"invalid policy: {file}:{line}:11: $.protections.grace_period.days:")
    assert str(caught.value).endswith("(and 1 more)")


# ---------------------------------------------------------------------------- valid variants

VALID_EDITS = [
    # max_days == min_days is allowed (the order check is strict)
    ("equal-min-max", [("max_days: 90", "max_days: 3")]),
    # a disabled protection may be left out of the hierarchy, if nothing bypasses it
    (
        "disabled-unplaced",
        [
            ("  - core_asset_immunity\n", ""),
            ("  core_asset_immunity:\n    enabled: true", "  core_asset_immunity:\n    enabled: false"),
        ],
    ),
    # parameters at the edges of their ranges
    (
        "range-edges",
        [
            ("cooldown_days: 30", "cooldown_days: 0"),
            ("decay_rate: 0.8", "decay_rate: 1"),
            ("min_decay_factor: 0.1", "min_decay_factor: 0"),
            ("min_days: 3", "min_days: 0"),
            ("period_days: 14", "period_days: 3650"),
        ],
    ),
    ("prerelease-version", [("version: 1.0.0", "version: 2.10.0-rc.1")]),
    # empty bypass lists everywhere: an override that bypasses nothing
    (
        "no-bypass",
        [
            ("high: [grace_period, holding_period]", "high: []"),
            ("critical: [grace_period, holding_period, whipsaw_protection]", "critical: []"),
        ],
    ),
]


@pytest.mark.parametrize("edits", [c[1] for c in VALID_EDITS], ids=[c[0] for c in VALID_EDITS])
def test_valid_variants_load(tmp_path, edits):
    file = tmp_path / "policy.yaml"
    file.write_text(edited(*edits), encoding="utf-8")
    assert isinstance(load_policy(file), Policy)


# ---------------------------------------------------------------------------- shipped policies

SHIPPED = sorted(glob.glob(str(REPO / "policies" / "*.yaml")))


def test_there_are_shipped_policies():
    assert str(default_policy_path()) in SHIPPED
    assert Path(policies_dir()).resolve() == (REPO / "policies").resolve()


@pytest.mark.parametrize("path", SHIPPED, ids=[Path(p).name for p in SHIPPED])
def test_every_shipped_policy_validates(path):
    policy = load_policy(path)
    assert policy.hierarchy and set(policy.hierarchy) <= set(policy.protections)
    assert len(policy.sha256) == 64


def test_default_policy_matches_spec():
    policy = load_policy(default_policy_path())
    assert (policy.name, policy.version) == ("default", "1.0.0")
    assert policy.hierarchy == (
        "core_asset_immunity",
        "regime_override",
        "grace_period",
        "holding_period",
        "whipsaw_protection",
    )
    assert [policy.priority(n) for n in policy.hierarchy] == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------- sha256

# Edits that change only layout: comments, blank lines, quoting, flow vs block style, key order.
LAYOUT_EDITS = [
    ("comments", [("  days: 5\n", "  days: 5  # five days\n"), ("protections:\n", "# all of them\nprotections:\n")]),
    ("blank-lines-and-trailing-space", [("kind: ProtectionPolicy\n", "kind: ProtectionPolicy   \n\n\n")]),
    ("quoting", [("  name: default", '  name: "default"'), ("kind: ProtectionPolicy", "kind: 'ProtectionPolicy'")]),
    ("block-style-list", [("    blocks: [open]\n", "    blocks:\n      - open\n")]),
    ("wider-indent", [("    max_cycles: 1\n    period_days: 14\n", "    max_cycles:   1\n    period_days:    14\n")]),
    ("key-order", [("    min_days: 3\n    max_days: 90\n", "    max_days: 90\n    min_days: 3\n")]),
]

# Edits that change meaning: any parameter, or the priority order.
MEANING_EDITS = [
    ("days", [("    days: 5\n", "    days: 6\n")]),
    ("threshold", [("score_threshold: 0.6", "score_threshold: 0.65")]),
    ("blocks", [("blocks: [open]", "blocks: [open, increase]")]),
    ("enabled", [("  whipsaw_protection:\n    enabled: true", "  whipsaw_protection:\n    enabled: false")]),
    ("priority", [("  - holding_period\n  - whipsaw_protection\n", "  - whipsaw_protection\n  - holding_period\n")]),
    ("version", [("version: 1.0.0", "version: 1.0.1")]),
]


def _sha(tmp_path: Path, text: str) -> str:
    file = tmp_path / "policy.yaml"
    file.write_text(text, encoding="utf-8")
    return load_policy(file).sha256


@pytest.mark.parametrize("edits", [c[1] for c in LAYOUT_EDITS], ids=[c[0] for c in LAYOUT_EDITS])
def test_sha256_ignores_layout(tmp_path, edits):
    assert _sha(tmp_path, edited(*edits)) == load_policy(default_policy_path()).sha256


@pytest.mark.parametrize("edits", [c[1] for c in MEANING_EDITS], ids=[c[0] for c in MEANING_EDITS])
def test_sha256_changes_with_meaning(tmp_path, edits):
    assert _sha(tmp_path, edited(*edits)) != load_policy(default_policy_path()).sha256
