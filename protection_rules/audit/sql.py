"""What the SQL audit backends (SQLite, PostgreSQL) share: the row layout (the indexed copies
of body fields stored beside each record's canonical body), checking rows against their bodies,
the record filter as SQL, and `SqlLog`, the reading, finding, verifying and end-of-chain check
written once over that layout."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..canonical import canonical_bytes, sha256_hex
from ..errors import AuditError
from .base import LogFile
from .chain import GENESIS_HASH, ChainEntry, VerifyResult, link_problem, record_instant, record_kind, verify_entries
from .query import ALL_RECORDS, RecordFilter, summarise

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

# The indexes on the copies (both backends; `kind`'s came later in SQLite, with the column)
INDEXES = (
    "CREATE INDEX audit_records_asset ON audit_records (asset, evaluated_us)",
    "CREATE INDEX audit_records_decision ON audit_records (decision)",
    "CREATE INDEX audit_records_evaluated ON audit_records (evaluated_us)",
    "CREATE INDEX audit_records_policy_version ON audit_records (policy_version)",
    "CREATE INDEX audit_records_trace ON audit_records (trace_id)",
)

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
        canonical_bytes(list(record["blocking_systems"])).decode("utf-8"),
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


_STATS_COLUMNS = "decision, blocking_systems, override_applied, decision_time_ms, evaluated_us"


class SqlLog(LogFile):
    """The methods of an audit log kept in `audit_records` rows. A backend sets its parameter
    marker (`mark`), its test that a name is in blocking_systems (`listed`), and provides
    `_select` (rows streamed from one snapshot) and `_read` (work on a connection in one read
    transaction); `_columns`/`_kind` change for an older layout read as it is."""

    mark = "?"
    listed = SQLITE_LISTED
    _columns: Sequence[str] = COLUMNS
    _kind = "kind"

    def _select(self, columns: str, where: str, params: list[Any], convert: Callable[[Any], Any]) -> Iterator[Any]:
        raise NotImplementedError

    def _read(self, work: Callable[[Any], Any]) -> Any:
        raise NotImplementedError

    def _columns_of(self, record: Mapping[str, Any]) -> tuple[Any, ...]:
        """The indexed copies as this backend stores them."""
        return record_columns(record)

    def _entries(self, rows: Iterable[tuple[Any, ...]]) -> Iterator[ChainEntry]:
        return row_entries(rows, self._columns, self._columns_of)

    def _select_entries(self) -> str:
        return f"SELECT sequence, {', '.join(self._columns)}, hash, body FROM audit_records"

    def _chain_end(self, conn: Any) -> tuple[int, str]:
        """The sequence and hash the next record chains onto, once the last record has been
        checked against its content and the record before it."""
        row = conn.execute(f"{self._select_entries()} ORDER BY sequence DESC LIMIT 1").fetchone()
        if row is None:
            return 0, GENESIS_HASH
        (last,) = self._entries([row])
        # Only the last record's own hash is checked: the one before it only has to be linked to.
        near = conn.execute(
            f"SELECT sequence, hash FROM audit_records WHERE sequence < {self.mark} ORDER BY sequence DESC LIMIT 1", (row[0],)
        ).fetchone()
        before = ChainEntry(near[0], None, None, near[1], None, None) if near else None
        broken = link_problem(before, last)
        if broken:
            raise AuditError(
                f"{self.path}: the audit chain is broken at its end: {broken}: nothing was appended: run `protect audit verify`"
            )
        return last.sequence, last.hash or ""

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, all kinds, in sequence order."""
        return self.query()

    def query(self, where: RecordFilter = ALL_RECORDS) -> Iterator[dict[str, Any]]:
        """The records that match `where`, in sequence order."""
        clause, params = where_clause(where, self._kind, mark=self.mark, listed=self.listed)
        return self._select("body, hash, sequence", clause, params, lambda row: load_body(row[0], row[1], row[2], self.path))

    def stats(self, where: RecordFilter = ALL_RECORDS) -> dict[str, Any]:
        """Counts, rates, denials per protection, p50/p99 decision time, overall and per day, of
        the decisions that match `where` (records of other kinds are not decisions)."""
        clause, params = where_clause(where.decisions_only(), self._kind, mark=self.mark, listed=self.listed)
        rows = self._select(_STATS_COLUMNS, clause, params, lambda row: (row[0], json_list(row[1]), bool(row[2]), row[3], row[4]))
        return summarise(rows)

    def find(self, decision_id: str) -> dict[str, Any] | None:
        """The decision record with this id, or None (by the unique index on decision_id).
        Raises AuditError if it does not link to its neighbours in the chain."""
        mark = self.mark

        def lookup(conn: Any) -> tuple[Any, list[Any]] | None:
            row = conn.execute(f"{self._select_entries()} WHERE decision_id = {mark}", (decision_id,)).fetchone()
            if row is None:
                return None
            near = conn.execute(
                f"{self._select_entries()} WHERE sequence IN ({mark}, {mark}) ORDER BY sequence", (row[0] - 1, row[0] + 1)
            )
            return row, near.fetchall()

        found = self._read(lookup)
        if found is None:
            return None
        row, near = found
        entry, before, after = (*self._entries([row]), None, None)
        for neighbour in self._entries(near):
            if neighbour.sequence < entry.sequence:
                before = neighbour
            else:
                after = neighbour
        problem = link_problem(before, entry, after)
        if problem:
            raise AuditError(
                f"{self.path}: the record of decision `{decision_id}` fails the chain check: {problem}: run `protect audit verify`"
            )
        return load_body(row[-1], row[-2], row[0], self.path)

    def verify(self) -> VerifyResult:
        """Check every record's hash, sequence, link and indexed columns (see the package docstring)."""
        rows = self._select(f"sequence, {', '.join(self._columns)}, hash, body", "", [], tuple)
        return verify_entries(self._entries(rows))
