"""Case files: requests with the decisions a policy must give them (the `protect test` format).

A case file is YAML (schemas/cases.v1.schema.json): a `cases:` list, each case a `name`, a
`request`, optional `policy_overrides` and an `expect` block, plus an optional top-level
`policy:` path relative to the file. It is read like a policy: bounded, every mistake reported
with file, line and column. Running cases is `testing`'s job; this module only reads them.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CasesInvalid, Issue, UsageError
from .loading import DocumentInvalid, Path_, SourceMap, load_yaml, read_text
from .resources import default_policy_path, schema
from .timestamps import parse_instant
from .validation import schema_issues

CASE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class Case:
    """One case: a request, the policy to decide it under, and what its decision must be.

    `policy` is the policy file, resolved (`--policy`, else the file's `policy:`, else the
    shipped default); `policy_overrides`, when not None, is deep-merged into that policy's
    document before it is loaded. `file` and `line` say where the case's `- name:` item is;
    `index` is its position in the file's `cases` list.
    """

    name: str
    file: str
    line: int
    index: int
    request: Any
    expect: Mapping[str, Any]
    policy: Path
    policy_overrides: Mapping[str, Any] | None = None
    # where the overrides are written, so a policy they break is reported at their lines
    overrides_source: SourceMap | None = field(default=None, repr=False, compare=False)

    @property
    def location(self) -> str:
        """`file:line` of the case."""
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class CaseFile:
    """A validated case file: its path, the policy its cases use, and the cases in file order."""

    path: Path
    policy: Path
    cases: tuple[Case, ...]


def load_cases(path: str | Path, *, policy: str | Path | None = None) -> CaseFile:
    """Read and validate a case file; `policy` (the `--policy` option) replaces the file's own.

    Raises `CasesInvalid` carrying every issue found, with file, line and column; a file that
    does not exist is a `UsageError`.
    """
    name = str(path)
    try:
        data, source = load_yaml(read_text(path, name), name)
    except DocumentInvalid as exc:
        raise CasesInvalid(exc.issues) from None
    document = data if isinstance(data, dict) else {}
    listed = document.get("cases")
    # the second pass reads only well-shaped cases: the schema reports the others
    items = [(i, c) for i, c in enumerate(listed) if isinstance(c, dict)] if isinstance(listed, list) else []
    issues = schema_issues("cases", data, source)
    reported = {issue.path for issue in issues}
    issues += _name_issues(items, source) + [i for i in _instant_issues(items, source) if i.path not in reported]
    issues += _protection_issues(items, source)
    if policy is not None:
        policy_path = Path(policy)
    elif isinstance(document.get("policy"), str) and document["policy"]:
        policy_path = Path(os.path.normpath(Path(path).parent / document["policy"]))
        if not policy_path.is_file():
            issues.append(source.issue("case-policy-missing", ("policy",), f"policy file `{policy_path}` does not exist"))
    else:
        policy_path = default_policy_path()
    if issues:
        raise CasesInvalid(sorted(issues, key=lambda i: (i.line or 0, i.column or 0, i.path)))
    cases = tuple(_case(item, index, policy_path, source) for index, item in enumerate(data["cases"]))
    return CaseFile(Path(path), policy_path, cases)


def load_case_files(paths: Iterable[str | Path], *, policy: str | Path | None = None) -> list[CaseFile]:
    """Every case file of `paths` (files, or folders of `*.yaml`), loaded; the issues of every
    invalid file are raised together, as one `CasesInvalid`."""
    loaded, issues = [], []
    for path in find_case_files(paths):
        try:
            loaded.append(load_cases(path, policy=policy))
        except CasesInvalid as exc:
            issues.extend(exc.issues)
    if issues:
        raise CasesInvalid(issues)
    return loaded


def find_case_files(paths: Iterable[str | Path]) -> list[Path]:
    """The case files named: a file as it is, a folder as its `*.yaml` and `*.yml` files
    (not recursive), sorted, each once. A missing path or a folder without any is a `UsageError`."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix in CASE_SUFFIXES and p.is_file())
            if not inside:
                raise UsageError(f"{raw}: no *.yaml case files in this folder")
            found.update(dict.fromkeys(inside))
        elif path.exists():
            found[path] = None
        else:
            raise UsageError(f"{raw}: no such file")
    return list(found)


