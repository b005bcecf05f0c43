"""What durable-rules accepts, worked out from a ruleset's JSON before the engine sees it.

The engine's limits are not a rule count. It builds one network of alpha nodes (one test each),
shared between rules whose tests begin alike, and walks it depth first for every fact with a
stack of 64 pending nodes (error 303 past that, at assert time: every request would fail).
An `$or` adds a pass-through node that is always pushed, once per branch that reaches it, and
activates its rule once per true path. Other limits: 511 tests under one node, 128 `$or`
pass-throughs or absence tests under one node, 256 rules ending at one node, and 31 entries
(two per `$and`/`$or`) in one rule's expression (errors 106, 107, 108 and 113, at load time).

`measure` rebuilds the network as durable-rules does (rete.c: `createAlpha`, `findAlpha`,
`linkAlpha`) and bounds the stack over every possible fact: a node's pushes are all its
pass-throughs plus, per field, its absence tests or its tests on a present value (equality
tests on one field with different values exclude each other). Walking depth first, a node's
siblings wait on the stack while it is explored, so the bound of a node is its pushes, or, for
each child, the siblings that can be pushed with it plus the child's own bound. It holds
whatever order the engine takes them in. docs/durable-rules.md has the measurements.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_STACK = 64  # events.c MAX_STACK_SIZE
MAX_CHILDREN = 511  # rules.h NEXT_BUCKET_LENGTH 512, open addressing with one slot free
MAX_NEXT_LIST = 127  # rules.h NEXT_LIST_LENGTH 128
MAX_RULES_AT_NODE = 255  # rules.h BETA_LIST_LENGTH 256
MAX_GROUPS = 15  # rete.h MAX_SEQUENCE_EXPRESSIONS 32: two entries per `$and`/`$or`, 32 is refused
_COMPARISONS = ("$lt", "$lte", "$gt", "$gte", "$neq", "$ex", "$nex")


@dataclass(eq=False)
class _Node:
    key: tuple[str, str, str] | None  # (field, operator, value as JSON); None for an `$or` pass-through
    children: dict[tuple[str, str, str], _Node] = field(default_factory=dict)
    next_list: list[_Node] = field(default_factory=list)
    rules: int = 0


@dataclass(frozen=True, slots=True)
class Measured:
    """The worst-case stack over all facts, the most activations one fact can cause (the
    sentinel's included), and every limit the ruleset would break: the rule it is about (None
    for the ruleset as a whole) and what, in words."""

    stack: int
    activations: int
    problems: tuple[tuple[str | None, str], ...]


def measure(body: Mapping[str, Mapping[str, Any]]) -> Measured:
    root = _Node(None)
    problems: list[tuple[str | None, str]] = []
    activations = 0
    for rule_id, rule in body.items():
        expression = rule["all"][0]["m"]
        groups = _groups(expression)
        if groups > MAX_GROUPS:
            message = (
                f"rule `{rule_id}` has {groups} `all`/`any` groups (`in`, `not_in` and `not` of a comparison "
                f"count as one each); the rule network takes at most {MAX_GROUPS} per rule"
            )
            problems.append((rule_id, message))
        _build(expression, root).rules += 1
        activations += _activations(expression)
    nodes = _walk(root)
    for node in nodes:
        if len(node.children) > MAX_CHILDREN:
            problems.append(
                f"{len(node.children)} different tests follow one test; the rule network takes at most {MAX_CHILDREN}"
            )
        if len(node.next_list) > MAX_NEXT_LIST:
            problems.append(
                f"{len(node.next_list)} `any` branches or absence tests follow one test; the rule network takes at most {MAX_NEXT_LIST}"
            )
        if node.rules > MAX_RULES_AT_NODE:
            problems.append(f"{node.rules} rules have the same condition; the rule network takes at most {MAX_RULES_AT_NODE}")
    stack = _bound(root, {})
    if stack > MAX_STACK:
        message = (
            f"one request could leave {stack} tests pending at once in the rule network, which holds at most {MAX_STACK} "
            "(durable-rules error 303): fewer protections blocking the same action, or fewer `any` branches and negations"
        )
        problems.append((None, message))
    return Measured(stack, activations, tuple(problems))


def _leaf(expression: Mapping[str, Any]) -> tuple[str, str, Any]:
    [(key, value)] = expression.items()
    if key in _COMPARISONS:
        [(name, literal)] = value.items()
        return name, key, literal
    return key, "$eq", value


def _build(expression: Mapping[str, Any], parent: _Node) -> _Node:
    """The node a rule's expression ends at, creating and sharing nodes as durable-rules does."""
    if "$and" in expression:
        node = parent
        for item in expression["$and"]:
            node = _build(item, node)
        return node
    if "$or" in expression:
        forward = _Node(None)
        for item in expression["$or"]:
            _build(item, parent).next_list.append(forward)
        return forward
    name, operator, literal = _leaf(expression)
    key = (name, operator, json.dumps(literal))
    if operator == "$nex":
        for node in parent.next_list:
            if node.key == key:
                return node
        node = _Node(key)
        parent.next_list.append(node)
        return node
    if key not in parent.children:
        parent.children[key] = _Node(key)
    return parent.children[key]


