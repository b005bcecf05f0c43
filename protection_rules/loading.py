"""Read policy YAML and request JSON into plain data, with a source map for line numbers.

Everything here fails closed with an `Issue` naming the file, path, line and column: a
traceback from a parser never reaches a user.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import Issue
from .reading import (
    MAX_DOCUMENT_BYTES,
    STDIN,
    DocumentInvalid,
    Line,
    display_name,
    opened,
    read_limited,
    split_lines,
)

Path_ = tuple[str | int, ...]

# No score, size or count is anywhere near this; beyond it, float arithmetic stops being exact.
MAX_MAGNITUDE = 1e15


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


def read_text(path: str | Path, display: str | None = None) -> str:
    """Read a document (`-`: standard input) as UTF-8, reading at most the limit plus one chunk.

    A missing file is a `UsageError`; an oversized, binary or non-UTF-8 one is `DocumentInvalid`.
    """
    name = display or display_name(path)
    with opened(path) as chunks:
        raw, complete = read_limited(chunks, MAX_DOCUMENT_BYTES)
    if not complete:
        raise DocumentInvalid([too_large(name)])
    return decode(raw, name)


def too_large(name: str) -> Issue:
    return Issue("file-too-large", "$", f"more than {MAX_DOCUMENT_BYTES} bytes, the limit for one document", name)


def decode(raw: bytes, name: str, *, line: int = 1) -> str:
    """UTF-8 text of `raw`, which starts on `line` of its input; a NUL byte is refused too."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = line + raw.count(b"\n", 0, exc.start), exc.start - raw.rfind(b"\n", 0, exc.start)
        raise DocumentInvalid(
            [Issue("file-encoding", "$", f"not valid UTF-8 (byte `0x{raw[exc.start]:02x}`)", name, *where)]
        ) from None
    nul = text.find("\x00")
    if nul >= 0:
        where = line + text.count("\n", 0, nul), nul - text.rfind("\n", 0, nul)
        raise DocumentInvalid([Issue("file-encoding", "$", "contains a NUL byte; is it binary?", name, *where)])
    return text.removeprefix("\ufeff") if line == 1 else text


# --------------------------------------------------------------------------------------- YAML


