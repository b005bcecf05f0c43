"""Read policy YAML and request JSON into plain data, with a source map for line numbers.

Everything here fails closed with an `Issue` naming the file, path, line and column: a
traceback from a parser never reaches a user.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import Issue

Path_ = tuple[str | int, ...]

MAX_DOCUMENT_BYTES = 1_000_000


def json_path(path: Path_) -> str:
    """`("protections", "grace_period", "days")` -> `$.protections.grace_period.days`."""
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


@dataclass
class SourceMap:
    """Where each value (and each mapping key) of a document starts, 1-based."""

    file: str | None
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path_, *, key: bool = False) -> tuple[int | None, int | None]:
        """The line and column of `path`, or of its nearest mapped ancestor."""
        table = self.keys if key else self.values
        probe = tuple(path)
        if probe in table:
            return table[probe]
        while probe:
            probe = probe[:-1]
            if probe in self.values:
                return self.values[probe]
        return (None, None)

    def issue(self, code: str, path: Path_, message: str, *, key: bool = False) -> Issue:
        line, column = self.locate(path, key=key)
        return Issue(code, json_path(path), message, self.file, line, column)


class DocumentInvalid(Exception):
    """Raised by the readers below; carries the issues found so far."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        super().__init__("; ".join(str(i) for i in issues))


def read_text(path: str | Path, display: str | None = None) -> str:
    """Read a file as UTF-8, refusing missing, oversized, binary and non-UTF-8 files."""
    name = display or str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DocumentInvalid([Issue("file-not-found", "$", "no such file", name)]) from None
    except IsADirectoryError:
        raise DocumentInvalid([Issue("file-unreadable", "$", "is a directory, not a file", name)]) from None
    except OSError as exc:
        raise DocumentInvalid([Issue("file-unreadable", "$", f"cannot read: {exc.strerror}", name)]) from None
    return decode(raw, name)


