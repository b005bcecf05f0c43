"""The facts a custom protection (`type: condition`) may test: name, type, and when it is absent.

Numbers are compared as numbers (every number fact is a float in the engine fact, so an
integer like `active_positions: 30` compares exactly), strings and booleans only for (in)equality.
A fact is *optional* when a request may lack it: a comparison on it is then false, and the
lint warns about a comparison on an optional fact with no `exists` test on it. How each is
computed: facts.py (`CustomFacts`), which reuses the built-in protections' own computations.
"""

from __future__ import annotations

from dataclasses import dataclass

TYPE_NAMES = {float: "number", str: "string", bool: "boolean"}


@dataclass(frozen=True, slots=True)
class FactSpec:
    name: str
    type: type
    optional: bool
    meaning: str
    values: tuple[str, ...] = ()  # the only words a string fact takes, when it is an enum
    needs: str | None = None  # the built-in protection whose parameters it is computed with

    @property
    def key(self) -> str:
        """The flat key in the engine fact: `action` is shared with the built-ins."""
        return "action" if self.name == "action" else "fact_" + self.name.replace(".", "_")

    @property
    def type_name(self) -> str:
        return TYPE_NAMES[self.type]


def _number(name: str, meaning: str) -> FactSpec:
    return FactSpec(name, float, True, f"the request's `{name}` ({meaning}); absent when not given")


FACTS: tuple[FactSpec, ...] = (
    FactSpec("asset", str, False, "the request's asset symbol"),
    FactSpec("action", str, False, "the requested action", values=("open", "close", "increase", "decrease")),
    _number("current_size", "the position's size now"),
    _number("target_size", "the size after the change"),
    _number("current_score", "the asset's score now"),
    _number("target_score", "the score at the target"),
    _number("position_entry_score", "the score when the position was entered"),
    _number("position_entry_size", "the size when the position was entered"),
    _number("portfolio_allocation", "the share of the portfolio in this asset"),
    _number("active_positions", "open positions in the portfolio"),
    FactSpec("regime.changed", bool, True, "the request's `regime.changed`; absent when the request has no `regime`"),
    FactSpec(
        "regime.severity",
        str,
        True,
        "the request's `regime.severity` (`normal` when the regime gives none); absent when the request has no `regime`",
        values=("normal", "high", "critical"),
    ),
    FactSpec(
        "days_held",
        float,
        True,
        "whole days the position has been held (rounded down, as holding_period counts them) since its entry "
        "(`position_entry_date`, else the latest open with no later close); absent when there is no entry",
    ),
    FactSpec("is_core", bool, False, "the asset's core designation is in force now"),
    FactSpec(
        "in_grace",
        bool,
        False,
        "grace_period holds the asset in grace now: failing (`current_score` below its threshold) or carried from "
        "state without a score, within its `days`",
        needs="grace_period",
    ),
    FactSpec(
        "cycles_in_window",
        float,
        False,
        "completed open-close cycles in whipsaw_protection's window (`period_days`), as it counts them",
        needs="whipsaw_protection",
    ),
    FactSpec("size_change", float, True, "`target_size` minus `current_size`; absent unless the request gives both"),
)

BY_NAME: dict[str, FactSpec] = {spec.name: spec for spec in FACTS}
