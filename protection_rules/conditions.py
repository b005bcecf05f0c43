"""A rule's condition: a tree of `all`/`any`/`not` over tests on one fact field each.

The compiler renders one tree three ways: durable-rules JSON (negation pushed down to the
leaves, since the engine has no general `not`), the generated Python mirror (with Python's own
`not`, so the mirror checks the push-down on every request), and the explanation that
`holds` and `explain` give here. Built-in protections and custom ones (`type: condition`)
build the same trees.

Absent facts: a test that compares (`==`, `!=`, `<`, ..., `in`, `not_in`) holds only when the
fact carries the field, as in durable-rules; `exists` and `absent` test presence. `Not` is
plain negation, so `not (x > 5)` holds when `x` is absent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Op = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not_in", "exists", "absent"]
ORDERING: frozenset[str] = frozenset({"<", "<=", ">", ">="})
LISTS: frozenset[str] = frozenset({"in", "not_in"})
PRESENCE: frozenset[str] = frozenset({"exists", "absent"})


@dataclass(frozen=True, slots=True)
class Condition:
    """One test on one fact field. `label` is the name people read (a custom protection's fact
    name, `regime.changed`), `field` the flat key the engine fact carries."""

    field: str
    op: Op
    value: Any = None
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.field

    def holds(self, fact: Mapping[str, Any]) -> bool:
        if self.op == "exists":
            return self.field in fact
        if self.op == "absent":
            return self.field not in fact
        if self.field not in fact:
            return False  # as in durable-rules: a comparison on a missing field is false
        seen = fact[self.field]
        if self.op == "==":
            return seen == self.value
        if self.op == "!=":
            return seen != self.value
        if self.op == "in":
            return seen in self.value
        if self.op == "not_in":
            return seen not in self.value
        if self.op == "<":
            return seen < self.value
        if self.op == "<=":
            return seen <= self.value
        if self.op == ">":
            return seen > self.value
        return seen >= self.value

    def text(self) -> str:
        if self.op in PRESENCE:
            return f"{self.name} {self.op}"
        if self.op in LISTS:
            return f"{self.name} {self.op} [" + ", ".join(_shown(v) for v in self.value) + "]"
        return f"{self.name} {self.op} {_shown(self.value)}"

    def explain(self, fact: Mapping[str, Any]) -> dict[str, Any]:
        return {"condition": self.text(), "value": fact.get(self.field), "held": self.holds(fact)}


@dataclass(frozen=True, slots=True)
class AllOf:
    items: tuple[Expr, ...]

    def holds(self, fact: Mapping[str, Any]) -> bool:
        return all(item.holds(fact) for item in self.items)

    def text(self) -> str:
        return "all(" + ", ".join(item.text() for item in self.items) + ")"

    def explain(self, fact: Mapping[str, Any]) -> dict[str, Any]:
        return {"condition": "all", "held": self.holds(fact), "conditions": [i.explain(fact) for i in self.items]}


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple[Expr, ...]

    def holds(self, fact: Mapping[str, Any]) -> bool:
        return any(item.holds(fact) for item in self.items)

    def text(self) -> str:
        return "any(" + ", ".join(item.text() for item in self.items) + ")"

    def explain(self, fact: Mapping[str, Any]) -> dict[str, Any]:
        return {"condition": "any", "held": self.holds(fact), "conditions": [i.explain(fact) for i in self.items]}


@dataclass(frozen=True, slots=True)
class Not:
    item: Expr

    def holds(self, fact: Mapping[str, Any]) -> bool:
        return not self.item.holds(fact)

    def text(self) -> str:
        return f"not({self.item.text()})"

    def explain(self, fact: Mapping[str, Any]) -> dict[str, Any]:
        return {"condition": "not", "held": self.holds(fact), "conditions": [self.item.explain(fact)]}


Expr = Condition | AllOf | AnyOf | Not

# the test that holds exactly when a comparison on a present field does not
COMPLEMENT: Mapping[str, Op] = {
    "==": "!=",
    "!=": "==",
    "<": ">=",
    ">=": "<",
    ">": "<=",
    "<=": ">",
    "in": "not_in",
    "not_in": "in",
    "exists": "absent",
    "absent": "exists",
}


def leaves(expr: Expr) -> Iterator[Condition]:
    """Every test of the tree, left to right."""
    if isinstance(expr, Condition):
        yield expr
    elif isinstance(expr, Not):
        yield from leaves(expr.item)
    else:
        for item in expr.items:
            yield from leaves(item)


def python_source(expr: Expr) -> str:
    """A Python expression of `f` (the engine fact) that holds exactly when `expr` does, for
    generated code (the compiler's mirror, a custom protection's trace): fields are plain names
    and literals type-checked scalars, written with `repr`."""
    if isinstance(expr, AllOf):
        return "(" + " and ".join(python_source(item) for item in expr.items) + ")"
    if isinstance(expr, AnyOf):
        return "(" + " or ".join(python_source(item) for item in expr.items) + ")"
    if isinstance(expr, Not):
        return f"(not {python_source(expr.item)})"
    field = repr(expr.field)
    if expr.op == "exists":
        return f"({field} in f)"
    if expr.op == "absent":
        return f"({field} not in f)"
    if expr.op in LISTS:
        test = f"f[{field}] {'in' if expr.op == 'in' else 'not in'} {tuple(expr.value)!r}"
    else:
        test = f"f[{field}] {expr.op} {expr.value!r}"
    return f"({field} in f and {test})"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)
