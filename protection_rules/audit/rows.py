"""The row layout both SQL audit backends share (SQLite, PostgreSQL): the indexed copies of
body fields stored beside each record's canonical body, checking rows against their bodies, and
the record filter as SQL."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..canonical import canonical_json, sha256_hex
from ..errors import AuditError
from .chain import ChainEntry, record_instant, record_kind
from .query import RecordFilter

# The indexed copies of body fields in a version 1 table (decisions only).
V1_COLUMNS = (
    "decision_id",
    "trace_id",
    "evaluated_at",
    "evaluated_us",
    "asset",
    "action",
    "decision",
    "blocking_systems",
    "override_applied",
    "policy_name",
    "policy_version",
    "policy_sha256",
    "decision_time_ms",
    "recorded_at",
    "prev_hash",
)
# Version 2 adds `kind`; `evaluated_us` holds the record's instant (`record_instant`: a decision's
# evaluated_at, another record's at), which time filters compare. `verify` recomputes every
# column from the body.
COLUMNS = ("kind", *V1_COLUMNS)

# Whether the `?` is among a row's blocking systems (a JSON list as text), in SQLite's words.
SQLITE_LISTED = "EXISTS (SELECT 1 FROM json_each(audit_records.blocking_systems) WHERE value = ?)"


def row_entries(
    rows: Iterable[tuple[Any, ...]],
    names: Sequence[str],
    columns_of: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = None,
) -> Iterator[ChainEntry]:
    """Stored rows (sequence, the columns `names`, hash, body) as the chain checks see them,
    with the columns checked against the body."""
    for row in rows:
        sequence, columns, stored_hash, body = row[0], row[1:-2], row[-2], row[-1]
        problem = None
        record: Any = None
        try:
            record = json.loads(body)
        except (TypeError, ValueError):
            problem = "the stored body is not valid JSON (the record was changed)"
        if problem is None and not isinstance(record, dict):
            problem = "the stored body is not a JSON object (the record was changed)"
        if problem is None and sha256_hex(body) != stored_hash:
            problem = "the hash does not match the record's content (the record was changed)"
        if problem is None:
            try:
                expected = (columns_of or record_columns)(record)[len(COLUMNS) - len(names) :]
            except (KeyError, TypeError, ValueError, AttributeError):
                problem = "the stored body lacks audit fields (the record was changed)"
            else:
                for name, have, want in zip(names, columns, expected, strict=True):
                    if have != want:
                        problem = f"column `{name}` holds `{have}` but the record says `{want}` (the row was edited)"
                        break
        if not isinstance(record, dict):
            kind = columns[0] if names[0] == "kind" else "decision"
            decision_id = columns[names.index("decision_id")]
            yield ChainEntry(sequence, decision_id, kind, stored_hash, None, problem)
            continue
        claimed = record.get("sequence")
        if problem is None and claimed != sequence:
            problem = f"stored as #{sequence} but the record says it is #{claimed} (records reordered or renumbered)"
        kind = record_kind(record)
        yield ChainEntry(
            sequence,
            record.get("decision_id"),
            kind if isinstance(kind, str) else None,
            stored_hash,
            record.get("prev_hash"),
            problem,
        )


def record_columns(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The indexed copies stored beside the body, in `COLUMNS` order."""
    kind = record_kind(record)
    if kind != "decision":
        asset, action = record.get("asset"), record.get("action")
        return (
            kind,
            *(None,) * 3,
            record_instant(record),
            asset if isinstance(asset, str) else None,
            action if isinstance(action, str) else None,
            *(None,) * 7,
            record["recorded_at"],
            record["prev_hash"],
        )
    policy = record["policy"]
    return (
        "decision",
        record["decision_id"],
        record["trace_id"],
        record["evaluated_at"],
        record_instant(record),
        record["asset"],
        record["action"],
        record["decision"],
        canonical_json(list(record["blocking_systems"])),
        int(bool(record["override_applied"])),
        policy["name"],
        policy["version"],
        policy["sha256"],
        record["decision_time_ms"],
        record["recorded_at"],
        record["prev_hash"],
    )


def where_clause(where: RecordFilter, kind: str, *, mark: str = "?", listed: str = SQLITE_LISTED) -> tuple[str, list[Any]]:
    """The filter as an SQL WHERE clause; `kind` is the kind column (a constant for version 1),
    `mark` the driver's parameter marker, `listed` the test that a name is in blocking_systems."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        (kind, where.kind),
        ("asset", where.asset),
        ("decision", where.decision),
        ("policy_version", where.policy_version),
        ("trace_id", where.trace_id),
    ):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    if where.blocking_system is not None:
        clauses.append(listed.replace("?", mark))
        params.append(where.blocking_system)
    if where.since_us is not None:
        clauses.append(f"evaluated_us >= {mark}")
        params.append(where.since_us)
    if where.until_us is not None:
        clauses.append(f"evaluated_us < {mark}")
        params.append(where.until_us)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


def load_body(body: str, stored_hash: str, sequence: int, path: str) -> dict[str, Any]:
    try:
        record = json.loads(body)
    except ValueError:
        raise AuditError(f"{path}: record #{sequence} is not valid JSON (run `protect audit verify`)") from None
    record["hash"] = stored_hash
    return record


def json_list(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return value if isinstance(value, list) else []