def load_yaml(text: str, name: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document into plain data plus a `SourceMap`."""
    if not text.strip() or all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()):
        raise DocumentInvalid([Issue("file-empty", "$", "the file is empty", name, 1, 1)])
    tabs = _tab_indentation(text, name)
    if tabs:
        raise DocumentInvalid(tabs)
    try:
        nodes, starts = _compose(text, name)
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


# libyaml, when PyYAML was built with it: it parses the default policy in ~1 ms where the
# pure-Python parser takes ~7 ms (~12 ms of a cold `protect evaluate`, in instructions). The two
# differ at the edges: libyaml takes a tab after a token, `|#...` (a block scalar, the rest a
# comment) and `{a: b ?}`, which the pure-Python parser refuses, and gives an empty plain value
# another line and column. So libyaml reads only documents without tabs, `?`, `!`, `%`, `&`,
# `*`, a CR, NEL, LS, PS or BOM character, or `|`/`>` before a `#`, and without an empty plain
# value; every other document, and whatever libyaml refuses, is read by the pure-Python parser,
# which writes the messages and finds the depth limit as it always has. tests/test_loading.py
# holds the two to the same data, source map and issues.
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)
# (the characters past Latin-1 as literals: in a class they cost ~0.3 ms to compile)
_NOT_FOR_LIBYAML = re.compile(r"[\t?!%&*\r\x85]|\u2028|\u2029|\ufeff|[|>][-+0-9]*#")


class _Unalike(Exception):
    """The document holds something libyaml reads otherwise than the pure-Python parser."""


def _compose(text: str, name: str) -> tuple[list[Node], list[int]]:
    """The nodes of every document in `text`, and the line each starts on; aliases refused."""
    if _FAST_LOADER is not None and not _NOT_FOR_LIBYAML.search(text):
        try:
            return _compose_with(_FAST_LOADER, text, name)
        except DocumentInvalid:
            raise
        except Exception:  # _Unalike, or anything libyaml refuses: the parser below says what is wrong
            pass
    return _compose_with(yaml.SafeLoader, text, name)


def _compose_with(loader: type, text: str, name: str) -> tuple[list[Node], list[int]]:
    aliases, starts = _scan(text, name, loader)
    if aliases:
        raise DocumentInvalid(aliases)
    return list(yaml.compose_all(text, Loader=loader)), starts


def _scan(text: str, name: str, loader: type) -> tuple[list[Issue], list[int]]:
    """One pass over the parse events: every alias, and the line each document starts on.

    Aliases are refused outright: a policy is reviewed as text, and an alias chain can expand
    a small file into gigabytes ("billion laughs").
    """
    aliases, starts = [], []
    for event in yaml.parse(text, Loader=loader):
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
        elif loader is _FAST_LOADER and isinstance(event, yaml.ScalarEvent) and not event.value and not event.style:
            raise _Unalike("an empty plain scalar")
    return aliases, starts


_CONSTRUCTOR = yaml.SafeLoader.__new__(yaml.SafeLoader)
yaml.constructor.SafeConstructor.__init__(_CONSTRUCTOR)
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_SCALAR_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")}
_MAP_TAG, _SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_NEEDS_TEXT = {f"tag:yaml.org,2002:{t}" for t in ("int", "float", "bool")}


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
            if _has_surrogate(key):
                issues.append(_at(key_node, "yaml-value", path, _SURROGATE, source))
                continue
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
    if not node.value and node.tag in _NEEDS_TEXT:  # PyYAML fails on these with IndexError/KeyError
        tag = node.tag.rsplit(":", 1)[-1]
        issues.append(_at(node, "yaml-value", path, f"`!!{tag}` with no value; write the value or drop the tag", source))
        return None
    try:
        value = _CONSTRUCTOR.construct_object(node)
    except (yaml.YAMLError, ValueError) as exc:
        if node.tag == "tag:yaml.org,2002:int":  # more digits than Python converts
            issues.append(_at(node, "yaml-value", path, too_many_digits(node.value), source))
        else:
            issues.append(_at(node, "yaml-value", path, f"cannot read `{node.value[:40]}`: {str(exc).splitlines()[0]}", source))
        return None
    if isinstance(value, float) and not math.isfinite(value):
        issues.append(_at(node, "yaml-non-finite", path, f"`{node.value}` is not a finite number", source))
    if isinstance(value, str) and _has_surrogate(value):
        issues.append(_at(node, "yaml-value", path, _SURROGATE, source))
        return None
    return value


# An escape such as "\ud83d" makes half a character, which no UTF-8 output (a message, a hash)
# can hold.
_SURROGATE = "an escaped surrogate (`\\ud800`-`\\udfff`) is not a character; write the character itself"


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


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


class _TooLarge:
    """Stands for a number literal too large to hold; `load_json` reports it with its path."""

    __slots__ = ("message",)

    def __init__(self, message: str):
        self.message = message


class _Overflow(Exception):
    """A float literal beyond what a float holds: parsing stops, to be redone slowly."""


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _Overflow
    return value


def _marked_float(literal: str) -> Any:
    value = float(literal)
    if math.isfinite(value):
        return value
    limit = f"{MAX_MAGNITUDE:.0e}".replace("e+", "e")  # 1e15, as a user would write it
    return _TooLarge(f"`{literal}` is too large: numbers must be within +/-{limit}")


def _marked_int(literal: str) -> Any:
    try:
        return int(literal)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        return _TooLarge(too_many_digits(literal))


def too_many_digits(literal: str) -> str:
    return f"an integer of {sum(c.isdigit() for c in literal)} digits is too large"


def _too_large(data: Any, path: Path_ = ()) -> list[tuple[Path_, str]]:
    if isinstance(data, _TooLarge):
        return [(path, data.message)]
    if isinstance(data, dict):
        return [found for key, value in data.items() for found in _too_large(value, path + (key,))]
    if isinstance(data, list):
        return [found for index, value in enumerate(data) for found in _too_large(value, path + (index,))]
    return []


class NestedTooDeeply(DocumentInvalid):
    """JSON nested deeper than the parser goes (the service answers it as a body over its bounds)."""


def load_json(text: str, name: str, *, line: int | None = None) -> Any:
    """Parse JSON strictly: no NaN or Infinity, no duplicate keys, no number too large to hold;
    errors carry line and column. `line` is where `text` starts in its input (JSON Lines)."""
    try:
        data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_object, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        at = exc.lineno + (line - 1 if line else 0)
        raise DocumentInvalid([Issue("json-syntax", "$", f"json: {exc.msg.lower()}", name, at, exc.colno)]) from None
    except (_Overflow, ValueError) as exc:
        # a number too large (a float overflowing, an integer of thousands of digits) or
        # another mistake: parse again, marking such numbers, to report each at its path
        too_large = _numbers_too_large(text)
        if too_large:
            raise DocumentInvalid([Issue("number-too-large", json_path(p), m, name, line) for p, m in too_large]) from None
        raise DocumentInvalid([Issue("json-syntax", "$", f"json: {exc}", name, line)]) from None
    except RecursionError:
        raise NestedTooDeeply([Issue("json-syntax", "$", "json: nested too deeply", name, line)]) from None
    # only an escape can make half a character: a text without one is walked no further
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        halves = list(_surrogate_paths(data))
        if halves:
            raise DocumentInvalid([Issue("json-value", json_path(p), _SURROGATE, name, line) for p in halves])
    return data


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _surrogate_paths(data: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Where a key or a text holds an escaped surrogate that did not pair up into a character."""
    if isinstance(data, str):
        if _has_surrogate(data):
            yield path
    elif isinstance(data, dict):
        for key, value in data.items():
            if _has_surrogate(key):
                yield path  # the object holding the key: the key itself cannot be shown
            else:
                yield from _surrogate_paths(value, path + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _surrogate_paths(value, path + (index,))


def _numbers_too_large(text: str) -> list[tuple[Path_, str]]:
    try:
        data = json.loads(
            text,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_object,
            parse_float=_marked_float,
            parse_int=_marked_int,
        )
    except (ValueError, RecursionError):
        return []
    return _too_large(data)


# ------------------------------------------------------------------------------ request input

# How much of an unparsable request the audit trail keeps
_RAW_KEPT = 100_000


@dataclass(frozen=True, slots=True)
class RequestDocument:
    """One request read from a file or stream: its data, or why it could not be parsed.

    `line` is its line number in JSON Lines input (None for a single document).
    """

    label: str
    data: Any = None
    issues: tuple[Issue, ...] = ()
    raw: str | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class RequestInput:
    """The requests of one input: one JSON document, or JSON Lines read lazily, line by line."""

    name: str
    lines: bool
    documents: Iterator[RequestDocument]


def lines_by_name(path: str | Path) -> bool | None:
    """JSON Lines for a `.jsonl` file, one document for any other file; stdin (`-`) is guessed."""
    return None if str(path) == STDIN else Path(path).suffix.lower() == ".jsonl"


@contextmanager
def open_requests(path: str | Path, *, lines: bool | None = None) -> Iterator[RequestInput]:
    """Open a file (or `-`, standard input) of requests; see `read_requests` for `lines`."""
    with opened(path) as chunks:
        yield read_requests(chunks, display_name(path), lines=lines)


def read_requests(chunks: Iterable[bytes], name: str, *, lines: bool | None = None) -> RequestInput:
    """Read `.json` (`lines=False`: one document) or `.jsonl` (`lines=True`: one per line).

    JSON Lines are read lazily with the document limit per line, never for the whole input:
    every non-blank line becomes one document (blank lines are skipped; numbering counts them),
    and a bad line becomes a document with issues, so one broken line never stops a batch.
    `lines=None` guesses, for standard input: one JSON document when the whole input is one;
    otherwise JSON Lines. An input over the document limit is JSON Lines only when its first
    non-blank line is a JSON value by itself; else it is one document, too large.
    """
    source = iter(chunks)
    if lines:
        return RequestInput(name, True, _line_documents(source, name))
    try:
        head, complete = read_limited(source, MAX_DOCUMENT_BYTES)
    except DocumentInvalid as exc:
        return RequestInput(name, False, iter([RequestDocument(name, issues=tuple(exc.issues))]))
    document = _document(head, complete, name)
    if lines is False or not document.issues:
        return RequestInput(name, False, iter([document]))
    if complete:
        return RequestInput(name, True, _line_documents(iter([head]), name))
    if _first_line_is_json(head, name):
        return RequestInput(name, True, _line_documents(chain([head], source), name))
    neither = f"{too_large(name).message}, and not JSON Lines (its first line is not a JSON value by itself)"
    return RequestInput(name, False, iter([RequestDocument(name, issues=(Issue("file-too-large", "$", neither, name),))]))


def _document(raw: bytes, complete: bool, name: str) -> RequestDocument:
    if not complete:
        return RequestDocument(name, issues=(too_large(name),))
    try:
        return RequestDocument(name, load_json(decode(raw, name), name))
    except DocumentInvalid as exc:
        return RequestDocument(name, issues=tuple(exc.issues), raw=_kept(raw))


def _first_line_is_json(head: bytes, name: str) -> bool:
    for raw in head.split(b"\n")[:-1]:  # the complete lines
        if _blank(raw):
            continue
        try:
            load_json(decode(raw, name), name)
        except DocumentInvalid:
            return False
        return True
    return False


def _blank(raw: bytes) -> bool:
    return not raw.strip(b" \t\r")


def _line_documents(chunks: Iterator[bytes], name: str) -> Iterator[RequestDocument]:
    found = False
    try:
        for line in split_lines(chunks, MAX_DOCUMENT_BYTES):
            if line.size <= MAX_DOCUMENT_BYTES and _blank(line.data):
                continue
            found = True
            yield _line_document(line, name)
    except DocumentInvalid as exc:  # the input failed part way: that is the last document
        found = True
        yield RequestDocument(name, issues=tuple(exc.issues))
    if not found:
        yield RequestDocument(name, issues=(Issue("file-empty", "$", "no requests in the input", name),))


def _line_document(line: Line, name: str) -> RequestDocument:
    label = f"{name}:{line.number}"
    if not line.ended:
        issues = [
            Issue(
                "input-truncated",
                "$",
                f"line is over the limit of {MAX_DOCUMENT_BYTES} bytes and has not ended after {line.size} bytes:"
                " the rest of the input is not read",
                name,
                line.number,
            )
        ]
    elif line.size > MAX_DOCUMENT_BYTES:
        issues = [
            Issue(
                "line-too-large",
                "$",
                f"line is {line.size} bytes, the limit for one request is {MAX_DOCUMENT_BYTES}",
                name,
                line.number,
            )
        ]
    else:
        try:
            return RequestDocument(
                label, load_json(decode(line.data, name, line=line.number), name, line=line.number), line=line.number
            )
        except DocumentInvalid as exc:
            issues = exc.issues
    return RequestDocument(label, issues=tuple(issues), raw=_kept(line.data), line=line.number)


def _kept(raw: bytes) -> str:
    return raw[:_RAW_KEPT].decode("utf-8", "backslashreplace")