def _case(item: Mapping[str, Any], index: int, policy: Path, source: SourceMap) -> Case:
    overrides = item.get("policy_overrides")
    line, _ = source.locate(("cases", index))
    return Case(
        name=item["name"],
        file=source.file or "<cases>",
        line=line or 1,
        index=index,
        request=item["request"],
        expect=item["expect"],
        policy=policy,
        policy_overrides=overrides,
        overrides_source=None if overrides is None else _rooted(source, ("cases", index, "policy_overrides")),
    )


def _rooted(source: SourceMap, prefix: Path_) -> SourceMap:
    """`source` seen from `prefix`: paths inside it keep their places; any other path of the
    merged policy falls back to the `policy_overrides:` key itself."""
    rooted = SourceMap(source.file)
    for table, target in ((source.values, rooted.values), (source.keys, rooted.keys)):
        for path, where in table.items():
            if path[: len(prefix)] == prefix:
                target[path[len(prefix) :]] = where
    rooted.values[()] = source.keys.get(prefix, source.values[prefix])
    return rooted


def _name_issues(items: list[tuple[int, dict[str, Any]]], source: SourceMap) -> list[Issue]:
    first: dict[str, int] = {}
    issues = []
    for index, case in items:
        name = case.get("name")
        if not isinstance(name, str):
            continue
        if name in first:
            line, _ = source.locate(("cases", first[name], "name"))
            message = f"case `{name}` is defined twice (first on line {line})"
            issues.append(source.issue("case-duplicate-name", ("cases", index, "name"), message))
        else:
            first[name] = index
    return issues


def _protection_issues(items: list[tuple[int, dict[str, Any]]], source: SourceMap) -> list[Issue]:
    """A protection named in `expect` may be a custom one, known only when the case runs; a
    name close to a built-in's is a misspelling, reported with a did-you-mean."""
    builtins = list(schema("cases")["$defs"]["expect"]["properties"]["statuses"]["properties"])
    issues = []
    for index, case in items:
        expect = case.get("expect") if isinstance(case.get("expect"), dict) else {}
        named: list[tuple[Path_, Any, bool]] = [
            (("cases", index, "expect", field, name), name, True)
            for field in ("statuses", "trace_unblocks_at", "facts")
            if isinstance(expect.get(field), dict)
            for name in expect[field]
        ]
        blocking = expect.get("blocking_systems")
        named += [(("cases", index, "expect", "blocking_systems", i), n, False) for i, n in enumerate(blocking or ())]
        for path, name, key in named:
            match = difflib.get_close_matches(name, builtins, n=1, cutoff=0.6) if isinstance(name, str) else []
            if match and name not in builtins:
                code, what = ("schema-unknown-field", "unknown field") if key else ("schema-enum", "unknown protection")
                issues.append(source.issue(code, path, f"{what} `{name}`; did you mean `{match[0]}`?", key=key))
    return issues


def _instant_issues(items: list[tuple[int, dict[str, Any]]], source: SourceMap) -> list[Issue]:
    """The schema checks an instant's shape; a day or an hour out of range shows only when parsed."""
    found: list[tuple[Path_, Any]] = []
    for index, case in items:
        expect = case.get("expect")
        if not isinstance(expect, dict):
            continue
        if "unblocks_at" in expect:
            found.append((("cases", index, "expect", "unblocks_at"), expect["unblocks_at"]))
        per_system = expect.get("trace_unblocks_at")
        for system, value in per_system.items() if isinstance(per_system, dict) else ():
            found.append((("cases", index, "expect", "trace_unblocks_at", system), value))
    issues = []
    for place, value in found:
        if not isinstance(value, str):
            continue
        try:
            parse_instant(value)
        except ValueError as exc:
            issues.append(source.issue("timestamp-invalid", place, str(exc)))
    return issues
