"""The request schema as msgspec types: one typed pass over a request document (parsing.py).

schemas/request.v1.schema.json stays the contract: the patterns and bounds here are read from
it, and a property test holds the two together (tests/test_schemas.py). These types accept a
little less than the schema and the semantic checks together (numbers past +/-MAX_MAGNITUDE,
NaN and integral floats where an integer goes are refused here); whatever they refuse takes the
slow path, where jsonschema and the checks of parsing.py write the issues.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .loading import MAX_MAGNITUDE
from .resources import schema

_PROPERTIES: dict[str, Any] = schema("request")["properties"]
_STATE: dict[str, Any] = _PROPERTIES["state"]["properties"]


def _text(spec: dict[str, Any]) -> Any:
    bounds = {"pattern": spec.get("pattern"), "min_length": spec.get("minLength"), "max_length": spec.get("maxLength")}
    return Annotated[str, msgspec.Meta(**{key: value for key, value in bounds.items() if value is not None})]


def _number(spec: dict[str, Any]) -> Any:
    """A JSON number within the schema's minimum and +/-MAX_MAGNITUDE (which also refuses NaN)."""
    low = spec.get("minimum", -MAX_MAGNITUDE)
    return (
        Annotated[int, msgspec.Meta(ge=int(low), le=int(MAX_MAGNITUDE))]
        | Annotated[float, msgspec.Meta(ge=float(low), le=MAX_MAGNITUDE)]
    )


def _integer(spec: dict[str, Any]) -> Any:
    return Annotated[int, msgspec.Meta(ge=spec.get("minimum", -int(MAX_MAGNITUDE)), le=int(MAX_MAGNITUDE))]


# A timestamp's shape is checked where it is read, by `timestamps.parse_instant`, with the same
# expression as the schema's pattern (timestamps.TIMESTAMP_PATTERN): not twice.
Stamp = str
Size = _number(_PROPERTIES["current_size"])
Score = _number(_PROPERTIES["current_score"])


class CoreDocument(msgspec.Struct, forbid_unknown_fields=True):
    designated_at: Stamp
    expires_at: Stamp | None = None


class GraceDocument(msgspec.Struct, forbid_unknown_fields=True):
    started_at: Stamp
    original_size: Size | None = None  # type: ignore[valid-type]


class EventDocument(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["open", "close"]
    at: Stamp
    size: Size | None = None  # type: ignore[valid-type]


class StateDocument(msgspec.Struct, forbid_unknown_fields=True):
    core: CoreDocument | None = None
    grace: GraceDocument | None = None
    events: Annotated[list[EventDocument], msgspec.Meta(max_length=_STATE["events"]["maxItems"])] | None = None
    last_override_at: Stamp | None = None


class RegimeDocument(msgspec.Struct, forbid_unknown_fields=True):
    changed: bool
    severity: Literal["normal", "high", "critical"] | None = None
    old_regime: _text(_PROPERTIES["regime"]["properties"]["old_regime"]) | None = None  # type: ignore[valid-type]
    new_regime: _text(_PROPERTIES["regime"]["properties"]["new_regime"]) | None = None  # type: ignore[valid-type]
    change_date: Stamp | None = None


class RequestDocument(msgspec.Struct, forbid_unknown_fields=True):
    asset: _text(_PROPERTIES["asset"])  # type: ignore[valid-type]
    action: Literal["open", "close", "increase", "decrease"]
    current_date: Stamp
    request_id: _text(_PROPERTIES["request_id"]) | None = None  # type: ignore[valid-type]
    current_size: Size | None = None  # type: ignore[valid-type]
    target_size: _number(_PROPERTIES["target_size"]) | None = None  # type: ignore[valid-type]
    current_score: Score | None = None  # type: ignore[valid-type]
    target_score: _number(_PROPERTIES["target_score"]) | None = None  # type: ignore[valid-type]
    reason: _text(_PROPERTIES["reason"]) | None = None  # type: ignore[valid-type]
    position_entry_date: Stamp | None = None
    position_entry_score: _number(_PROPERTIES["position_entry_score"]) | None = None  # type: ignore[valid-type]
    position_entry_size: _number(_PROPERTIES["position_entry_size"]) | None = None  # type: ignore[valid-type]
    portfolio_allocation: _number(_PROPERTIES["portfolio_allocation"]) | None = None  # type: ignore[valid-type]
    active_positions: _integer(_PROPERTIES["active_positions"]) | None = None  # type: ignore[valid-type]
    metadata: dict[str, Any] | None = None
    regime: RegimeDocument | None = None
    state: StateDocument | None = None


def decode(data: dict[str, Any]) -> RequestDocument:
    """The typed document; raises msgspec.ValidationError for anything it does not accept."""
    return msgspec.convert(data, RequestDocument, strict=True)
