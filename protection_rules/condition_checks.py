"""The semantic pass over custom protections (`type: condition`): conditions and reason templates.

The JSON Schema gives their shape to any validator; this pass replaces its findings inside
`when` with sharper ones, each with a stable code at the line and column of the mistake:

| code | what |
|---|---|
| `condition-shape` | a condition that is not exactly one of `all`, `any`, `not`, or `fact` with one operator; nested too deeply |
| `condition-operator` | an unknown operator (did-you-mean) |
| `condition-empty` | an empty `all`, `any`, `in` or `not_in` |
| `condition-type` | a literal of the wrong type for its fact or operator: a string fact against a number, `in` with a non-list, `gt` on a boolean |
| `condition-value` | a word no request can carry: an action or severity that does not exist, an impossible asset symbol, a number beyond +/-1e15 |
| `fact-unknown` | a fact that does not exist (did-you-mean) |
| `fact-needs-protection` | a fact computed with a built-in's parameters whose block the policy lacks |
| `template-syntax`, `template-fact-unknown` | a `reason` with a lone brace or a placeholder that is not a known fact |
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from .errors import Issue
from .fact_catalogue import BY_NAME, FactSpec
from .loading import MAX_MAGNITUDE, Path_, SourceMap
from .protections.condition import COMBINATORS, OPERATORS, TemplateError, parse_template
from .resources import schema
from .validation import did_you_mean

MAX_DEPTH = 8  # levels of `all`/`any`/`not`; the rule network takes 15 groups per rule anyway
_ORDERING = ("lt", "le", "gt", "ge")
# how other languages spell our operators
_ALIASES = {
    "gte": "ge",
    "lte": "le",
    "neq": "ne",
    "nin": "not_in",
    "notin": "not_in",
    "==": "eq",
    "!=": "ne",
    "<": "lt",
    "<=": "le",
    ">": "gt",
    ">=": "ge",
}


def custom_issues(name: str, block: Mapping[str, Any], blocks: Mapping[str, Any], source: SourceMap) -> list[Issue]:
    """Every issue in the `when` and `reason` of custom protection `name`."""
    path: Path_ = ("protections", name)
    found: list[Issue] = []
    if "when" in block:
        found += _Walk(source, blocks).node(block["when"], (*path, "when"), 1)
    if isinstance(block.get("reason"), str):
        found += _template(block["reason"], (*path, "reason"), source)
    return found


class _Walk:
    def __init__(self, source: SourceMap, blocks: Mapping[str, Any]):
        self.source = source
        self.blocks = blocks
        self.found: list[Issue] = []

    def issue(self, code: str, path: Path_, message: str, *, key: bool = False) -> None:
        self.found.append(self.source.issue(code, path, message, key=key))

    def node(self, node: Any, path: Path_, depth: int) -> list[Issue]:
        if not isinstance(node, dict):
            self.issue(
                "condition-shape",
                path,
                f"a condition is a mapping (`all`, `any`, `not`, or `fact` with an operator), got {_shown(node)}",
            )
            return self.found
        if depth > MAX_DEPTH:
            self.issue("condition-shape", path, f"conditions are nested more than {MAX_DEPTH} deep")
            return self.found
        known = {*COMBINATORS, "fact", *OPERATORS}
        for key in node:
            if key not in known:
                hint = (
                    f"; did you mean `{_ALIASES[key]}`?"
                    if key in _ALIASES
                    else did_you_mean(key, [*OPERATORS, *COMBINATORS, "fact"])
                )
                self.issue("condition-operator", (*path, key), f"unknown operator `{key}`{hint}", key=True)
        groups = [key for key in COMBINATORS if key in node]
        operators = [key for key in node if key in OPERATORS]
        if groups:
            if len(groups) > 1 or "fact" in node or operators:
                others = " and ".join(f"`{key}`" for key in [*groups, *(["fact"] if "fact" in node else []), *operators])
                self.issue(
                    "condition-shape", path, f"{others} in one condition: give each its own condition, under `all` or `any`"
                )
                return self.found
            self.group(groups[0], node[groups[0]], (*path, groups[0]), depth)
        elif "fact" not in node:
            if not any(key not in known for key in node):
                self.issue("condition-shape", path, "a condition needs `fact` and an operator, or `all`, `any` or `not`")
        else:
            self.test(node, path, operators)
        return self.found

    def group(self, word: str, items: Any, path: Path_, depth: int) -> None:
        if word == "not":
            self.node(items, path, depth + 1)
            return
        if not isinstance(items, list):
            self.issue("condition-type", path, f"`{word}` takes a list of conditions, got {_shown(items)}")
        elif not items:
            self.issue("condition-empty", path, f"`{word}` has no conditions: give at least one")
        else:
            for index, item in enumerate(items):
                self.node(item, (*path, index), depth + 1)

    def test(self, node: Mapping[str, Any], path: Path_, operators: list[str]) -> None:
        fact = node["fact"]
        if not isinstance(fact, str):
            self.issue("condition-type", (*path, "fact"), f"`fact` names a fact, got {_shown(fact)}")
            return
        spec = BY_NAME.get(fact)
        if spec is None:
            self.issue("fact-unknown", (*path, "fact"), f"unknown fact `{fact}`{did_you_mean(fact, BY_NAME)}")
        elif spec.needs and spec.needs not in self.blocks:
            self.issue(
                "fact-needs-protection",
                (*path, "fact"),
                f"`{fact}` is computed with {spec.needs}'s parameters: add a `{spec.needs}` block (it may be disabled)",
            )
        if not operators:
            words = ", ".join(OPERATORS)
            if all(key in ("fact", *COMBINATORS, *OPERATORS) for key in node):
                self.issue("condition-shape", path, f"`fact: {fact}` has no operator: add one of {words}")
            return
        if len(operators) > 1:
            both = " and ".join(f"`{op}`" for op in operators)
            self.issue(
                "condition-shape",
                (*path, operators[1]),
                f"{both} in one condition: one operator per condition, under `all`",
                key=True,
            )
            return
        if spec is not None:
            self.literal(spec, operators[0], node[operators[0]], (*path, operators[0]))

    def literal(self, spec: FactSpec, word: str, value: Any, path: Path_) -> None:
        if word == "exists":
            if not isinstance(value, bool):
                self.issue("condition-type", path, f"`exists` takes true or false, got {_shown(value)}")
            return
        if word in _ORDERING and spec.type is not float:
            self.issue(
                "condition-type",
                path,
                f"`{spec.name}` is a {spec.type_name}: `{word}` compares numbers; use eq, ne, in or not_in",
            )
            return
        if word in ("in", "not_in"):
            if not isinstance(value, list):
                self.issue("condition-type", path, f"`{word}` takes a list of values, got {_shown(value)}")
                return
            if not value:
                self.issue("condition-empty", path, f"`{word}` has no values: give at least one")
                return
            seen: set[str] = set()
            for index, item in enumerate(value):
                self.value(spec, item, (*path, index))
                text = json.dumps(item)
                if text in seen:
                    self.issue("condition-value", (*path, index), f"`{word}` lists {_shown(item)} twice")
                seen.add(text)
            return
        self.value(spec, value, path)

    def value(self, spec: FactSpec, value: Any, path: Path_) -> None:
        if not _fits(value, spec.type):
            self.issue("condition-type", path, f"`{spec.name}` is a {spec.type_name}, got {_shown(value)}")
        elif spec.type is float and abs(value) > MAX_MAGNITUDE:
            self.issue("condition-value", path, f"`{value}` is too large: numbers must be within +/-1e15")
        elif spec.values and value not in spec.values:
            options = ", ".join(f"`{v}`" for v in spec.values)
            self.issue(
                "condition-value", path, f"`{value}` is not a `{spec.name}`: one of {options}{did_you_mean(value, spec.values)}"
            )
        elif spec.name == "asset" and not _asset_pattern().match(value):
            self.issue("condition-value", path, f"`{value}` is not an asset symbol a request can carry")


def _template(text: str, path: Path_, source: SourceMap) -> list[Issue]:
    try:
        parts = parse_template(text)
    except TemplateError as exc:
        return [source.issue("template-syntax", path, f"{exc} (at character {exc.offset + 1})")]
    found = []
    for part in parts:
        if isinstance(part, tuple) and part[0] not in BY_NAME:
            found.append(
                source.issue("template-fact-unknown", path, f"`{{{part[0]}}}` names no fact{did_you_mean(part[0], BY_NAME)}")
            )
    return found


def _fits(value: Any, wanted: type) -> bool:
    if wanted is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return type(value) is wanted


@cache
def _asset_pattern() -> re.Pattern[str]:
    return re.compile(schema("request")["properties"]["asset"]["pattern"])


def _shown(value: Any) -> str:
    kind = {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "mapping"}.get(
        type(value), "null"
    )
    text = json.dumps(value, ensure_ascii=False)
    return f"`{text if len(text) <= 40 else text[:37] + '...'}` ({kind})"
