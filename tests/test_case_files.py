"""Case files (the `protect test` format): what `load_cases` gives, and every mistake it reports
with file, line and column, like a policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spec_helpers import walk_schema

from protection_rules.cases import Case, find_case_files, load_case_files, load_cases
from protection_rules.errors import CasesInvalid, UsageError
from protection_rules.resources import default_policy_path
from protection_rules.testing import run_cases

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schemas" / "cases.v1.schema.json").read_text(encoding="utf-8"))
REQUEST = '{asset: X, action: open, current_date: "2026-03-20T12:00:00Z"}'

TWO_CASES = f"""\
# a comment
cases:
  - name: first
    request: {REQUEST}
    expect: {{decision: approve}}

  - request: {REQUEST}
    name: second
    policy_overrides:
      protections:
        holding_period: {{min_days: 5}}
    expect:
      decision: approve
      unblocks_at: null
"""


def write(folder: Path, text: str, name: str = "cases.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_load_cases_gives_each_case_with_its_place_policy_and_overrides(tmp_path):
    path = write(tmp_path, TWO_CASES)
    loaded = load_cases(path)
    assert loaded.path == path and loaded.policy == default_policy_path()
    first, second = loaded.cases
    assert (first.name, first.file, first.line, first.index, first.location) == ("first", str(path), 3, 0, f"{path}:3")
    # the item's line, wherever `name` sits in it
    assert (second.name, second.line, second.index) == ("second", 7, 1)
    assert first.request == {"asset": "X", "action": "open", "current_date": "2026-03-20T12:00:00Z"}
    assert first.expect == {"decision": "approve"} and first.policy_overrides is None
    assert second.policy_overrides == {"protections": {"holding_period": {"min_days": 5}}}
    assert second.expect == {"decision": "approve", "unblocks_at": None}
    assert first.policy == second.policy == default_policy_path()


def test_policy_is_relative_to_the_case_file_and_the_option_replaces_it(tmp_path):
    policy = write(tmp_path, default_policy_path().read_text(), "policies/team.yaml")
    path = write(tmp_path, "policy: ../policies/team.yaml\n" + TWO_CASES, "cases/team.yaml")
    assert load_cases(path).policy == policy
    assert all(case.policy == policy for case in load_cases(path).cases)
    assert load_cases(path, policy=default_policy_path()).policy == default_policy_path()


def test_dates_in_expectations_stay_text(tmp_path):
    path = write(tmp_path, TWO_CASES.replace("unblocks_at: null", "unblocks_at: 2026-03-21"))
    assert load_cases(path).cases[1].expect["unblocks_at"] == "2026-03-21"


def _case(expect: str = "{decision: approve}", extra: str = "") -> str:
    return f"cases:\n  - name: a\n    request: {REQUEST}\n    expect: {expect}\n{extra}"


# (text, [(code, path, line, column)]) with every position counted by hand
INVALID = {
    "unknown-case-field": (
        _case(extra="    expekt: {}\n"),
        [("schema-unknown-field", "$.cases[0].expekt", 5, 5)],
    ),
    "misspelt-expect": (
        f"cases:\n  - name: a\n    request: {REQUEST}\n    expekt: {{decision: approve}}\n",
        [("schema-unknown-field", "$.cases[0].expekt", 4, 5)],
    ),
    "unknown-expect-field": (
        _case("{decison: approve}"),
        [("schema-unknown-field", "$.cases[0].expect.decison", 4, 14)],
    ),
    "decision-not-an-enum": (_case("{decision: aprove}"), [("schema-enum", "$.cases[0].expect.decision", 4, 24)]),
    "unknown-protection": (
        _case("{statuses: {grace_perod: pass}}"),
        [("schema-unknown-field", "$.cases[0].expect.statuses.grace_perod", 4, 25)],
    ),
    "unknown-status": (
        _case("{statuses: {grace_period: passed}}"),
        [("schema-enum", "$.cases[0].expect.statuses.grace_period", 4, 39)],
    ),
    "blocking-twice": (
        _case("{blocking_systems: [error, error]}"),
        [("schema-unique", "$.cases[0].expect.blocking_systems", 4, 32)],
    ),
    "timestamp-shape": (_case('{unblocks_at: "2026-03-21 09:00"}'), [("schema-pattern", "$.cases[0].expect.unblocks_at", 4, 27)]),
    "timestamp-impossible": (
        _case("{trace_unblocks_at: {holding_period: 2026-02-30}}"),
        [("timestamp-invalid", "$.cases[0].expect.trace_unblocks_at.holding_period", 4, 50)],
    ),
    "empty-expect": (_case("{}"), [("schema-length", "$.cases[0].expect", 4, 13)]),
    "missing-request": (
        "cases:\n  - name: a\n    expect: {decision: deny}\n",
        [("schema-required", "$.cases[0].request", 2, 5)],
    ),
    "name-with-newline": (_case().replace("name: a", 'name: "a\\nb"'), [("schema-pattern", "$.cases[0].name", 2, 11)]),
    "duplicate-name": (
        _case() + f"  - name: a\n    request: {REQUEST}\n    expect: {{decision: deny}}\n",
        [("case-duplicate-name", "$.cases[1].name", 5, 11)],
    ),
    "no-cases": ("cases: []\n", [("schema-length", "$.cases", 1, 8)]),
    "not-a-mapping": ("- name: a\n", [("schema-type", "$", 1, 1)]),
    "policy-missing": ("policy: nowhere.yaml\n" + _case(), [("case-policy-missing", "$.policy", 1, 9)]),
    "unknown-top-level": ("polcy: x.yaml\n" + _case(), [("schema-unknown-field", "$.polcy", 1, 1)]),
    "non-finite": (
        _case().replace("open,", "open, current_score: .nan,"),
        [("yaml-non-finite", "$.cases[0].request.current_score", 3, 54)],
    ),
    "duplicate-key": (_case(extra="    name: b\n"), [("yaml-duplicate-key", "$.cases[0].name", 5, 5)]),
    "alias": ("cases:\n  - &a {name: a, request: {}, expect: {decision: deny}}\n  - *a\n", [("yaml-alias", "$", 3, 5)]),
    "tab": ("cases:\n\t- name: a\n", [("yaml-tab", "$", 2, 1)]),
    "empty": ("# nothing\n", [("file-empty", "$", 1, 1)]),
}


@pytest.mark.parametrize(("text", "expected"), list(INVALID.values()), ids=list(INVALID))
def test_invalid_case_file(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(CasesInvalid) as caught:
        load_cases(path)
    assert [(i.code, i.path, i.line, i.column) for i in caught.value.issues] == expected
    assert all(issue.file == str(path) for issue in caught.value.issues)
    assert str(caught.value).startswith(f"invalid case file: {path}:")


def test_every_mistake_is_reported_at_once(tmp_path):
    text = "policy: nowhere.yaml\n" + _case("{decision: aprove}") + f"  - name: a\n    request: {REQUEST}\n    expect: {{}}\n"
    with pytest.raises(CasesInvalid) as caught:
        load_cases(write(tmp_path, text))
    assert [i.code for i in caught.value.issues] == ["case-policy-missing", "schema-enum", "case-duplicate-name", "schema-length"]
    assert caught.value.issues[2].message == "case `a` is defined twice (first on line 3)"


def test_a_case_file_is_read_bounded(tmp_path):
    path = write(tmp_path, "cases:\n" + "#" * 1_000_001 + "\n")
    with pytest.raises(CasesInvalid) as caught:
        load_cases(path)
    assert [i.code for i in caught.value.issues] == ["file-too-large"]


def test_missing_case_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_cases(tmp_path / "nope.yaml")


def test_overrides_that_break_the_policy_are_reported_at_their_lines(tmp_path):
    text = _case(extra="    policy_overrides:\n      protections:\n        holding_period: {min_days: -1, max_dayz: 3}\n")
    path = write(
        tmp_path,
        text
        + _case(extra="    policy_overrides: {hierarchy: [grace_period]}\n")
        .replace("cases:\n", "")
        .replace("name: a", "name: b"),
    )
    with pytest.raises(CasesInvalid) as caught:
        run_cases(load_cases(path).cases)
    found = [(i.path, i.line, i.column) for i in caught.value.issues]
    prefix = "$.cases[0].policy_overrides.protections.holding_period"
    assert found[:2] == [(f"{prefix}.min_days", 7, 36), (f"{prefix}.max_dayz", 7, 40)]
    # what the overrides do not write points at their key; the second case's issues come too
    assert {(line, column) for _, line, column in found[2:]} == {(11, 5)}
    assert all(path.startswith("$.cases[1].policy_overrides.") for path, _, _ in found[2:])
    assert "the policy with these overrides is invalid: `min_days` must be >= 0, got `-1`" in str(caught.value.issues[0])


def test_find_case_files_reads_folders_sorted_and_names_each_file_once(tmp_path):
    b, a = write(tmp_path, "x", "b.yaml"), write(tmp_path, "x", "a.yml")
    write(tmp_path, "x", "notes.txt")
    write(tmp_path, "x", "sub/deeper.yaml")
    assert find_case_files([tmp_path, b]) == [a, b]


@pytest.mark.parametrize(
    ("make", "message"), [("empty-folder", "no *.yaml case files in this folder"), ("missing", "no such file")]
)
def test_find_case_files_usage_errors(tmp_path, make, message):
    target = tmp_path / make
    if make == "empty-folder":
        target.mkdir()
    with pytest.raises(UsageError, match=message.replace("*", r"\*")):
        find_case_files([target])


def test_load_case_files_reports_the_issues_of_every_file(tmp_path):
    write(tmp_path, _case("{decision: aprove}"), "a.yaml")
    write(tmp_path, _case("{decison: deny}"), "b.yaml")
    with pytest.raises(CasesInvalid) as caught:
        load_case_files([tmp_path])
    assert [(Path(i.file).name, i.code) for i in caught.value.issues] == [
        ("a.yaml", "schema-enum"),
        ("b.yaml", "schema-unknown-field"),
    ]


def test_case_is_a_value():
    case = Case("n", "f.yaml", 3, 0, {}, {"decision": "deny"}, default_policy_path())
    assert case.location == "f.yaml:3"
    with pytest.raises(AttributeError):
        case.name = "m"  # type: ignore[misc]


# ----------------------------------------------------------------------------------- the schema


# open on purpose: the engine validates a request (an invalid one is a case too), the merged
# policy validates overrides, and facts differ per protection (a fact not there is a failure)
OPEN = {
    "#/$defs/case/properties/request",
    "#/$defs/case/properties/policy_overrides",
    "#/$defs/expect/properties/facts/additionalProperties",
} | {
    f"#/$defs/expect/properties/facts/properties/{p}"
    for p in ("core_asset_immunity", "regime_override", "grace_period", "holding_period", "whipsaw_protection")
}


# keyed by protection: the built-ins by name, a custom protection (any name) like them
BY_PROTECTION = {f"#/$defs/expect/properties/{key}" for key in ("statuses", "trace_unblocks_at", "facts")}


def test_case_schema_objects_are_closed_except_the_open_ones():
    objects = [(where, node) for where, node in walk_schema(SCHEMA) if node.get("type") == "object" or "properties" in node]
    assert len(objects) >= 8
    for where, node in objects:
        if where in BY_PROTECTION:
            assert node["additionalProperties"] == node["properties"]["grace_period"], where
            assert node["propertyNames"]["pattern"].startswith("^[a-z]"), where
        elif where not in OPEN:
            assert node.get("additionalProperties") is False, where
    assert all(where in dict(walk_schema(SCHEMA)) for where in OPEN | BY_PROTECTION)


def test_every_case_schema_property_has_a_description():
    properties = [
        (f"{where}/{name}", spec)
        for where, node in walk_schema(SCHEMA)
        if isinstance(node.get("properties"), dict) and not where.endswith("/properties")
        for name, spec in node["properties"].items()
    ]
    assert len(properties) >= 20
    assert [where for where, spec in properties if not spec.get("description")] == []
