"""Broken custom protections: each mistake is reported with its code, JSON path, line and column.

Each case starts from `policies/examples/custom.yaml` and applies textual edits (each `old`
snippet must occur exactly once). Expected positions are locators worked out from the edited
text alone: `At(line_snippet, column_snippet)` is the line holding `line_snippet` and the column
(1-based) where `column_snippet` starts on it: where the value or key in error is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from protection_rules.errors import PolicyInvalid
from protection_rules.policy import load_policy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = (ROOT / "policies" / "examples" / "custom.yaml").read_text(encoding="utf-8")
CL = "$.protections.concentration_limit"
MOP = "$.protections.max_open_positions"
MS = "$.protections.minimum_score_to_open"
BL = "$.protections.blacklist"


@dataclass(frozen=True)
class At:
    line_snippet: str
    column_snippet: str
    below: int = 0  # lines below the snippet's

    def where(self, text: str) -> tuple[int, int]:
        lines = text.splitlines()
        found = [n for n, line in enumerate(lines, start=1) if self.line_snippet in line]
        assert len(found) == 1, f"locator {self.line_snippet!r} matches {len(found)} lines"
        number = found[0] + self.below
        line = lines[number - 1]
        assert line.count(self.column_snippet) >= 1, f"{self.column_snippet!r} not on line {number}"
        return number, line.index(self.column_snippet) + 1


def edited(*edits: tuple[str, str]) -> str:
    text = EXAMPLE
    for old, new in edits:
        assert text.count(old) == 1, f"snippet {old!r} is not unique in the example policy"
        text = text.replace(old, new)
    return text


GT = "        - {fact: target_size, gt: 0.1}\n"
GE = "        - {fact: active_positions, ge: 30}\n"
LT = "        - {fact: current_score, lt: 0.5}\n"

# (id, edits, [(code, path, At, words the message must contain)])
CASES = [
    (
        "fact-unknown-with-did-you-mean",
        [(GT, "        - {fact: target_sise, gt: 0.1}\n")],
        [("fact-unknown", f"{CL}.when.all[1].fact", At("target_sise", "target_sise"), ["unknown fact `target_sise`", "did you mean `target_size`?"])],
    ),
    (
        "type-string-fact-against-a-number",
        [("{fact: asset, not_in: [SPY, QQQ]}", "{fact: asset, eq: 5}")],
        [("condition-type", f"{CL}.when.all[2].eq", At("{fact: asset, eq: 5}", "5}"), ["`asset` is a string, got `5` (number)"])],
    ),
    (
        "type-number-fact-against-a-string",
        [(GT, "        - {fact: target_size, gt: high}\n")],
        [("condition-type", f"{CL}.when.all[1].gt", At("gt: high", "high"), ["`target_size` is a number, got `\"high\"` (string)"])],
    ),
    (
        "type-in-with-a-non-list",
        [("{fact: asset, in: [ACME, FRAUDCO, SANCTN]}", "{fact: asset, in: ACME}")],
        [("condition-type", f"{BL}.when.in", At("in: ACME", "ACME"), ["`in` takes a list of values, got `\"ACME\"` (string)"])],
    ),
    (
        "type-boolean-fact-against-a-number",
        [(GE, "        - {fact: is_core, eq: 1}\n")],
        [("condition-type", f"{MOP}.when.all[1].eq", At("is_core", "1}"), ["`is_core` is a boolean, got `1` (number)"])],
    ),
    (
        "type-ordering-on-a-string",
        [("{fact: asset, not_in: [SPY, QQQ]}", "{fact: asset, gt: SPY}")],
        [("condition-type", f"{CL}.when.all[2].gt", At("gt: SPY", "SPY"), ["`asset` is a string: `gt` compares numbers"])],
    ),
    (
        "type-exists-takes-a-boolean",
        [("{fact: current_score, exists: false}", "{fact: current_score, exists: 1}")],
        [("condition-type", f"{MS}.when.any[0].exists", At("exists: 1", "1}"), ["`exists` takes true or false"])],
    ),
    (
        "operator-unknown-with-did-you-mean",
        [(GE, "        - {fact: active_positions, gte: 30}\n")],
        [("condition-operator", f"{MOP}.when.all[1].gte", At("gte: 30", "gte"), ["unknown operator `gte`", "did you mean `ge`?"])],
    ),
    (
        "combinator-misspelt",
        [("      any:\n", "      anny:\n")],
        [("condition-operator", f"{MS}.when.anny", At("anny:", "anny"), ["unknown operator `anny`", "did you mean `any`?"])],
    ),
    (
        "empty-any",
        [("      any:\n        - {fact: current_score, exists: false}\n" + LT, "      any: []\n\n\n")],
        [("condition-empty", f"{MS}.when.any", At("any: []", "[]"), ["`any` has no conditions"])],
    ),
    (
        "empty-all",
        [("      all:\n        - {fact: active_positions, exists: true}\n" + GE, "      all: []\n\n\n")],
        [("condition-empty", f"{MOP}.when.all", At("all: []", "[]"), ["`all` has no conditions"])],
    ),
    (
        "empty-in",
        [("in: [ACME, FRAUDCO, SANCTN]", "in: []")],
        [("condition-empty", f"{BL}.when.in", At("in: []", "[]"), ["`in` has no values"])],
    ),
    (
        "two-operators-in-one-test",
        [(GT, "        - {fact: target_size, gt: 0.1, lt: 0.5}\n")],
        [("condition-shape", f"{CL}.when.all[1].lt", At("gt: 0.1, lt: 0.5}", "lt"), ["`gt` and `lt` in one condition"])],
    ),
    (
        "a-fact-without-an-operator",
        [(GT, "        - {fact: target_size}\n")],
        [("condition-shape", f"{CL}.when.all[1]", At("- {fact: target_size}", "{fact"), ["has no operator"])],
    ),
    (
        "a-group-and-a-test-in-one-condition",
        [(GT, "        - {fact: target_size, gt: 0.1, all: [{fact: asset, eq: X}]}\n")],
        [("condition-shape", f"{CL}.when.all[1]", At("gt: 0.1, all:", "{fact"), ["`all` and `fact` and `gt` in one condition"])],
    ),
    (
        "a-condition-that-is-not-a-mapping",
        [(GT, "        - target_size > 0.1\n")],
        [("condition-shape", f"{CL}.when.all[1]", At("target_size > 0.1", "target_size"), ["a condition is a mapping"])],
    ),
    (
        "value-action-misspelt",
        [(GT, "        - {fact: action, eq: opne}\n")],
        [("condition-value", f"{CL}.when.all[1].eq", At("opne", "opne"), ["`opne` is not a `action`", "did you mean `open`?"])],
    ),
    (
        "value-not-an-asset-symbol",
        [("in: [ACME, FRAUDCO, SANCTN]", "in: [ACME, 'FRAUD CO']")],
        [("condition-value", f"{BL}.when.in[1]", At("FRAUD CO", "'FRAUD CO'"), ["is not an asset symbol a request can carry"])],
    ),
    (
        "value-listed-twice",
        [("in: [ACME, FRAUDCO, SANCTN]", "in: [ACME, FRAUDCO, ACME]")],
        [("condition-value", f"{BL}.when.in[2]", At("in: [ACME, FRAUDCO, ACME]", "ACME]"), ['lists `"ACME"` (string) twice'])],
    ),
    (
        "value-too-large",
        [(GE, "        - {fact: active_positions, ge: 1.0e+16}\n")],
        [("condition-value", f"{MOP}.when.all[1].ge", At("1.0e+16", "1.0e+16"), ["too large"])],
    ),
    (
        "template-unknown-fact",
        [("reason: target size {target_size} is", "reason: target size {target_sise} is")],
        [("template-fact-unknown", f"{CL}.reason", At("{target_sise}", "target size"), ["`{target_sise}` names no fact", "did you mean `target_size`?"])],
    ),
    (
        "template-lone-brace",
        [("reason: target size {target_size} is", "reason: target size {target_size is")],
        [("template-syntax", f"{CL}.reason", At("{target_size is", "target size"), ["a lone `{`", "at character 13"])],
    ),
    (
        "template-format-spec",
        [("reason: target size {target_size} is", "reason: target size {target_size:.2f} is")],
        [("template-syntax", f"{CL}.reason", At("{target_size:.2f}", "target size"), ["`{target_size:.2f}` is not a fact name"])],
    ),
    (
        "bypass-a-custom-protection-above-regime-override",
        [("critical: [grace_period,", "critical: [blacklist, grace_period,")],
        [("bypass-not-lower", "$.protections.regime_override.bypass.critical[0]", At("critical: [blacklist", "blacklist"), ["`blacklist` has a higher priority than `regime_override`"])],
    ),
    (
        "hierarchy-names-an-undefined-custom-protection",
        [("  - minimum_score_to_open\n", "  - minimum_score_to_opn\n")],
        [("schema-enum", "$.hierarchy[8]", At("  - minimum_score_to_opn", "minimum_score_to_opn"), ["did you mean `minimum_score_to_open`?"])],
    ),
    (
        "custom-protection-not-in-the-hierarchy",
        [("  - minimum_score_to_open\n", "\n")],
        [("hierarchy-missing", MS, At("  minimum_score_to_open:", "minimum_score_to_open"), ["`minimum_score_to_open` is enabled but not placed in the hierarchy"])],
    ),
    (
        "custom-protection-without-when",
        [("    when: {fact: asset, in: [ACME, FRAUDCO, SANCTN]}\n", "\n")],
        [("schema-required", f"{BL}.when", At("  blacklist:", "type", below=1), ["missing required field `when`"])],
    ),
    (
        "custom-protection-type-misspelt",
        [("    type: condition\n    enabled: true\n    blocks: [open, increase]\n    when: {fact", "    type: conditon\n    enabled: true\n    blocks: [open, increase]\n    when: {fact")],
        [("schema-const", f"{BL}.type", At("type: conditon", "conditon"), ['`type` must be `"condition"`'])],
    ),
    (
        "fact-needs-a-built-in-block",
        [(GT, "        - {fact: cycles_in_window, ge: 2}\n"), ("  - whipsaw_protection\n", "\n"), (", whipsaw_protection, max", ", max"),
         ("  whipsaw_protection:\n    enabled: true\n    blocks: [open]\n    max_cycles: 1\n    period_days: 14\n", "\n\n\n\n\n")],
        [("fact-needs-protection", f"{CL}.when.all[1].fact", At("cycles_in_window", "cycles_in_window"), ["add a `whipsaw_protection` block"])],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("edits", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_mistake_is_reported_at_its_line_and_column(tmp_path, edits, expected):
    text = edited(*edits)
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyInvalid) as caught:
        load_policy(path)
    got = [(i.code, i.path, (i.line, i.column)) for i in caught.value.issues]
    assert got == [(code, where, at.where(text)) for code, where, at, _ in expected]
    for issue, (_, _, _, words) in zip(caught.value.issues, expected, strict=True):
        assert issue.file == str(path)
        for word in words:
            assert word in issue.message, issue.message


def test_the_table_covers_every_custom_protection_code():
    codes = {code for case in CASES for code, *_ in case[2]}
    assert {
        "condition-shape",
        "condition-operator",
        "condition-empty",
        "condition-type",
        "condition-value",
        "fact-unknown",
        "fact-needs-protection",
        "template-syntax",
        "template-fact-unknown",
    } <= codes


def test_too_deep_a_condition_is_refused(tmp_path):
    deep = "{fact: target_size, gt: 0.1}"
    for _ in range(9):
        deep = "{not: " + deep + "}"
    text = edited((GT, f"        - {deep}\n"))
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyInvalid) as caught:
        load_policy(path)
    [issue] = caught.value.issues
    # `when` is level 1, the item of its `all` level 2, and each `not` one more: level 9 is refused
    assert (issue.code, issue.path) == ("condition-shape", f"{CL}.when.all[1]" + ".not" * 7)
    assert "nested more than 8 deep" in issue.message
