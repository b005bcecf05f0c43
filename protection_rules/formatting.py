"""The canonical layout of a policy file (`protect fmt`): comments kept, content unchanged.

Only a valid policy is formatted. The text is written anew from the validated data, so every
value means what the loader read (YAML 1.1, like `policy.py`), and comments are carried over
by position: a comment on its own line stays above the key or list item that follows it, a
comment after a value stays at the end of that value's line. The result is checked before it
is returned: it must validate, hash to the same sha256 and hold the same comments.

The layout (README, "The canonical layout"): keys in the schema's order, protections in hierarchy order
(then any left out of it, in the schema's order); two-space indent; the hierarchy one name per
line, every other list in flow style (`blocks: [close, decrease]`), except the conditions of a
custom protection's `when`: each `all`/`any` item on a line of its own, each test in flow style
(`- {fact: target_size, gt: 0.1}`); one blank line before `hierarchy`, `protections` and `alerts`
and between protection blocks, none anywhere else;
strings quoted only where a plain scalar would read differently; no document markers; a final
newline.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import stat
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import PolicyInvalid, Refused, WriteError, os_reason
from .loading import Path_, SourceMap, read_text
from .policy import Policy, parse_policy, read_policy_text
from .reading import DocumentInvalid
from .resources import schema

INDENT = "  "
# Top-level keys that open a section after the head (apiVersion, kind, metadata): a blank line
# goes before each.
SECTIONS = ("hierarchy", "protections", "alerts")


@dataclass(frozen=True, slots=True)
class Formatted:
    """A policy file and its canonical text; `sha256` is the same for both."""

    name: str
    original: str
    text: str
    sha256: str

    @property
    def changed(self) -> bool:
        return self.text != self.original

    def diff(self) -> str:
        """A unified diff from the file to its canonical text (empty when unchanged)."""
        return "".join(
            difflib.unified_diff(
                self.original.splitlines(keepends=True),
                self.text.splitlines(keepends=True),
                fromfile=self.name,
                tofile=f"{self.name} (formatted)",
            )
        )


def format_policies(paths: Iterable[str | Path]) -> list[Formatted]:
    """Format every file; when any is invalid, raise `PolicyInvalid` with the issues of all of them."""
    results, issues = [], []
    for path in paths:
        try:
            results.append(format_policy(path))
        except PolicyInvalid as exc:
            issues.extend(exc.issues)
    if issues:
        raise PolicyInvalid(issues)
    return results


def format_policy(path: str | Path) -> Formatted:
    return format_text(*read_policy_text(path))


def format_text(text: str, name: str) -> Formatted:
    """The canonical layout of a policy's text. Raises `PolicyInvalid` for an invalid policy and
    `Refused` if the layout would change its content or lose a comment (a bug: never written)."""
    policy = parse_policy(text, name)
    comments = scan_comments(text)
    formatted = _Writer(policy, _anchored(comments, policy.source_map)).write()
    _check(policy, comments, formatted, name)
    return Formatted(name, text, formatted, policy.sha256)


def write_formatted(path: str | Path, result: Formatted) -> None:
    """Replace the file with its canonical text, atomically (a temporary file renamed over it),
    keeping its permissions; refused if the file changed since it was read."""
    target = Path(os.path.realpath(path))
    try:
        if read_text(target, result.name) != result.original:
            raise Refused(f"{result.name}: the file changed while it was formatted; it is left as it is")
        mode = stat.S_IMODE(target.stat().st_mode)
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except (OSError, DocumentInvalid) as exc:
        raise WriteError(f"{result.name}: cannot write: {os_reason(exc)}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(result.text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise WriteError(f"{result.name}: cannot write: {os_reason(exc)}") from None


def _check(policy: Policy, comments: list[Comment], formatted: str, name: str) -> None:
    try:
        after = parse_policy(formatted, name).sha256
    except PolicyInvalid as exc:
        raise Refused(f"{name}: the canonical layout does not validate ({exc}); the file is left as it is") from None
    if after != policy.sha256:
        raise Refused(f"{name}: the canonical layout would change the policy's sha256 ({policy.sha256[:12]} -> {after[:12]})")
    if Counter(c.text for c in scan_comments(formatted)) != Counter(c.text for c in comments):
        raise Refused(f"{name}: the canonical layout would lose a comment; the file is left as it is")


# ------------------------------------------------------------------------------------ comments


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment, from `#` to the end of its line (trailing spaces dropped), 1-based position."""

    line: int
    column: int
    text: str
    own_line: bool