def _groups(expression: Mapping[str, Any]) -> int:
    if "$and" in expression or "$or" in expression:
        return 1 + sum(_groups(item) for item in [*expression.get("$and", ()), *expression.get("$or", ())])
    return 0


def _activations(expression: Mapping[str, Any]) -> int:
    if "$and" in expression:
        return math.prod(_activations(item) for item in expression["$and"])
    if "$or" in expression:
        return sum(_activations(item) for item in expression["$or"])
    return 1


def _walk(root: _Node) -> list[_Node]:
    seen: dict[int, _Node] = {}
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) not in seen:
            seen[id(node)] = node
            pending += [*node.children.values(), *node.next_list]
    return list(seen.values())


def _pushes(node: _Node) -> tuple[int, dict[tuple[str, bool], int]]:
    """How many nodes popping `node` can push at once, over every possible fact, and per field
    and presence (a test on an absent field, or on a present value) how many of those."""
    absent: Counter[str] = Counter()
    present: Counter[str] = Counter()
    equal: dict[str, Counter[tuple[str, Any]]] = {}
    forwards = 0
    for child in node.next_list:
        if child.key is None:
            forwards += 1  # always pushed: it tests a property no fact has
        else:
            absent[child.key[0]] += 1
    for name, operator, text in node.children:
        if operator == "$eq":
            equal.setdefault(name, Counter())[_same_value(json.loads(text))] += 1
        else:
            present[name] += 1
    for name, values in equal.items():
        present[name] += max(values.values())
    groups = {(name, False): count for name, count in absent.items()} | {(name, True): count for name, count in present.items()}
    total = forwards + sum(max(absent[name], present[name]) for name in absent.keys() | present.keys())
    return total, groups


def _bound(node: _Node, memo: dict[int, int]) -> int:
    """The most nodes on the stack while `node` and what follows it are explored: its pushes,
    or, exploring one child, the pushes that can hold with that child waiting beneath it."""
    if id(node) in memo:
        return memo[id(node)]
    pushes, groups = _pushes(node)
    best = {name: max(groups.get((name, False), 0), groups.get((name, True), 0)) for name, _ in groups}
    result = pushes
    for child in [*node.children.values(), *node.next_list]:
        if child.key is None:
            waiting = pushes - 1
        else:  # a test on a present field excludes those on its absence, and the other way round
            name, present = child.key[0], child.key[1] != "$nex"
            waiting = pushes - best[name] + groups[(name, present)] - 1
        result = max(result, waiting + _bound(child, memo))
    memo[id(node)] = result
    return result


def _same_value(value: Any) -> tuple[str, Any]:
    # the engine compares 1 and 1.0 as numbers: count them as one value that both tests match
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    return ("text", value)
