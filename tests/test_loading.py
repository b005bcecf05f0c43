"""The loader: unreadable, malformed or dangerous files become `Issue`s with a line, never a traceback.

Policy cases go through `load_policy` end to end and start from the text of
`policies/default.yaml`. Line numbers of a snippet are located in the text with `line_of`
(computed from the text, never taken from the loader's output).
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protection_rules import loading
from protection_rules.errors import Issue, PolicyInvalid, UsageError
from protection_rules.loading import (
    MAX_DOCUMENT_BYTES,
    DocumentInvalid,
    SourceMap,
    json_path,
    load_json,
    load_yaml,
    read_requests,
    read_text,
)
from protection_rules.policy import load_policy

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TEXT = (REPO / "policies" / "default.yaml").read_text(encoding="utf-8")
DEFAULT_LINES = DEFAULT_TEXT.count("\n")  # the file ends with a newline: next line is this + 1


def edited(*edits: tuple[str, str]) -> str:
    text = DEFAULT_TEXT
    for old, new in edits:
        assert text.count(old) == 1, f"fixture snippet {old!r} is not unique in default.yaml"
        text = text.replace(old, new)
    return text


def line_of(text: str, snippet: str) -> int:
    found = [n for n, line in enumerate(text.splitlines(), start=1) if snippet in line]
    assert len(found) == 1, found
    return found[0]


def policy_issues(path: Path) -> list[Issue]:
    with pytest.raises(PolicyInvalid) as caught:
        load_policy(path)
    return list(caught.value.issues)


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "policy.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# ------------------------------------------------------------------- YAML-level mistakes in a policy


def _yaml_cases():
    """(id, text, [(code, path, line, column)]). Lines counted from the edited text."""
    cases = []

    # A duplicate key: YAML would silently keep the last value; we refuse, pointing at both.
    text = edited(("    max_days: 90\n", "    max_days: 90\n    min_days: 4\n"))
    cases.append(
        (
            "duplicate-key",
            text,
            [("yaml-duplicate-key", "$.protections.holding_period.min_days", line_of(text, "min_days: 4"), 5)],
        )
    )

    # An anchor and an alias: refused, at the alias (`*n` starts at column 10 of `  owner: *n`).
    text = edited(("  name: default", "  name: &n default"), ("  owner: risk-team", "  owner: *n"))
    cases.append(("alias", text, [("yaml-alias", "$", line_of(text, "owner: *n"), 10)]))

    # A tab in the indentation: `\tdays: 5` -> column 1; `  \tdays: 5` -> column 3.
    text = edited(("    days: 5\n", "\tdays: 5\n"))
    cases.append(("tab-first", text, [("yaml-tab", "$", line_of(text, "\tdays"), 1)]))
    text = edited(("    days: 5\n", "  \tdays: 5\n"))
    cases.append(("tab-after-spaces", text, [("yaml-tab", "$", line_of(text, "\tdays"), 3)]))

    # `  owner: risk-team: x` -> "mapping values are not allowed here" at the second colon, col 19.
    text = edited(("  owner: risk-team", "  owner: risk-team: x"))
    cases.append(("syntax-mapping-value", text, [("yaml-syntax", "$", line_of(text, "risk-team: x"), 19)]))

    # An unterminated quoted string runs to the end of the file.
    text = edited(("  owner: risk-team", "  owner: 'risk-team"))
    cases.append(("syntax-unterminated-quote", text, [("yaml-syntax", "$", DEFAULT_LINES + 1, 1)]))

    # A second document, starting on the line after the last: `--- {kind: Other}`.
    text = DEFAULT_TEXT + "--- {kind: Other}\n"
    cases.append(("multiple-documents", text, [("yaml-multiple-documents", "$", DEFAULT_LINES + 1, 1)]))

    # Non-finite numbers: YAML has them, JSON and the rules do not.
    # `    score_threshold: .nan` -> the value starts at column 22.
    text = edited(("score_threshold: 0.6", "score_threshold: .nan"))
    cases.append(
        ("non-finite-nan", text, [("yaml-non-finite", "$.protections.grace_period.score_threshold", line_of(text, ".nan"), 22)])
    )
    text = edited(("decay_rate: 0.8", "decay_rate: .inf"))
    cases.append(
        ("non-finite-inf", text, [("yaml-non-finite", "$.protections.grace_period.decay_rate", line_of(text, ".inf"), 17)])
    )
    text = edited(("min_decay_factor: 0.1", "min_decay_factor: -.Inf"))
    cases.append(
        (
            "non-finite-minus-inf",
            text,
            [("yaml-non-finite", "$.protections.grace_period.min_decay_factor", line_of(text, "-.Inf"), 23)],
        )
    )

    # An escaped surrogate is half a character: no message or hash could hold it. The value
    # `"x\ud83d\ude00"` starts at column 10; the key `"\udc00":` at column 3.
    text = edited(("  owner: risk-team", '  owner: "x\\ud83d\\ude00"'))
    cases.append(("surrogate-value", text, [("yaml-value", "$.metadata.owner", line_of(text, "ude00"), 10)]))
    text = edited(("  owner: risk-team", '  owner: risk-team\n  "\\udc00": 1'))
    cases.append(("surrogate-key", text, [("yaml-value", "$.metadata", line_of(text, "udc00"), 3)]))

    # Keys must be plain names: a complex key `? [a, b]` (the key node starts at column 3),
    # and a merge key `<<` (which would splice a mapping in).
    text = DEFAULT_TEXT + "? [a, b]\n: 1\n"
    cases.append(("complex-key", text, [("yaml-key", "$", DEFAULT_LINES + 1, 3)]))
    text = DEFAULT_TEXT + "<<: {kind: Other}\n"
    cases.append(("merge-key", text, [("yaml-key", "$", DEFAULT_LINES + 1, 1)]))
    return cases


YAML_CASES = _yaml_cases()


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES])
def test_yaml_mistake_reports_code_path_line_and_column(tmp_path, text, expected):
    path = write(tmp_path, text)
    issues = policy_issues(path)
    assert [(i.code, i.path, i.line, i.column) for i in issues] == expected
    assert all(i.file == str(path) for i in issues)


def test_duplicate_key_names_the_first_definition(tmp_path):
    text = edited(("    max_days: 90\n", "    max_days: 90\n    min_days: 4\n"))
    [issue] = policy_issues(write(tmp_path, text))
    assert issue.message == f"duplicate key `min_days` (first defined on line {line_of(text, 'min_days: 3')})"


def test_every_duplicate_key_and_non_finite_value_is_reported_at_once(tmp_path):
    # The YAML pass collects, it does not stop at the first mistake.
    text = edited(
        ("kind: ProtectionPolicy\n", "kind: ProtectionPolicy\nkind: ProtectionPolicy\n"),
        ("score_threshold: 0.6", "score_threshold: .nan"),
        ("    period_days: 14\n", "    period_days: 14\n    period_days: 15\n"),
    )
    issues = policy_issues(write(tmp_path, text))
    assert [(i.code, i.line) for i in issues] == [
        ("yaml-duplicate-key", 4),
        ("yaml-non-finite", line_of(text, ".nan")),
        ("yaml-duplicate-key", line_of(text, "period_days: 15")),
    ]


def test_second_document_is_reported_at_its_separator(tmp_path):
    # The second document begins at its `---` (the line to delete), not at its first key.
    text = DEFAULT_TEXT + "---\n# a second policy\nkind: Other\n"
    [issue] = policy_issues(write(tmp_path, text))
    assert (issue.code, issue.line) == ("yaml-multiple-documents", DEFAULT_LINES + 1)


def test_syntax_error_message_says_what_is_wrong(tmp_path):
    [issue] = policy_issues(write(tmp_path, edited(("  owner: risk-team", "  owner: risk-team: x"))))
    assert issue.message.startswith("yaml: ") and "mapping values are not allowed" in issue.message


@pytest.mark.parametrize("value", ["!foo risk-team", "!!python/name:os.system ''"], ids=["local-tag", "python-name"])
def test_unknown_tag_is_an_issue_not_a_traceback(tmp_path, value):
    # Only the standard tags mean anything to a policy; others must fail closed, at the tag
    # (`  owner: !...` -> column 10), not escape as a yaml.constructor.ConstructorError.
    text = edited(("  owner: risk-team", f"  owner: {value}"))
    path = write(tmp_path, text)
    [issue] = policy_issues(path)
    assert issue.code.startswith("yaml-")
    assert (issue.path, issue.line, issue.column, issue.file) == ("$.metadata.owner", line_of(text, "owner:"), 10, str(path))


def test_huge_integer_is_an_issue_not_a_traceback(tmp_path):
    # Python refuses to convert integers of more than 4300 digits (ValueError); the loader must
    # turn that into an issue at the value, like any other unusable number.
    text = edited(("    days: 5\n", "    days: " + "9" * 5000 + "\n"))
    [issue] = policy_issues(write(tmp_path, text))
    assert (issue.path, issue.line) == ("$.protections.grace_period.days", line_of(text, "days: 999"))


def test_tags_that_name_standard_types_are_fine(tmp_path):
    text = edited(("max_cycles: 1", "max_cycles: !!int 1"), ("  owner: risk-team", "  owner: !!str risk-team"))
    policy = load_policy(write(tmp_path, text))
    assert policy.document["protections"]["whipsaw_protection"]["max_cycles"] == 1
    assert policy.owner == "risk-team"


# ------------------------------------------------------------------- file-level problems


@pytest.mark.parametrize(
    "content",
    ["", "\n\n", "   \n", "# only a comment\n", "# one\n\n   # two, indented\n"],
    ids=["empty", "blank-lines", "spaces", "comment", "comments-and-blanks"],
)
def test_empty_file(tmp_path, content):
    [issue] = policy_issues(write(tmp_path, content))
    assert (issue.code, issue.path, issue.line, issue.column) == ("file-empty", "$", 1, 1)


def test_latin1_byte_reports_line_and_column_of_the_bad_byte(tmp_path):
    # `  owner: risk-t\xe9am` in Latin-1: the byte 0xe9 is the 16th on its line.
    raw = edited(("  owner: risk-team", "  owner: risk-t\u00e9am")).encode("latin-1")
    [issue] = policy_issues(write(tmp_path, raw))
    assert (issue.code, issue.line, issue.column) == ("file-encoding", line_of(DEFAULT_TEXT, "owner:"), 16)
    assert "0xe9" in issue.message


def test_latin1_byte_on_the_first_line(tmp_path):
    [issue] = policy_issues(write(tmp_path, b"\xff" + DEFAULT_TEXT.encode()))
    assert (issue.code, issue.line, issue.column) == ("file-encoding", 1, 1)


def test_nul_byte_is_an_encoding_problem(tmp_path):
    [issue] = policy_issues(write(tmp_path, DEFAULT_TEXT.encode() + b"\x00"))
    assert issue.code == "file-encoding"


def test_utf8_bom_is_accepted(tmp_path):
    assert load_policy(write(tmp_path, "\ufeff" + DEFAULT_TEXT)).name == "default"


def test_utf8_text_outside_ascii_is_accepted(tmp_path):
    text = edited(("  owner: risk-team", "  owner: équipe-risque 風險"))
    assert load_policy(write(tmp_path, text)).owner == "équipe-risque 風險"


def test_file_not_found_is_a_usage_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(UsageError) as caught:
        load_policy(missing)
    assert str(caught.value) == f"{missing}: no such file"


def test_directory_is_not_a_policy(tmp_path):
    [issue] = policy_issues(tmp_path)
    assert issue.code == "file-unreadable"


@pytest.mark.parametrize(
    ("content", "kind"),
    [("- a\n- b\n", "list"), ("just words\n", "str"), ("42\n", "int"), ("null\n", "NoneType")],
    ids=["list", "string", "number", "null"],
)
def test_document_must_be_a_mapping(tmp_path, content, kind):
    [issue] = policy_issues(write(tmp_path, content))
    assert (issue.code, issue.path, issue.line) == ("document-not-mapping", "$", 1)
    assert kind in issue.message


def test_file_too_large(tmp_path):
    # A valid policy padded with comments past the limit: the size check comes first.
    padding = ("# " + "x" * 98 + "\n") * (MAX_DOCUMENT_BYTES // 100 + 1)
    path = write(tmp_path, DEFAULT_TEXT + padding)
    assert path.stat().st_size > MAX_DOCUMENT_BYTES
    [issue] = policy_issues(path)
    assert issue.code == "file-too-large"
    assert str(MAX_DOCUMENT_BYTES) in issue.message


def test_file_just_under_the_limit_loads(tmp_path):
    padding = "#" * (MAX_DOCUMENT_BYTES - len(DEFAULT_TEXT.encode()) - 1) + "\n"
    path = write(tmp_path, DEFAULT_TEXT + padding)
    assert path.stat().st_size == MAX_DOCUMENT_BYTES
    assert load_policy(path).name == "default"


# ------------------------------------------------------------------- billion laughs

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_billion_laughs_is_refused_quickly_without_expanding(tmp_path):
    # 9^9 "lol"s if expanded; refused from the event stream, alias by alias, in well under a
    # second and a few MB.
    path = write(tmp_path, BILLION_LAUGHS)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        issues = policy_issues(path)
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 20_000_000
    assert {i.code for i in issues} == {"yaml-alias"}
    assert len(issues) == 8 * 9  # every alias in the text, each once
    # the first alias: `b: &b [*a` -> line 2, column 8
    assert (issues[0].line, issues[0].column) == (2, 8)


# ------------------------------------------------------------------- load_yaml / SourceMap


def test_source_map_records_values_and_keys():
    data, source = load_yaml("a:\n  b: [1, 2]\n  c: x\n", "f.yaml")
    assert data == {"a": {"b": [1, 2], "c": "x"}}
    assert source.values[("a",)] == (2, 3)  # the nested mapping starts at its first key
    assert source.keys[("a", "b")] == (2, 3)
    assert source.values[("a", "b")] == (2, 6)
    assert source.values[("a", "b", 1)] == (2, 10)
    assert source.locate(("a", "zzz")) == (2, 3)  # unknown path -> nearest ancestor
    assert source.locate(("nothing", "here")) == (1, 1)  # -> the document


@pytest.mark.parametrize("tag", ["int", "float", "bool"])
def test_an_explicit_tag_without_a_value_is_an_issue(tag):
    """PyYAML raises IndexError or KeyError for these: it became a traceback (exit 1)."""
    with pytest.raises(DocumentInvalid) as caught:
        load_yaml(f"a: 1\nb: !!{tag}\n", "f.yaml")
    [issue] = caught.value.issues
    assert (issue.code, issue.path, issue.line, issue.column) == ("yaml-value", "$.b", 2, 4)
    assert issue.message == f"`!!{tag}` with no value; write the value or drop the tag"


def test_yaml_dates_stay_text():
    # YAML 1.1 would turn these into date objects; the schemas decide what a date may be.
    data, _ = load_yaml("d: 2026-03-10\nt: 2026-03-10T09:00:00Z\n", "f.yaml")
    assert data == {"d": "2026-03-10", "t": "2026-03-10T09:00:00Z"}


def test_deep_nesting_is_an_issue_not_a_recursion_error(tmp_path):
    # 2000 nested flow sequences: a small file that must fail closed with an Issue, not a
    # RecursionError traceback from the YAML scanner or composer.
    path = write(tmp_path, "a: " + "[" * 2000 + "]" * 2000 + "\n")
    [issue] = policy_issues(path)
    assert (issue.code, issue.file) == ("yaml-syntax", str(path))


# ------------------------------------------------------------ libyaml and the pure-Python parser

needs_libyaml = pytest.mark.skipif(loading._FAST_LOADER is None, reason="PyYAML built without libyaml")


def read_both_ways(text: str) -> tuple[object, object]:
    """What `load_yaml` gives with libyaml allowed and with the pure-Python parser only: the data,
    every line and column of the source map, or the issues."""

    def outcome() -> object:
        try:
            data, source = load_yaml(text, "f.yaml")
        except DocumentInvalid as exc:
            return exc.issues
        return repr(data), source.values, source.keys

    fast = outcome()
    saved, loading._FAST_LOADER = loading._FAST_LOADER, None
    try:
        return fast, outcome()
    finally:
        loading._FAST_LOADER = saved


@needs_libyaml
def test_a_valid_policy_is_read_by_libyaml(monkeypatch):
    class NoPurePython(yaml.SafeLoader):
        def __init__(self, stream):
            raise AssertionError("the pure-Python parser read a document libyaml reads alike")

    monkeypatch.setattr(yaml, "SafeLoader", NoPurePython)
    assert load_policy(REPO / "policies" / "default.yaml").name == "default"


# Where the two parsers differ, found by comparing them on random documents: each must go to
# the pure-Python parser, which refuses the first four and places an empty value elsewhere
UNALIKE = {
    "tab after a token": "a: 1\t\n",
    "tab after an alias": "*x\t",
    "comment glued to a block scalar indicator": "reason: |#text\n",
    "question mark ending a flow scalar": "a: {b: c ?}\n",
    "empty plain value, explicit key": "? \n",
    "empty plain value after a document start": "---",
    "empty plain item": "a:\n  - \n",
    "escaped surrogate": 'a: "\\ud83d"\n',
    "alias": "a: &x 1\nb: *x\n",
    "two documents": "a: 1\n---\nb: 2\n",
}
REPO_YAML = sorted(p for folder in ("policies", "examples", "tests/cases") for p in (REPO / folder).rglob("*.yaml"))


@needs_libyaml
@pytest.mark.parametrize(
    "text",
    [*UNALIKE.values(), *(p.read_text(encoding="utf-8") for p in REPO_YAML)],
    ids=[*UNALIKE, *(str(p.relative_to(REPO)) for p in REPO_YAML)],
)
def test_libyaml_and_the_pure_python_parser_read_alike(text):
    fast, pure = read_both_ways(text)
    assert fast == pure


YAML_PIECES = [
    *("a", "key", "1", "1.5", "0x1F", ".inf", "true", "null", "~", "2026-03-10", "é", "😀", "<<", "@", "%"),
    *(":", ": ", " ", "  ", "\n", "\r\n", "\r", "\x85", "\u2028", "\t", "- ", "-", "? ", "#", ",", "---", "..."),
    *("[", "]", "{", "}", "'", '"', "\\", "\\u00e9", "|", ">", "|-", ">+", "&x ", "*x", "!!str ", "!x ", "%YAML 1.1\n"),
]


@needs_libyaml
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(YAML_PIECES), max_size=40).map("".join))
def test_libyaml_and_the_pure_python_parser_read_random_documents_alike(text):
    fast, pure = read_both_ways(text)
    assert fast == pure


def test_deep_json_nesting_is_an_issue():
    with pytest.raises(DocumentInvalid) as caught:
        load_json("[" * 100_000 + "]" * 100_000, "deep.json")
    assert caught.value.issues[0].code == "json-syntax"


def test_json_path():
    assert json_path(()) == "$"
    assert json_path(("protections", "grace_period", "days")) == "$.protections.grace_period.days"
    assert json_path(("hierarchy", 2)) == "$.hierarchy[2]"
    assert json_path(("state", "events", 0, "at")) == "$.state.events[0].at"


def test_source_map_issue_without_positions():
    issue = SourceMap("req.json").issue("schema-type", ("asset",), "bad")
    assert (issue.file, issue.path, issue.line, issue.column) == ("req.json", "$.asset", None, None)
    assert str(issue) == "req.json: $.asset: bad"


def test_read_text_decodes_utf8(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_bytes("\ufeffa: é\n".encode())
    assert read_text(path) == "a: é\n"


# ------------------------------------------------------------------- JSON requests

JSON_ERRORS = [
    # (text, code, line, column): a syntax error carries its position
    # Python 3.13's parser points at the trailing comma itself, older ones at the `}` after it
    ('{"a": 1,}', "json-syntax", 1, 8 if sys.version_info >= (3, 13) else 9),
    ('{\n  "a": 1\n  "b": 2\n}', "json-syntax", 3, 3),
    ('{"a": NaN}', "json-syntax", None, None),
    ('{"a": Infinity}', "json-syntax", None, None),
    ('{"a": -Infinity}', "json-syntax", None, None),
    ('{"a": 1, "a": 2}', "json-syntax", None, None),
]


@pytest.mark.parametrize(("text", "code", "line", "column"), JSON_ERRORS)
def test_load_json_is_strict(text, code, line, column):
    with pytest.raises(DocumentInvalid) as caught:
        load_json(text, "r.json")
    [issue] = caught.value.issues
    assert (issue.code, issue.line, issue.column) == (code, line, column)


def test_load_json_names_the_duplicate_key():
    with pytest.raises(DocumentInvalid) as caught:
        load_json('{"asset": "A", "asset": "B"}', "r.json")
    assert "duplicate key `asset`" in caught.value.issues[0].message


def requests_of(text: str, name: str, lines: bool | None = None) -> list:
    return list(read_requests([text.encode()], name, lines=lines).documents)


def test_read_requests_jsonl_keeps_going_after_a_bad_line():
    text = '{"a": 1}\n\n{"a": \n{"a": NaN}\n{"a": 3}\n'
    docs = requests_of(text, "in.jsonl", lines=True)
    assert [d.label for d in docs] == ["in.jsonl:1", "in.jsonl:3", "in.jsonl:4", "in.jsonl:5"]
    assert [d.line for d in docs] == [1, 3, 4, 5]
    assert [d.data for d in docs] == [{"a": 1}, None, None, {"a": 3}]
    assert docs[1].issues[0].line == 3  # the line of the file, not of the one-line document
    assert docs[2].issues[0].line == 4


def test_read_requests_guesses_one_document_or_lines():
    assert [d.data for d in requests_of('{\n"a": 1\n}', "stdin")] == [{"a": 1}]
    assert [d.data for d in requests_of('{"a": 1}\n{"a": 2}\n', "stdin")] == [{"a": 1}, {"a": 2}]


def test_read_requests_empty_input():
    [doc] = requests_of("\n\n", "in.jsonl", lines=True)
    assert doc.issues[0].code == "file-empty"