# A line break as PyYAML counts lines (its marks place the keys comments are anchored to): a
# lone CR, NEL, LS and PS end a line too, and a comment, not only LF
_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def scan_comments(text: str) -> list[Comment]:
    """Every comment of a YAML text. The scanner skips only spaces, line breaks and comments
    between tokens, so every `#` in a gap between two tokens starts a comment."""
    found: list[Comment] = []
    end = 0
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        start = token.start_mark.index
        at = text.find("#", end, start)
        while at >= 0:
            after = _BREAK.search(text, at, start)
            stop = after.start() if after else start
            breaks = list(_BREAK.finditer(text, 0, at))
            line_start = breaks[-1].end() if breaks else 0
            found.append(
                Comment(
                    line=len(breaks) + 1,
                    column=at - line_start + 1,
                    text=text[at:stop].rstrip(),
                    own_line=not text[line_start:at].strip(),
                )
            )
            at = text.find("#", stop, start)
        end = max(end, token.end_mark.index)
    return found


@dataclass
class _Anchored:
    """The comments of a policy by the output line they belong to (a key's or a list item's path)."""

    header: list[str] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)
    leading: dict[Path_, list[str]] = field(default_factory=dict)
    trailing: dict[Path_, list[str]] = field(default_factory=dict)


def _anchored(comments: list[Comment], source: SourceMap) -> _Anchored:
    # Lines of output start at mapping keys and at items of the hierarchy; an item of any
    # other list is written on its key's line, in flow style.
    starts = sorted(
        [(at, path) for path, at in source.keys.items()] + [(at, path) for path, at in source.values.items() if _own_line(path)]
    )
    first = starts[0][1] if starts else None
    result = _Anchored()
    for comment in comments:
        where = (comment.line, comment.column)
        if comment.own_line:
            following = [path for at, path in starts if at > where]
            if not following:
                result.footer.append(comment.text)
            elif following[0] == first:
                result.header.append(comment.text)
            else:
                result.leading.setdefault(following[0], []).append(comment.text)
        else:
            # the first line started on the comment's line (`hierarchy: [...]  # x` is about
            # the hierarchy), else the last one started before it (a continued flow list)
            same = [path for (line, _), path in starts if line == comment.line]
            preceding = [path for at, path in starts if at < where]
            if same or preceding:
                result.trailing.setdefault((same or preceding[-1:])[0], []).append(comment.text)
            else:
                result.header.append(comment.text)
    return result


def _own_line(path: Path_) -> bool:
    """A list item written on a line of its own: a hierarchy entry, a condition under `all`/`any`."""
    if path[:1] == ("hierarchy",) and len(path) == 2:
        return True
    return len(path) > 4 and path[2] == "when" and isinstance(path[-1], int) and path[-2] in ("all", "any")


# ------------------------------------------------------------------------------------- writing


