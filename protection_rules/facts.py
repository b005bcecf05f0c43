"""Fact enrichment: request + state + policy -> the flat fact the rule network matches.

All time arithmetic happens here (and in the protections' `facts` methods it calls), once per
request, with the half-open windows of docs/semantics.md section 2. The rule network only compares
numbers that were computed here against thresholds baked in by the compiler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .fact_catalogue import BY_NAME, FactSpec
from .models import OPTIONAL_NUMBERS, AssetState, ProtectionRequest
from .protections import Context, Protection
from .protections.core_asset_immunity import core_in_force
from .protections.grace_period import GracePeriod
from .protections.whipsaw_protection import WhipsawProtection
from .timestamps import MICROS_PER_DAY

if TYPE_CHECKING:
    from .policy import Policy

EMPTY_STATE = AssetState()


class FactSource(Protocol):
    """What puts fields in the engine fact: an enabled protection, or `CustomFacts`."""

    fact_types: Mapping[str, type]

    def facts(self, ctx: Context) -> dict[str, Any]: ...


def resolve_context(request: ProtectionRequest, stored: AssetState | None = None) -> Context:
    """Pick the state (request, else store, else none) and the position's entry date."""
    if request.state is not None:
        state, source = request.state, "request"
    elif stored is not None:
        state, source = stored, "store"
    else:
        state, source = EMPTY_STATE, "none"
    entry, entry_source = _entry(request, state)
    return Context(request, request.current_date, state, source, entry, entry_source)


def _entry(request: ProtectionRequest, state: AssetState) -> tuple[int | None, str]:
    if request.position_entry_date is not None:
        return request.position_entry_date, "position_entry_date"
    # The latest open with no later close: with events in time order, that is the last event
    # when it is an open (a close after any open means the position is flat).
    if state.events and state.events[-1].type == "open":
        return state.events[-1].at, "open event"
    return None, "none"


def enrich(sources: Iterable[FactSource], ctx: Context) -> dict[str, Any]:
    """The engine fact for one request: the action plus every source's facts (see `fact_sources`)."""
    fact: dict[str, Any] = {"action": ctx.request.action}
    for source in sources:
        fact.update(source.facts(ctx))
    return fact


def fact_sources(policy: Policy) -> tuple[FactSource, ...]:
    """The enabled protections that put facts in the engine fact, then, when an enabled custom
    protection tests any, the facts custom protections test (each computed once per request)."""
    enabled = [policy.protections[name] for name in policy.hierarchy if policy.protections[name].enabled]
    sources: list[FactSource] = [protection for protection in enabled if protection.fact_types]
    used = dict.fromkeys(name for protection in enabled for name in protection.custom_facts)
    if used:
        sources.append(CustomFacts(tuple(used), policy.protections))
    return tuple(sources)


Getter = Callable[[Context], Any]


class CustomFacts:
    """The facts custom protections test (fact_catalogue.py), those used and no others.

    A getter answers None for a fact the request does not carry: it is left out of the engine
    fact, which makes every comparison on it false. Numbers are floats, as the rules expect.
    """

    def __init__(self, names: tuple[str, ...], protections: Mapping[str, Protection]):
        specs = [BY_NAME[name] for name in names if name != "action"]  # the engine fact always has it
        self.fact_types: dict[str, type] = {spec.key: spec.type for spec in specs}
        self._getters = tuple((spec.key, _getter(spec, protections)) for spec in specs)

    def facts(self, ctx: Context) -> dict[str, Any]:
        out = {}
        for key, getter in self._getters:
            value = getter(ctx)
            if value is not None:
                out[key] = value
        return out


def _getter(spec: FactSpec, protections: Mapping[str, Protection]) -> Getter:
    name = spec.name
    if name in OPTIONAL_NUMBERS:
        return lambda ctx: _float(getattr(ctx.request, name))
    if name == "asset":
        return lambda ctx: ctx.request.asset
    if name == "regime.changed":
        return lambda ctx: ctx.request.regime.changed if ctx.request.regime else None
    if name == "regime.severity":
        return lambda ctx: ctx.request.regime.severity if ctx.request.regime else None
    if name == "days_held":
        return lambda ctx: float((ctx.now - ctx.entry_at) // MICROS_PER_DAY) if ctx.entry_at is not None else None
    if name == "is_core":
        return lambda ctx: core_in_force(ctx.state.core, ctx.now)
    if name == "in_grace":
        grace = protections["grace_period"]
        assert isinstance(grace, GracePeriod)  # validation requires the block (fact_catalogue `needs`)
        return grace.in_grace
    if name == "cycles_in_window":
        whipsaw = protections["whipsaw_protection"]
        assert isinstance(whipsaw, WhipsawProtection)
        return lambda ctx: float(whipsaw.cycles(ctx))
    if name == "size_change":
        return _size_change
    raise AssertionError(f"no getter for fact `{name}`")


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _size_change(ctx: Context) -> float | None:
    current, target = ctx.request.current_size, ctx.request.target_size
    return None if current is None or target is None else float(target) - float(current)
