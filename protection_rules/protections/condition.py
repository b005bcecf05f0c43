"""A custom protection (`type: condition`): it blocks the actions in `blocks` while `when` holds.

`when` is a tree of `all`, `any` and `not` over tests on the facts of fact_catalogue.py; it
compiles into one rule, `<name>.block`, in the same ruleset as the built-ins. Its trace shows
each test with the value seen and whether it held; `reason` is a template whose `{fact}`
placeholders show the values seen, an absent fact as `(absent)`. It never knows when it will
stop blocking, so its `unblocks_at` is null. Policies are checked by condition_checks.py
before one is built.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from itertools import count
from typing import Any

from ..conditions import AllOf, AnyOf, Condition, Expr, Not, leaves, python_source
from ..fact_catalogue import BY_NAME
from .base import Context, Outcome, Protection, RuleSpec

TYPE = "condition"
COMBINATORS = ("all", "any", "not")
# the policy's operator words and the tests they compile to
OPERATORS: dict[str, str] = {
    "eq": "==",
    "ne": "!=",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
    "in": "in",
    "not_in": "not_in",
    "exists": "exists",
}
_WORDS = {op: word for word, op in OPERATORS.items()}
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_FACT_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$")
ABSENT = "(absent)"


class TemplateError(ValueError):
    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


def parse_template(text: str) -> list[str | tuple[str]]:
    """Literal text and `(fact,)` placeholders; `{{` and `}}` are braces. Raises `TemplateError`."""
    parts: list[str | tuple[str]] = []
    last = 0
    for match in _PLACEHOLDER.finditer(text):
        parts.append(text[last : match.start()])
        token, name = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif name is None:
            raise TemplateError(f"a lone `{token}`: write `{token * 2}` for a brace, `{{fact}}` for a fact", match.start())
        elif not _FACT_NAME.match(name):
            raise TemplateError(f"`{{{name}}}` is not a fact name: write `{{fact}}`, with no format or conversion", match.start())
        else:
            parts.append((name,))
        last = match.end()
    parts.append(text[last:])
    return [part for part in parts if part != ""]


def show(value: Any) -> str:
    """A fact's value as a reason shows it: `(absent)`, `true`, `0.15`, `30`, `AAPL`."""
    if value is None:
        return ABSENT
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def parse_condition(node: Mapping[str, Any]) -> Expr:
    """The test tree of a validated `when` node; number literals become floats, lists tuples."""
    if "all" in node:
        return AllOf(tuple(parse_condition(item) for item in node["all"]))
    if "any" in node:
        return AnyOf(tuple(parse_condition(item) for item in node["any"]))
    if "not" in node:
        return Not(parse_condition(node["not"]))
    spec = BY_NAME[node["fact"]]
    [(word, literal)] = [(key, value) for key, value in node.items() if key != "fact"]
    if word == "exists":
        return Condition(spec.key, "exists" if literal else "absent", None, spec.name)
    number = spec.type is float
    if word in ("in", "not_in"):
        return Condition(spec.key, OPERATORS[word], tuple(float(v) if number else v for v in literal), spec.name)  # type: ignore[arg-type]
    return Condition(spec.key, OPERATORS[word], float(literal) if number else literal, spec.name)  # type: ignore[arg-type]


class ConditionProtection(Protection):
    def __init__(self, name: str, block: Mapping[str, Any]):
        super().__init__(block)
        self.name = name  # type: ignore[misc]  # a custom protection is named by its policy
        self.when = parse_condition(block["when"])
        self.template = parse_template(block["reason"])
        tested = [condition.label for condition in leaves(self.when)]
        named = [part[0] for part in self.template if isinstance(part, tuple)]
        self.custom_facts = tuple(dict.fromkeys([*tested, *named]))
        self._rule = f"{name}.block"
        self._trace = tracer(self.when, {name: BY_NAME[name].key for name in self.custom_facts})
        self._not_here = {
            action: f"`{action}` is not an action {name} blocks (it blocks: {self._blocked_list})"
            for action in ("open", "close", "increase", "decrease")
        }

    def facts(self, ctx: Context) -> dict[str, Any]:
        return {}  # the facts it tests come from facts.CustomFacts, computed once for all

    def rules(self) -> tuple[RuleSpec, ...]:
        return (RuleSpec(self._rule, (self.blocks_action(), self.when)),) if self.blocks else ()

    def explain(self, ctx: Context, facts: Mapping[str, Any], fired: frozenset[str]) -> Outcome:
        shown = self._trace(facts)
        if self._rule in fired:
            return Outcome("block", self.render(shown), shown)
        action = ctx.request.action
        if action not in self.blocks:
            return Outcome("not_applicable", self._not_here[action], shown)
        # the values seen are in the trace facts; formatting them here would cost every request
        return Outcome("pass", "its condition does not hold", shown)

    def render(self, seen: Mapping[str, Any]) -> str:
        return "".join(part if isinstance(part, str) else show(seen.get(part[0])) for part in self.template)


def tracer(expr: Expr, keys: Mapping[str, str]) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """A function of the engine fact that gives a custom protection's trace facts: the value of
    each fact it reads, by name (`keys`: name -> key in the engine fact), and under `when` the
    tree as the policy writes it, each node with `held` and each test with the `value` seen
    (null: the request does not carry the fact).

    Generated straight-line Python, as the compiler's mirror is, and for the same reason: it
    runs for every custom protection on every request. Safe to `exec` for the same reason too:
    fact keys and labels come from the catalogue, literals are validated scalars, all `repr`ed.
    """
    lines = ["def trace(f):"]
    numbers = count()

    def node(expr: Expr) -> tuple[str, str]:
        """The source of `expr`'s trace dict, and of the name that holds whether it held."""
        held = f"h{next(numbers)}"
        if isinstance(expr, (AllOf, AnyOf)):
            parts = [node(item) for item in expr.items]
            lines.append(f"    {held} = {(' and ' if isinstance(expr, AllOf) else ' or ').join(h for _, h in parts)}")
            word = "all" if isinstance(expr, AllOf) else "any"
            return f"{{{word!r}: [{', '.join(d for d, _ in parts)}], 'held': {held}}}", held
        if isinstance(expr, Not):
            inner, inner_held = node(expr.item)
            lines.append(f"    {held} = not {inner_held}")
            return f"{{'not': {inner}, 'held': {held}}}", held
        lines.append(f"    {held} = {python_source(expr)}")
        if expr.op in ("exists", "absent"):
            test = f"'exists': {expr.op == 'exists'!r}"
        else:
            literal = list(expr.value) if isinstance(expr.value, tuple) else expr.value
            test = f"{_WORDS[expr.op]!r}: {literal!r}"
        return f"{{'fact': {expr.label!r}, {test}, 'value': f.get({expr.field!r}), 'held': {held}}}", held

    tree, _ = node(expr)
    values = "".join(f"{name!r}: f.get({key!r}), " for name, key in keys.items())
    lines.append(f"    return {{{values}'when': {tree}}}")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<condition trace>", "exec"), namespace)  # safe: see the docstring
    return namespace["trace"]
