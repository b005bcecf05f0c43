"""The decision's audit record: its fields, and its canonical JSON written where it is built.

The sink hashes each record's canonical JSON (`canonical.canonical_bytes`) with its own stamps
in it (sequence, prev_hash...). Walking and encoding the whole ~3 KB record there, a batch after
it was built, cost more than deciding; so the engine writes it here, while its values are still
in the cache, cut where the stamps' values go (`EncodedRecord.runs`), and the sink puts its
stamps in (`splice`): the same bytes, with nothing walked or encoded twice.

The bytes are those of `canonical_bytes`, which walks every value to prove that orjson writes
what the reference encoder writes. Of the decision, `decision_bytes` checks only the fields that
can hold something other than our own strings, ints and bools: the floats (the decision time, a
state change's size) and the open-ended parts (each protection's facts, the errors); orjson
itself refuses what the reference refuses among the rest (a lone surrogate, an int past 64 bits).
tests/test_record_json.py holds all of it to the reference encoder, and fails when a decision
type gains a field that is not checked here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from .canonical import _ORJSON_OPTIONS, _orjson_agrees, _refuse, canonical_bytes, checked_canonical_bytes

# What the engine passes in, one dict per decision; the sink adds sequence, recorded_at,
# prev_hash, batch and hash (a record that carries those has them replaced).
RECORD_FIELDS = (
    "kind",
    "decision_id",
    "trace_id",
    "evaluated_at",
    "asset",
    "action",
    "decision",
    "blocking_systems",
    "override_applied",
    "policy",
    "engine_version",
    "request",
    "state",
    "state_source",
    "decision_record",
    "decision_time_ms",
)
SINK_FIELDS = ("sequence", "recorded_at", "prev_hash", "batch", "hash")

# The stamps that are hashed, in the order they sort among the record's keys: a record's
# canonical JSON is its runs (the members between where the stamps go) with the stamps between.
STAMPS = tuple(sorted(field for field in SINK_FIELDS if field != "hash"))
_KEYS = frozenset(RECORD_FIELDS)
# Where a stamp's value goes: canonical JSON never holds a raw NUL (JSON escapes it in strings)
_GAP = b"\x00"
_GAPS = {name: orjson.Fragment(_GAP) for name in STAMPS}
_INFINITY = float("inf")


class EncodedRecord(dict[str, Any]):
    """A decision record with `runs`: its canonical JSON with `STAMPS`' members in, cut where
    their values go, or None when the engine left the encoding to the sink (a value the
    reference encoder refuses). A sink that does not know it reads a plain dict."""

    __slots__ = ("runs",)

    def __init__(self, record: Mapping[str, Any], runs: tuple[bytes, ...] | None):
        super().__init__(record)
        self.runs = runs

    def __reduce__(self) -> tuple[Any, ...]:  # pickled (to another process) with its runs
        return (EncodedRecord, (dict(self), self.runs))


def encode_record(record: dict[str, Any], parts: Mapping[str, bytes | None]) -> EncodedRecord:
    """`record` (the fields `RECORD_FIELDS`) with its runs; `parts[key]` is the caller's
    `canonical_bytes(record[key])`, None where the reference refuses the value."""
    runs = None
    if None not in parts.values() and record.keys() == _KEYS:
        shell = dict(record)
        for key in parts:
            shell[key] = None  # checked where it was written
        if _orjson_agrees(shell):
            for key, encoded in parts.items():
                shell[key] = orjson.Fragment(encoded)
            shell.update(_GAPS)
            try:
                pieces = tuple(orjson.dumps(shell, default=_refuse, option=_ORJSON_OPTIONS).split(_GAP))
            except orjson.JSONEncodeError:
                pieces = ()
            if len(pieces) == len(STAMPS) + 1:
                runs = pieces
    return EncodedRecord(record, runs)


def splice(runs: Sequence[bytes], stamps: Sequence[bytes]) -> bytes:
    """The canonical JSON of a record from its runs and the canonical JSON of each of `STAMPS`'
    values, in that order."""
    joined = [runs[0]]
    for stamp, run in zip(stamps, runs[1:], strict=True):
        joined.append(stamp)
        joined.append(run)
    return b"".join(joined)


def part_bytes(value: Any, *, checked: bool = False) -> bytes | None:
    """`canonical_bytes(value)`, or None when the reference encoder refuses it (the sink then
    meets the value itself, and refuses the record as it always did). `checked`: the value is
    known to hold no NaN or infinity (`checked_canonical_bytes`)."""
    try:
        return checked_canonical_bytes(value) if checked else canonical_bytes(value)
    except (TypeError, ValueError):
        return None


def decision_bytes(written: dict[str, Any]) -> bytes | None:
    """`canonical_bytes(written)` for a `ProtectionDecision.to_dict()`, or None when refused."""
    if not _decision_agrees(written):
        return part_bytes(written)  # the reference decides
    try:
        return orjson.dumps(written, default=_refuse, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return part_bytes(written)


def _decision_agrees(written: dict[str, Any]) -> bool:
    if not _number_agrees(written["decision_time_ms"]):
        return False
    for entry in written["trace"]:
        for value in entry["facts"].values():
            kind = type(value)
            if kind is str or kind is int or kind is bool or value is None:
                continue
            if kind is float:
                if not (1e-4 <= abs(value) < _INFINITY or value == 0.0):  # NaN fails both
                    return False
            elif not _orjson_agrees(value):
                return False
    for change in written["state_changes"]:
        if not _number_agrees(change.get("original_size")):
            return False
    return "errors" not in written or _orjson_agrees(written["errors"])


def _number_agrees(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return 1e-4 <= abs(value) < _INFINITY or value == 0.0
    return value is None or kind is int
