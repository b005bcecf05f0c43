"""`SqliteAuditLog`: the default audit backend, one SQLite file in WAL mode, with its schema and
migrations (see the package docstring, `protection_rules.audit`)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import AuditError
from ..probing import probe_result, probe_sqlite
from .base import DEFAULT_TIMEOUT, Mode, make_parent
from .chain import (
    now_iso,
    seal,
)
from .sql import COLUMNS, INDEXES, V1_COLUMNS, SqlLog, record_columns

SCHEMA_VERSION = 2
# Pages of new logs: a record is ~3 KB, so with SQLite's default 4 KB pages a batch of 1,000
# writes ~3,700 WAL frames, one pwrite each, and reads back ~1,700 pages; 16 KB pages cut both
# by ~5x (counted with `strace -c`). A log created with other pages keeps them.
PAGE_SIZE = 16384


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
        *INDEXES,
    ),
    # Records of other kinds: the table is rebuilt (SQLite cannot drop a NOT NULL) with `kind`
    # and the decision-only columns nullable; a decision still needs them, and its id stays
    # UNIQUE (NULL ids of other records do not collide). Bodies and hashes are copied unchanged.
    2: (
        """CREATE TABLE audit_records_v2 (
            sequence INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            decision_id TEXT UNIQUE,
            trace_id TEXT,
            evaluated_at TEXT,
            evaluated_us INTEGER,
            asset TEXT,
            action TEXT,
            decision TEXT,
            blocking_systems TEXT,
            override_applied INTEGER,
            policy_name TEXT,
            policy_version TEXT,
            policy_sha256 TEXT,
            decision_time_ms REAL,
            recorded_at TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            body TEXT NOT NULL,
            CHECK (kind <> 'decision' OR (decision_id IS NOT NULL AND decision IS NOT NULL
                   AND blocking_systems IS NOT NULL AND override_applied IS NOT NULL))
        )""",
        f"""INSERT INTO audit_records_v2 (sequence, kind, {", ".join(V1_COLUMNS)}, hash, body)
            SELECT sequence, 'decision', {", ".join(V1_COLUMNS)}, hash, body FROM audit_records""",
        "DROP TABLE audit_records",
        "ALTER TABLE audit_records_v2 RENAME TO audit_records",
        *INDEXES,
        "CREATE INDEX audit_records_kind ON audit_records (kind)",
    ),
}
_TABLES = {"schema_version", "audit_records"}
_INSERT = f"INSERT INTO audit_records (sequence, {', '.join(COLUMNS)}, hash, body) VALUES ({', '.join('?' * (len(COLUMNS) + 3))})"


class SqliteAuditLog(SqlLog):
    """The default sink: an embedded SQLite audit log (see the package docstring).

    Opening for appending migrates an older schema in place; a read-only open reads version 1
    files as they are (every record a decision) and never writes.
    """

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
        self._columns, self._kind = COLUMNS, "kind"
        if mode == "append":
            make_parent(self.path)
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

    def probe(self) -> dict[str, Any]:
        """Reachable: the file opens anew and is an audit log we know; writable: opened for
        appending, and a write transaction starts and finds the end of the chain intact (then
        rolls back: nothing is written)."""
        if self._conn is None:
            return probe_result(False, False, f"{self.path}: the audit log is closed")

        def end(conn: sqlite3.Connection) -> None:
            self._chain_end(conn)

        return probe_sqlite(
            self.path, table="schema_version", read=self._schema_version, write=end if self._mode == "append" else None
        )

    # -- writing

    def _append(self, batch: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:
            conn = self._writer()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc, "write the audit log") from exc
            try:
                sequence, prev_hash = self._chain_end(conn)
                sealed = seal(batch, sequence, prev_hash, now_iso(self._clock, self.path), self.path)
                conn.executemany(_INSERT, [(s.sequence, *record_columns(s.record), s.hash, s.body) for s in sealed])
                conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(conn)
                if isinstance(exc, sqlite3.IntegrityError) and "decision_id" in str(exc):
                    ids = ", ".join(f"`{record['decision_id']}`" for record in batch)
                    raise AuditError(f"{self.path}: a decision id of this batch is already in the audit log ({ids})") from exc
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc, "write the audit log") from exc
                raise
        return [s.stored for s in sealed]

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
            self._columns, self._kind = V1_COLUMNS, "'decision'"  # version 1: decisions only
            return
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only on a file not yet written
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
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (step, now_iso(self._clock, self.path))
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

    def _read(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `work` on a read-only connection of its own, in one read transaction (one snapshot)."""
        if self._conn is None:
            raise AuditError(f"{self.path}: the audit log is closed")
        try:
            conn = self._connect(readonly=True)
        except sqlite3.Error as exc:
            raise self._error(exc, "read the audit log") from exc
        try:
            conn.execute("BEGIN")
            return work(conn)
        except sqlite3.Error as exc:
            raise self._error(exc, "read the audit log") from exc
        finally:
            conn.close()

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


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the transaction is gone with the failure that brought us here
