"""`SqliteAuditLog`: the default audit backend, one SQLite file in WAL mode, with its schema and
migrations (see the package docstring, `protection_rules.audit`)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import AuditError
from .base import DEFAULT_TIMEOUT, LogFile, Mode, _make_parent
from .chain import (
    GENESIS_HASH,
    VerifyResult,
    _checked_batch,
    _Entry,
    _now,
    _seal,
    _sha256,
    _verify_rows,
    canonical_json,
)
from .query import _Filter, _micros, _summarise

SCHEMA_VERSION = 1

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE audit_records (
            sequence INTEGER PRIMARY KEY,
            decision_id TEXT NOT NULL UNIQUE,
            trace_id TEXT,
            evaluated_at TEXT,
            evaluated_us INTEGER,
            asset TEXT,
            action TEXT,
            decision TEXT NOT NULL,
            blocking_systems TEXT NOT NULL,
            override_applied INTEGER NOT NULL,
            policy_name TEXT,
            policy_version TEXT,
            policy_sha256 TEXT,
            decision_time_ms REAL,
            recorded_at TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX audit_records_asset ON audit_records (asset, evaluated_us)",
        "CREATE INDEX audit_records_decision ON audit_records (decision)",
        "CREATE INDEX audit_records_evaluated ON audit_records (evaluated_us)",
        "CREATE INDEX audit_records_policy_version ON audit_records (policy_version)",
        "CREATE INDEX audit_records_trace ON audit_records (trace_id)",
    ),
}
_TABLES = {"schema_version", "audit_records"}

# The indexed copies of body fields, in table order; `verify` recomputes them from the body.
_COLUMNS = (
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
_INSERT = (
    f"INSERT INTO audit_records (sequence, {', '.join(_COLUMNS)}, hash, body) VALUES ({', '.join('?' * (len(_COLUMNS) + 3))})"
)
_STATS_COLUMNS = "decision, blocking_systems, override_applied, decision_time_ms, evaluated_us"


class SqliteAuditLog(LogFile):
    """The default sink: an embedded SQLite audit log (see the package docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        mode: Mode = "append",
        timeout: float = DEFAULT_TIMEOUT,
    ):
        if mode not in ("append", "read"):
            raise ValueError(f"mode must be `append` or `read`, got `{mode}`")
        self.path = str(path)
        self._clock = clock
        self._mode = mode
        self._timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        if mode == "append":
            _make_parent(self.path)
        elif not os.path.lexists(self.path):
            raise AuditError(f"{self.path}: no such audit log")
        try:
            self._conn = self._connect(readonly=mode == "read")
            self._prepare(self._conn)
        except sqlite3.Error as exc:
            self.close()
            raise self._error(exc, "open the audit log") from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- writing

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        batch = _checked_batch(records, self.path)
        if not batch:
            return
        with self._lock:
            conn = self._writer()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc, "write the audit log") from exc
            try:
                last = conn.execute("SELECT sequence, hash FROM audit_records ORDER BY sequence DESC LIMIT 1").fetchone()
                sequence, prev_hash = last if last else (0, GENESIS_HASH)
                sealed = _seal(batch, sequence, prev_hash, _now(self._clock, self.path), self.path)
                conn.executemany(_INSERT, [(s.sequence, *_columns(s.record), s.hash, s.body) for s in sealed])
                conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(conn)
                if isinstance(exc, sqlite3.IntegrityError) and "decision_id" in str(exc):
                    ids = ", ".join(f"`{record['decision_id']}`" for record in batch)
                    raise AuditError(f"{self.path}: a decision id of this batch is already in the audit log ({ids})") from exc
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc, "write the audit log") from exc
                raise

    # -- reading

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, in sequence order."""
        return self._select("body, hash, sequence", "", [], lambda row: _load(row[0], row[1], row[2], self.path))

    def query(
        self,
        *,
        asset: str | None = None,
        decision: str | None = None,
        blocking_system: str | None = None,
        policy_version: str | None = None,
        since: str | None = None,
        until: str | None = None,
        trace_id: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The records that match every given filter (see `_Filter`), in sequence order."""
        where, params = _Filter.build(asset, decision, blocking_system, policy_version, since, until, trace_id).sql()
        return self._select("body, hash, sequence", where, params, lambda row: _load(row[0], row[1], row[2], self.path))

    def stats(self, **filters: Any) -> dict[str, Any]:
        """Counts, rates, denials per protection, p50/p99 decision time, overall and per day."""
        where, params = _Filter.build(**filters).sql()
        rows = self._select(_STATS_COLUMNS, where, params, lambda row: (row[0], _json_list(row[1]), bool(row[2]), row[3], row[4]))
        return _summarise(rows)

    def verify(self) -> VerifyResult:
        """Check every record's hash, sequence, link and indexed columns (see the package docstring)."""
        columns = f"sequence, {', '.join(_COLUMNS)}, hash, body"
        rows = self._select(columns, "", [], tuple)
        return _verify_rows(_sqlite_entries(rows))

    # -- internals

    def _connect(self, *, readonly: bool) -> sqlite3.Connection:
        if readonly:
            target, uri = Path(self.path).absolute().as_uri() + "?mode=ro", True
        else:
            target, uri = self.path, False
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE). Sharing one connection
        # between threads is safe because every use holds self._lock.
        conn = sqlite3.connect(target, timeout=self._timeout, isolation_level=None, check_same_thread=False, uri=uri)
        if not readonly:
            try:
                conn.execute("PRAGMA synchronous=FULL")  # a returned append survives a power cut
            except BaseException:
                conn.close()  # not a database: the caller never gets this connection to close
                raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check the file is an audit log of a version we know; create or migrate it if needed."""
        version = self._schema_version(conn)
        if version == SCHEMA_VERSION:
            return
        if self._mode == "read":
            if version is None:
                raise AuditError(f"{self.path}: not an audit log: an empty SQLite database")
            raise AuditError(
                f"{self.path}: audit log schema version {version} needs migrating to {SCHEMA_VERSION}: open it for writing first"
            )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._schema_version(conn) or 0  # another process may have got here first
            if version == 0:
                conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (step, _now(self._clock, self.path))
                )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _schema_version(self, conn: sqlite3.Connection) -> int | None:
        """None for a fresh (table-less) database; raises AuditError for anything not ours."""
        tables = {
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        }
        if not tables:
            return None
        if "schema_version" not in tables:
            listed = ", ".join(f"`{name}`" for name in sorted(tables))
            raise AuditError(f"{self.path}: not an audit log: a SQLite database with other tables ({listed})")
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if not isinstance(version, int):
            raise AuditError(f"{self.path}: not an audit log: the schema_version table is empty")
        if version > SCHEMA_VERSION:
            raise AuditError(
                f"{self.path}: audit log schema version {version} is newer than this protection-rules supports ({SCHEMA_VERSION})"
            )
        if tables - _TABLES:
            listed = ", ".join(f"`{name}`" for name in sorted(tables - _TABLES))
            raise AuditError(f"{self.path}: not an audit log: a SQLite database with other tables ({listed})")
        if "audit_records" not in tables:
            raise AuditError(f"{self.path}: damaged audit log: the audit_records table is missing")
        return version

    def _writer(self) -> sqlite3.Connection:
        if self._conn is None:
            raise AuditError(f"{self.path}: the audit log is closed")
        if self._mode == "read":
            raise AuditError(f"{self.path}: the audit log was opened read-only")
        return self._conn

    def _select(self, columns: str, where: str, params: list[Any], convert: Callable[[Any], Any]) -> Iterator[Any]:
        # Each reader has its own connection: a generator cannot hold self._lock between yields,
        # and one SELECT reads one consistent snapshot of the WAL.
        if self._conn is None:
            raise AuditError(f"{self.path}: the audit log is closed")
        sql = f"SELECT {columns} FROM audit_records {where} ORDER BY sequence"

        def rows() -> Iterator[Any]:
            try:
                conn = self._connect(readonly=True)
            except sqlite3.Error as exc:
                raise self._error(exc, "read the audit log") from exc
            try:
                for row in conn.execute(sql, params):
                    yield convert(row)
            except sqlite3.Error as exc:
                raise self._error(exc, "read the audit log") from exc
            finally:
                conn.close()

        return rows()

    def _error(self, exc: sqlite3.Error, doing: str) -> AuditError:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        reason = {
            sqlite3.SQLITE_NOTADB: "not an audit log: not a SQLite database",
            sqlite3.SQLITE_CORRUPT: f"damaged audit log: {exc}",
            sqlite3.SQLITE_BUSY: f"the audit log is locked by another writer (gave up after {self._timeout:g} s)",
            sqlite3.SQLITE_LOCKED: f"the audit log is locked by another writer (gave up after {self._timeout:g} s)",
            sqlite3.SQLITE_FULL: f"cannot {doing}: the disk is full",
            sqlite3.SQLITE_READONLY: f"cannot {doing}: the file or its folder is read-only",
            sqlite3.SQLITE_CANTOPEN: f"cannot {doing}: {exc} (is it a folder, or its folder unwritable?)",
            sqlite3.SQLITE_PERM: f"cannot {doing}: permission denied",
        }.get(primary, f"cannot {doing}: {exc}")
        return AuditError(f"{self.path}: {reason}")


def _sqlite_entries(rows: Iterable[tuple[Any, ...]]) -> Iterator[_Entry]:
    """Turn stored rows into entries for `_verify_rows`, checking the columns against the body."""
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
        if problem is None and _sha256(body) != stored_hash:
            problem = "the hash does not match the record's content (the record was changed)"
        if problem is None:
            try:
                expected = _columns(record)
            except (KeyError, TypeError, ValueError, AttributeError):
                problem = "the stored body lacks audit fields (the record was changed)"
            else:
                for name, have, want in zip(_COLUMNS, columns, expected, strict=True):
                    if have != want:
                        problem = f"column `{name}` holds `{have}` but the record says `{want}` (the row was edited)"
                        break
        decision_id = record.get("decision_id") if isinstance(record, dict) else columns[0]
        claimed = record.get("sequence") if isinstance(record, dict) else sequence
        if problem is None and claimed != sequence:
            problem = f"stored as #{sequence} but the record says it is #{claimed} (records reordered or renumbered)"
        yield _Entry(sequence, decision_id, stored_hash, record.get("prev_hash") if isinstance(record, dict) else None, problem)


def _columns(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The indexed copies stored beside the body, in `_COLUMNS` order."""
    policy = record["policy"]
    return (
        record["decision_id"],
        record["trace_id"],
        record["evaluated_at"],
        _micros(record["evaluated_at"]),
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


def _load(body: str, stored_hash: str, sequence: int, path: str) -> dict[str, Any]:
    try:
        record = json.loads(body)
    except ValueError:
        raise AuditError(f"{path}: record #{sequence} is not valid JSON (run `protect audit verify`)") from None
    record["hash"] = stored_hash
    return record


def _json_list(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the transaction is gone with the failure that brought us here
