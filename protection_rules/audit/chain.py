"""The hash chain both backends share: record kinds, canonical JSON, record hashes, checking and
sealing a batch onto the chain, and checking a stored chain -- all of it or just its end.

The fields each record carries, the stamps the sink adds and what a chain cannot detect are
described in the package docstring (`protection_rules.audit`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..canonical import canonical_bytes, content_hash
from ..errors import AuditError
from ..record_json import RECORD_FIELDS, SINK_FIELDS, EncodedRecord, splice
from ..timestamps import MICROS_PER_SECOND, format_instant, parse_instant

GENESIS_HASH = "0" * 64

# Every record has a `kind`; a record without one (logs written before kinds existed) is a decision.
KINDS = ("decision", "rollback", "state_correction")
# What callers may append with `append_event`; rollback records are written by the sink itself.
EVENT_KINDS = ("state_correction",)
EVENT_FIELDS = {"state_correction": ("asset", "action", "detail", "reason", "at")}

_RECORD_KEYS = frozenset(RECORD_FIELDS)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of checking a log's chain.

    `count` is the number of records in the log (all kinds); `first_bad` the sequence number of
    the first record that fails (None when `ok`, or when the damage has no record to name), with
    its `decision_id` or, for other records, its `kind`; `head` the hash of the last record (None
    for an empty log): keep it elsewhere to detect truncation. `torn_tail` describes the debris of
    an interrupted append that a read-only open left out of the log (see `JsonlAuditLog`).
    """

    ok: bool
    count: int
    first_bad: int | None = None
    decision_id: str | None = None
    kind: str | None = None
    problem: str = ""
    head: str | None = None
    torn_tail: dict[str, Any] | None = None

    def describe(self) -> str:
        if self.ok:
            return f"{self.count} record(s), chain valid{_torn_note(self.torn_tail)}"
        if self.first_bad is None:
            return self.problem
        what = f"decision {self.decision_id}" if self.decision_id else (f"{self.kind} record" if self.kind else "unknown")
        return f"record #{self.first_bad} ({what}): {self.problem}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _torn_note(torn: Mapping[str, Any] | None) -> str:
    if not torn:
        return ""
    return (
        f"; left out an interrupted append at the end ({torn['records']} record(s) in {torn['lines']} line(s), "
        f"{torn['bytes']} bytes, from #{torn['first_sequence']}): the next append rolls it back"
    )


def record_hash(record: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of `record` without its `hash` key."""
    return content_hash({key: value for key, value in record.items() if key != "hash"})


def record_kind(record: Mapping[str, Any]) -> Any:
    """The record's kind: `decision` when it has none (logs written before kinds existed)."""
    return record.get("kind", "decision")


def record_instant(record: Mapping[str, Any]) -> int | None:
    """What time filters compare, in epoch µs: a decision's `evaluated_at`, another record's `at`."""
    text = record.get("evaluated_at") if record_kind(record) == "decision" else record.get("at")
    if text is None:
        return None
    try:
        return parse_instant(text)
    except ValueError:
        return None


# ----------------------------------------------------------------------------------- writing


@dataclass(frozen=True, slots=True)
class Sealed:
    """A record stamped onto the chain: `body` is its canonical JSON without `hash` (what is hashed)."""

    sequence: int
    record: dict[str, Any]
    body: str
    hash: str

    @property
    def stored(self) -> dict[str, Any]:
        return {**self.record, "hash": self.hash}

    @property
    def line(self) -> str:
        return canonical_bytes(self.stored).decode("utf-8") + "\n"


def check_batch(records: Sequence[Mapping[str, Any]], path: str) -> list[Mapping[str, Any]]:
    """Check each decision record's shape before taking any lock; the sink's own fields are replaced."""
    if isinstance(records, Mapping):
        raise AuditError(f"{path}: append takes a sequence of records, not one record")
    batch = list(records)
    for index, record in enumerate(batch, start=1):
        problem = _record_problem(record)
        if problem is not None:  # the place is written only for a record that fails
            raise AuditError(f"{path}: record {index} of {len(batch)}: {problem}")
    return batch


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, Mapping):
        return "not a mapping"
    if not record.keys() >= _RECORD_KEYS:
        missing = [key for key in RECORD_FIELDS if key not in record]
        return f"missing {', '.join(f'`{key}`' for key in missing)}"
    if record["kind"] != "decision":
        return f"`kind` must be `decision` (other records go through append_event), got `{record['kind']}`"
    if not isinstance(record["decision_id"], str) or not record["decision_id"]:
        return "`decision_id` must be a non-empty string"
    if record["decision"] not in ("approve", "deny"):
        return f"`decision` must be `approve` or `deny`, got `{record['decision']}`"
    if not isinstance(record["blocking_systems"], (list, tuple)) or not all(
        isinstance(s, str) for s in record["blocking_systems"]
    ):
        return "`blocking_systems` must be a list of names"
    policy = record["policy"]
    if not isinstance(policy, Mapping) or not {"name", "version", "sha256"} <= policy.keys():
        return "`policy` must hold `name`, `version` and `sha256`"
    if record["evaluated_at"] is not None:
        try:
            parse_instant(record["evaluated_at"])
        except ValueError as exc:
            return f"`evaluated_at`: {exc}"
    return None