def decode(raw: bytes, name: str) -> str:
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise DocumentInvalid(
            [Issue("file-too-large", "$", f"file is {len(raw)} bytes, the limit is {MAX_DOCUMENT_BYTES}", name)]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DocumentInvalid(
            [Issue("file-encoding", "$", f"not valid UTF-8 (byte `0x{raw[exc.start]:02x}`)", name, line, column)]
        ) from None
    if "\x00" in text:
        raise DocumentInvalid([Issue("file-encoding", "$", "file contains NUL bytes; is it binary?", name)])
    return text.removeprefix("\ufeff")


# --------------------------------------------------------------------------------------- YAML


def load_yaml(text: str, name: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document into plain data plus a `SourceMap`."""
    if not text.strip() or all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()):
        raise DocumentInvalid([Issue("file-empty", "$", "the file is empty", name, 1, 1)])
    tabs = _tab_indentation(text, name)
    if tabs:
        raise DocumentInvalid(tabs)
    try:
        aliases, starts = _scan(text, name)
        if aliases:
            raise DocumentInvalid(aliases)
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = exc.problem or exc.context or "syntax error"
        raise DocumentInvalid([Issue("yaml-syntax", "$", f"yaml: {problem}", name, line, column)]) from None
    except yaml.YAMLError as exc:
        raise DocumentInvalid([Issue("yaml-syntax", "$", f"yaml: {exc}", name)]) from None
    except RecursionError:
        raise DocumentInvalid([Issue("yaml-syntax", "$", "yaml: nested too deeply", name)]) from None
    if len(nodes) != 1:
        line = starts[1] if len(starts) > 1 else 1
        raise DocumentInvalid([Issue("yaml-multiple-documents", "$", "expected one YAML document, found several", name, line, 1)])
    source = SourceMap(name)
    issues: list[Issue] = []
    try:
        data = _build(nodes[0], (), source, issues)
    except RecursionError:
        raise DocumentInvalid([Issue("yaml-syntax", "$", "yaml: nested too deeply", name)]) from None
    if issues:
        raise DocumentInvalid(issues)
    return data, source


def _tab_indentation(text: str, name: str) -> list[Issue]:
    issues = []
    for number, line in enumerate(text.splitlines(), start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            issues.append(
                Issue("yaml-tab", "$", "tab used for indentation; YAML indents with spaces", name, number, indent.index("\t") + 1)
            )
    return issues


def _scan(text: str, name: str) -> tuple[list[Issue], list[int]]:
    """One pass over the parse events: every alias, and the line each document starts on.

    Aliases are refused outright: a policy is reviewed as text, and an alias chain can expand
    a small file into gigabytes ("billion laughs").
    """
    aliases, starts = [], []
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            aliases.append(
                Issue(
                    "yaml-alias",
                    "$",
                    "anchors and aliases are not allowed; write the value out",
                    name,
                    event.start_mark.line + 1,
                    event.start_mark.column + 1,
                )
            )
        elif isinstance(event, yaml.DocumentStartEvent):
            starts.append(event.start_mark.line + 1)
    return aliases, starts


_CONSTRUCTOR = yaml.SafeLoader.__new__(yaml.SafeLoader)
yaml.constructor.SafeConstructor.__init__(_CONSTRUCTOR)
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_SCALAR_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")}
_MAP_TAG, _SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


def _build(node: Node, path: Path_, source: SourceMap, issues: list[Issue]) -> Any:
    source.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    allowed = {MappingNode: {_MAP_TAG}, SequenceNode: {_SEQ_TAG}}.get(type(node), _SCALAR_TAGS | {_TIMESTAMP_TAG})
    if node.tag not in allowed:
        issues.append(_at(node, "yaml-tag", path, f"YAML tag `{node.tag}` is not allowed; write a plain value", source))
        return None
    if isinstance(node, MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                issues.append(_at(key_node, "yaml-key", path, "mapping keys must be plain names", source))
                continue
            key = key_node.value
            child = path + (key,)
            if key in result:
                first = source.keys[child]
                issues.append(
                    _at(
                        key_node, "yaml-duplicate-key", child, f"duplicate key `{key}` (first defined on line {first[0]})", source
                    )
                )
                continue
            source.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = _build(value_node, child, source, issues)
        return result
    if isinstance(node, SequenceNode):
        return [_build(item, path + (index,), source, issues) for index, item in enumerate(node.value)]
    if node.tag == _TIMESTAMP_TAG:
        return node.value  # keep dates as text: the schemas decide what a date may be
    try:
        value = _CONSTRUCTOR.construct_object(node)
    except (yaml.YAMLError, ValueError) as exc:  # e.g. an integer longer than Python converts
        issues.append(_at(node, "yaml-value", path, f"cannot read `{node.value[:40]}`: {str(exc).splitlines()[0]}", source))
        return None
    if isinstance(value, float) and not math.isfinite(value):
        issues.append(_at(node, "yaml-non-finite", path, f"`{node.value}` is not a finite number", source))
    return value


def _at(node: Node, code: str, path: Path_, message: str, source: SourceMap) -> Issue:
    return Issue(code, json_path(path), message, source.file, node.start_mark.line + 1, node.start_mark.column + 1)


# --------------------------------------------------------------------------------------- JSON


def _reject_constant(name: str) -> Any:
    raise ValueError(f"`{name}` is not a valid JSON number")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key `{key}`")
        result[key] = value
    return result


def load_json(text: str, name: str, *, line_offset: int = 0) -> Any:
    """Parse JSON strictly: no NaN or Infinity, no duplicate keys; errors carry line and column."""
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_object)
    except json.JSONDecodeError as exc:
        raise DocumentInvalid(
            [Issue("json-syntax", "$", f"json: {exc.msg.lower()}", name, exc.lineno + line_offset, exc.colno)]
        ) from None
    except ValueError as exc:
        raise DocumentInvalid(
            [Issue("json-syntax", "$", f"json: {exc}", name, line_offset + 1 if line_offset else None)]
        ) from None
    except RecursionError:
        raise DocumentInvalid([Issue("json-syntax", "$", "json: nested too deeply", name)]) from None


# ------------------------------------------------------------------------------ request input


@dataclass(frozen=True, slots=True)
class RequestDocument:
    """One request read from a file or stream: its data, or why it could not be parsed."""

    label: str
    data: Any = None
    issues: tuple[Issue, ...] = ()
    raw: str | None = None


def read_requests(text: str, name: str, *, lines: bool | None = None) -> list[RequestDocument]:
    """Split `.json` (one request) or `.jsonl` (one per line) input into documents.

    `lines=None` guesses, for standard input: a text that parses as one JSON value is one
    request, anything else is read line by line. A bad line becomes a document with issues,
    so one broken line never stops a batch.
    """
    if lines is None:
        try:
            return [RequestDocument(name, load_json(text, name))]
        except DocumentInvalid:
            lines = True
    if not lines:
        try:
            return [RequestDocument(name, load_json(text, name))]
        except DocumentInvalid as exc:
            return [RequestDocument(name, issues=tuple(exc.issues), raw=text[:100_000])]
    documents = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        label = f"{name}:{number}"
        try:
            documents.append(RequestDocument(label, load_json(line, name, line_offset=number - 1)))
        except DocumentInvalid as exc:
            documents.append(RequestDocument(label, issues=tuple(exc.issues), raw=line[:100_000]))
    if not documents:
        documents.append(RequestDocument(name, issues=(Issue("file-empty", "$", "no requests in the input", name),)))
    return documents
