"""The hash chain both backends share: canonical JSON, record hashes, checking and sealing a
batch onto the chain, and verifying a stored chain row by row.

The fields each record carries, the stamps the sink adds and what a chain cannot detect are
described in the package docstring (`protection_rules.audit`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import AuditError
from ..timestamps import MICROS_PER_SECOND, format_instant, parse_instant

GENESIS_HASH = "0" * 64

# What the engine passes in, one dict per decision; the sink adds sequence, recorded_at,
# prev_hash and hash (a record that carries those has them replaced).
RECORD_FIELDS = (
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
SINK_FIELDS = ("sequence", "recorded_at", "prev_hash", "hash")


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of checking a log's chain.

    `count` is the number of records in the log; `first_bad` the sequence number of the first
    record that fails (None when `ok`, or when the damage has no record to name); `head` the
    hash of the last record (None for an empty log): keep it elsewhere to detect truncation.
    """

    ok: bool
    count: int
    first_bad: int | None = None
    decision_id: str | None = None
    problem: str = ""
    head: str | None = None

    def describe(self) -> str:
        if self.ok:
            return f"{self.count} record(s), chain valid"
        if self.first_bad is None:
            return self.problem
        return f"record #{self.first_bad} (decision {self.decision_id or 'unknown'}): {self.problem}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed and stored; raises ValueError/TypeError if not JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_hash(record: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of `record` without its `hash` key."""
    body = canonical_json({key: value for key, value in record.items() if key != "hash"})
    return _sha256(body)


@dataclass(frozen=True, slots=True)
class _Sealed:
    sequence: int
    record: dict[str, Any]
    body: str  # canonical JSON without `hash` (hashed; the SQLite body column)
    hash: str

    @property
    def line(self) -> str:
        return canonical_json({**self.record, "hash": self.hash}) + "\n"


@dataclass(frozen=True, slots=True)
class _Entry:
    """One stored record as `verify` sees it; `problem` is what is wrong with it on its own."""

    sequence: int
    decision_id: str | None
    hash: str | None
    prev_hash: str | None
    problem: str | None


def _verify_rows(entries: Iterable[_Entry]) -> VerifyResult:
    count = 0
    bad: tuple[int | None, str | None, str] | None = None
    prev_hash = GENESIS_HASH
    head = None
    for entry in entries:
        count += 1
        if bad is None:
            problem = entry.problem
            if problem is None and entry.sequence != count:
                after = f"#{count - 1}" if count > 1 else "the start of the log"
                problem = f"expected #{count} after {after}, found #{entry.sequence}: records deleted or reordered"
            if problem is None and entry.prev_hash != prev_hash:
                before = f"record #{count - 1}" if count > 1 else "the start of the chain"
                problem = f"prev_hash does not match {before} (a record before it was changed, removed or reordered)"
            if problem is not None:
                bad = (entry.sequence, entry.decision_id, problem)
        prev_hash = entry.hash or ""
        head = entry.hash
    if bad is None:
        return VerifyResult(ok=True, count=count, head=head)
    return VerifyResult(ok=False, count=count, first_bad=bad[0], decision_id=bad[1], problem=bad[2], head=head)


def _checked_batch(records: Sequence[Mapping[str, Any]], path: str) -> list[Mapping[str, Any]]:
    """Check each record's shape before taking any lock; the sink's own fields are replaced."""
    if isinstance(records, Mapping):
        raise AuditError(f"{path}: append takes a sequence of records, not one record")
    batch = list(records)
    for index, record in enumerate(batch, start=1):
        where = f"{path}: record {index} of {len(batch)}"
        if not isinstance(record, Mapping):
            raise AuditError(f"{where}: not a mapping")
        missing = [key for key in RECORD_FIELDS if key not in record]
        if missing:
            raise AuditError(f"{where}: missing {', '.join(f'`{key}`' for key in missing)}")
        if not isinstance(record["decision_id"], str) or not record["decision_id"]:
            raise AuditError(f"{where}: `decision_id` must be a non-empty string")
        if record["decision"] not in ("approve", "deny"):
            raise AuditError(f"{where}: `decision` must be `approve` or `deny`, got `{record['decision']}`")
        if not isinstance(record["blocking_systems"], (list, tuple)) or not all(
            isinstance(s, str) for s in record["blocking_systems"]
        ):
            raise AuditError(f"{where}: `blocking_systems` must be a list of names")
        policy = record["policy"]
        if not isinstance(policy, Mapping) or not {"name", "version", "sha256"} <= set(policy):
            raise AuditError(f"{where}: `policy` must hold `name`, `version` and `sha256`")
        if record["evaluated_at"] is not None:
            try:
                parse_instant(record["evaluated_at"])
            except ValueError as exc:
                raise AuditError(f"{where}: `evaluated_at`: {exc}") from None
    return batch


def _seal(batch: list[Mapping[str, Any]], sequence: int, prev_hash: str, recorded_at: str, path: str) -> list[_Sealed]:
    sealed = []
    for index, record in enumerate(batch, start=1):
        sequence += 1
        full = {key: value for key, value in record.items() if key not in SINK_FIELDS}
        full.update(sequence=sequence, recorded_at=recorded_at, prev_hash=prev_hash)
        try:
            body = canonical_json(full)
            prev_hash = _sha256(body)  # UTF-8 encoding fails on a lone surrogate: a ValueError too
        except (TypeError, ValueError) as exc:
            raise AuditError(
                f"{path}: record {index} of {len(batch)} (decision `{record['decision_id']}`) is not valid JSON: {exc}; "
                "nothing of this batch was written"
            ) from None
        sealed.append(_Sealed(sequence, full, body, prev_hash))
    return sealed


def _now(clock: Callable[[], float], path: str) -> str:
    try:
        return format_instant(round(clock() * MICROS_PER_SECOND))
    except (TypeError, ValueError, OverflowError) as exc:
        raise AuditError(f"{path}: the clock returned an unusable time: {exc}") from None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