def check_event(kind: str, fields: Mapping[str, Any], path: str) -> dict[str, Any]:
    """A record of another kind than decision, checked; the sink's own fields are replaced."""
    if kind not in EVENT_KINDS:
        kinds = ", ".join(f"`{name}`" for name in EVENT_KINDS)
        raise AuditError(f"{path}: an event's kind must be one of {kinds}, got `{kind}`")
    where = f"{path}: {kind} record"
    if not isinstance(fields, Mapping):
        raise AuditError(f"{where}: the fields must be a mapping")
    if "kind" in fields:
        raise AuditError(f"{where}: `kind` is given as the first argument, not among the fields")
    missing = [key for key in EVENT_FIELDS[kind] if key not in fields]
    if missing:
        raise AuditError(f"{where}: missing {', '.join(f'`{key}`' for key in missing)}")
    for key in ("asset", "action", "reason"):
        if not isinstance(fields[key], str) or not fields[key].strip():
            raise AuditError(f"{where}: `{key}` must be a non-empty string")
    _check_instant(fields["at"], f"{where}: `at`")
    return {"kind": kind, **fields}


def _check_instant(value: Any, where: str) -> None:
    try:
        parse_instant(value)
    except ValueError as exc:
        raise AuditError(f"{where}: {exc}") from None


def seal(batch: Sequence[Mapping[str, Any]], sequence: int, prev_hash: str, recorded_at: str, path: str) -> list[Sealed]:
    """Stamp the batch onto the chain after record #`sequence` (hash `prev_hash`): each record gets
    its sequence, `recorded_at`, `prev_hash` and `batch` = {"first", "size"} (how a reader finds
    batch boundaries). Raises AuditError, writing nothing, if a record is not JSON."""
    stamp = {"first": sequence + 1, "size": len(batch)}
    batch_json, recorded_json = canonical_bytes(stamp), canonical_bytes(recorded_at)
    sealed = []
    for index, record in enumerate(batch, start=1):
        sequence += 1
        if record.keys().isdisjoint(SINK_FIELDS):  # the engine's records: a plain copy, in C
            full = dict(record)
            runs = record.runs if type(record) is EncodedRecord else None
        else:
            full = {key: value for key, value in record.items() if key not in SINK_FIELDS}
            runs = None
        full.update(sequence=sequence, recorded_at=recorded_at, prev_hash=prev_hash, batch=dict(stamp))
        try:
            # UTF-8 encoding fails on a lone surrogate: a ValueError too
            if runs is not None:  # written by the engine where it built the record: put the stamps in
                encoded = splice(runs, (batch_json, canonical_bytes(prev_hash), recorded_json, b"%d" % sequence))
            else:
                encoded = canonical_bytes(full)
            prev_hash = hashlib.sha256(encoded).hexdigest()
            body = encoded.decode("utf-8")
        except (TypeError, ValueError) as exc:
            name = f"decision `{record['decision_id']}`" if "decision_id" in record else f"a {record_kind(record)} record"
            raise AuditError(
                f"{path}: record {index} of {len(batch)} ({name}) is not valid JSON: {exc}; nothing of this batch was written"
            ) from None
        sealed.append(Sealed(sequence, full, body, prev_hash))
    return sealed


def now_iso(clock: Callable[[], float], path: str) -> str:
    """The injected clock's time as an ISO UTC instant; AuditError if the clock is unusable."""
    try:
        return format_instant(round(clock() * MICROS_PER_SECOND))
    except (TypeError, ValueError, OverflowError) as exc:
        raise AuditError(f"{path}: the clock returned an unusable time: {exc}") from None


# ---------------------------------------------------------------------------------- checking


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """One stored record as the chain checks see it; `problem` is what is wrong with it on its
    own (content not matching its hash, a missing sequence...), as the backend found it."""

    sequence: int
    decision_id: str | None
    kind: str | None
    hash: str | None
    prev_hash: str | None
    problem: str | None


def verify_entries(entries: Iterable[ChainEntry]) -> VerifyResult:
    """Check a whole chain from its first record: contiguous sequence, each link, each record."""
    count = 0
    bad: ChainEntry | None = None
    problem = ""
    prev_hash = GENESIS_HASH
    head = None
    for entry in entries:
        count += 1
        if bad is None:
            found = entry.problem
            if found is None and entry.sequence != count:
                after = f"#{count - 1}" if count > 1 else "the start of the log"
                found = f"expected #{count} after {after}, found #{entry.sequence}: records deleted or reordered"
            if found is None and entry.prev_hash != prev_hash:
                before = f"record #{count - 1}" if count > 1 else "the start of the chain"
                found = f"prev_hash does not match {before} (a record before it was changed, removed or reordered)"
            if found is not None:
                bad, problem = entry, found
        prev_hash = entry.hash or ""
        head = entry.hash
    if bad is None:
        return VerifyResult(ok=True, count=count, head=head)
    return VerifyResult(
        ok=False, count=count, first_bad=bad.sequence, decision_id=bad.decision_id, kind=bad.kind, problem=problem, head=head
    )


def link_problem(before: ChainEntry | None, entry: ChainEntry, after: ChainEntry | None = None) -> str | None:
    """What is wrong with `entry` and its links to its neighbours (`before` None: it must be #1).

    This is what an append checks of the record it chains onto, and what `find` checks of the
    record it returns: O(1), unlike `verify`, which re-hashes the whole log."""
    if entry.problem is not None:
        return f"record #{entry.sequence}: {entry.problem}"
    expected = (before.sequence + 1, before.hash) if before is not None else (1, GENESIS_HASH)
    if entry.sequence != expected[0]:
        return f"record #{entry.sequence} follows {f'#{before.sequence}' if before else 'the start of the log'}: records deleted or reordered"
    if entry.prev_hash != expected[1]:
        return f"record #{entry.sequence}: prev_hash does not match the record before it"
    if after is not None and (after.sequence != entry.sequence + 1 or after.prev_hash != entry.hash):
        return f"record #{after.sequence} does not link to record #{entry.sequence}"
    return None