class _Writer:
    def __init__(self, policy: Policy, comments: _Anchored):
        self.policy = policy
        self.comments = comments
        self.lines: list[str] = list(comments.header)
        self.root = schema("policy")

    def write(self) -> str:
        self._mapping(self.policy.document, self.root, (), 0)
        if self.comments.footer:
            self.lines += ["", *self.comments.footer]
        return "\n".join(self.lines) + "\n"

    def _line(self, paths: tuple[Path_, ...], indent: int, text: str, *, blank_before: bool = False, inner: bool = False) -> None:
        """One output line for `paths` (with `inner`, also everything inside them, written on
        this line in flow style), with their comments: trailing ones at its end (one; any more
        go above it, as do leading ones)."""
        leading: list[str] = []
        trailing: list[str] = []
        for anchors, out in ((self.comments.leading, leading), (self.comments.trailing, trailing)):
            for path in paths:
                out += anchors.get(path, [])
            if inner:
                out += [c for key, found in anchors.items() if _inside(key, paths) for c in found]
        leading += trailing[1:]
        if blank_before:
            self.lines.append("")
        self.lines += [" " * indent + comment for comment in leading]
        self.lines.append(" " * indent + text + (f"  {trailing[0]}" if trailing else ""))

    def _mapping(self, data: Mapping[str, Any], node: Mapping[str, Any], path: Path_, depth: int) -> None:
        properties = node.get("properties", {})
        indent = len(INDENT) * depth
        for index, key in enumerate(self._order(data, properties, path)):
            value, child = data[key], path + (key,)
            blank = (path == () and key in SECTIONS) or (path == ("protections",) and index > 0)
            if child[:1] == ("protections",) and child[2:] == ("when",):
                self._condition(f"{key}:", value, child, indent, blank)
            elif isinstance(value, dict):
                self._line((child,), indent, f"{key}:", blank_before=blank)
                self._mapping(value, self._schema_of(node, key), child, depth + 1)
            elif isinstance(value, list) and child == ("hierarchy",):
                self._line((child,), indent, f"{key}:", blank_before=blank)
                for position, item in enumerate(value):
                    self._line((child + (position,),), indent + len(INDENT), f"- {scalar(item)}")
            elif isinstance(value, list):
                self._line((child,), indent, f"{key}: {_flow(value)}", blank_before=blank)
            else:
                self._line((child,), indent, f"{key}: {scalar(value)}", blank_before=blank)

    def _condition(self, prefix: str, node: Mapping[str, Any], path: Path_, column: int, blank: bool = False) -> None:
        """A condition after `prefix` (`when:`, `not:`, `- ` for an item of `all`/`any`,
        `- not:`) written at `column`: a test on the same line, a group below it."""
        if "fact" in node:
            self._line((path,), column, f"{prefix} {_flow(node)}", blank_before=blank, inner=True)
            return
        [word] = [key for key in ("all", "any", "not") if key in node]
        inner = path + (word,)
        if prefix == "-":  # `- all:`, `- not: ...`: the group starts on the item's line
            head, at = "- ", column
        else:
            self._line((path,), column, prefix, blank_before=blank)
            head, at = "", column + (2 if prefix.startswith("-") else 0) + len(INDENT)
        if word == "not":
            self._condition(f"{head}not:", node["not"], inner, at)
            return
        self._line((path, inner) if head else (inner,), at, f"{head}{word}:")
        for position, item in enumerate(node[word]):
            self._condition("-", item, inner + (position,), at + len(head) + len(INDENT))

    def _schema_of(self, node: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        """The schema of `key` in an object of schema `node` (custom protections by `$ref`)."""
        child = node.get("properties", {}).get(key, node.get("additionalProperties"))
        if isinstance(child, dict) and "$ref" in child:
            return self.root["$defs"][child["$ref"].rsplit("/", 1)[1]]
        return child if isinstance(child, dict) else {}

    def _order(self, data: Mapping[str, Any], properties: Mapping[str, Any], path: Path_) -> list[str]:
        known = list(properties)
        if path == ("protections",):
            hierarchy = [name for name in self.policy.hierarchy if name in data]
            known = hierarchy + [name for name in known if name not in hierarchy]
        return sorted(data, key=lambda key: (known.index(key) if key in known else len(known), key))


def _inside(path: Path_, paths: tuple[Path_, ...]) -> bool:
    return any(len(path) > len(outer) and path[: len(outer)] == outer for outer in paths)


def _flow(value: Any) -> str:
    """A list or a test in flow style: `[close, decrease]`, `{fact: asset, in: [SPY, QQQ]}`."""
    if isinstance(value, list):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: key != "fact")  # the fact first, then its operator
        return "{" + ", ".join(f"{key}: {_flow(value[key])}" for key in keys) + "}"
    return scalar(value, flow=True)


# -------------------------------------------------------------------------------------- scalars


def scalar(value: Any, *, flow: bool = False) -> str:
    """A YAML 1.1 scalar that reads back as `value` (type included): plain where that is exact."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    return value if _plain_ok(value, flow) else _quoted(value)


def _float(value: float) -> str:
    if not math.isfinite(value):  # validation refuses these; never written as something else
        raise ValueError(f"cannot write `{value}`")
    text = repr(value)
    mantissa, _, exponent = text.partition("e")
    # YAML 1.1 reads a float only with a dot in it (`1e-05` would be a string)
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{exponent}" if exponent else mantissa


def _plain_ok(text: str, flow: bool) -> bool:
    if not text or "\n" in text or not all(_printable(c) for c in text):
        return False
    if flow and any(c in text for c in ",[]{}"):
        return False
    try:
        return yaml.safe_load(f"key: {text}\n") == {"key": text}
    except yaml.YAMLError:
        return False


def _printable(char: str) -> bool:
    code = ord(char)
    return 0x20 <= code <= 0x7E or (0xA0 <= code <= 0xD7FF) or (0xE000 <= code <= 0xFFFD and code != 0xFEFF) or code >= 0x10000


def _quoted(text: str) -> str:
    if all(_printable(c) for c in text):
        return "'" + text.replace("'", "''") + "'"
    out = []
    for char in text:
        code = ord(char)
        if char in '\\"':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif _printable(char):
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'
