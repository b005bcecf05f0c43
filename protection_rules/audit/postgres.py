"""`PostgresAuditLog`: the audit chain in a PostgreSQL database, one chain for every writer on
every host (see the package docstring, `protection_rules.audit`).

Appends are serialised in the database: each runs in one transaction that first takes a
transaction-level advisory lock (`pg_advisory_xact_lock`, released by the commit or rollback),
then checks the end of the chain, seals the batch onto it and inserts it. The table backs that
up with constraints: `sequence` is the primary key and `prev_hash` is unique, so two records can
never chain onto the same predecessor even if a writer skipped the lock; `decision_id` is unique.
Rows have the SQLite layout (audit/sql.py: the canonical body as TEXT, its hash, indexed copies
of its fields), in a schema versioned in `audit_schema_version`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import AuditError
from ..postgres import POOL_SIZE, Database, lock_key, migrate, redact
from .base import DEFAULT_TIMEOUT, Mode
from .chain import now_iso, seal
from .sql import COLUMNS, INDEXES, SqlLog, record_columns

SCHEMA_TABLE = "audit_schema_version"
_MIGRATIONS = {
    1: (
        """CREATE TABLE audit_records (
            sequence BIGINT PRIMARY KEY CHECK (sequence > 0),
            kind TEXT NOT NULL,
            decision_id TEXT UNIQUE,
            trace_id TEXT,
            evaluated_at TEXT,
            evaluated_us BIGINT,
            asset TEXT,
            action TEXT,
            decision TEXT,
            blocking_systems TEXT,
            override_applied INTEGER,
            policy_name TEXT,
            policy_version TEXT,
            policy_sha256 TEXT,
            decision_time_ms DOUBLE PRECISION,
            recorded_at TEXT NOT NULL,
            prev_hash TEXT NOT NULL UNIQUE,
            hash TEXT NOT NULL,
            body TEXT NOT NULL,
            CHECK (kind <> 'decision' OR (decision_id IS NOT NULL AND decision IS NOT NULL
                   AND blocking_systems IS NOT NULL AND override_applied IS NOT NULL))
        )""",
        *INDEXES,
        "CREATE INDEX audit_records_kind ON audit_records (kind)",
    ),
}
SCHEMA_VERSION = max(_MIGRATIONS)
APPEND_LOCK = lock_key("audit_records")
_INSERT = (
    f"INSERT INTO audit_records (sequence, {', '.join(COLUMNS)}, hash, body) VALUES ({', '.join(['%s'] * (len(COLUMNS) + 3))})"
)
_LISTED = "EXISTS (SELECT 1 FROM jsonb_array_elements_text(audit_records.blocking_systems::jsonb) AS listed(name) WHERE name = ?)"
_FETCH = 500  # rows a reading cursor fetches at a time


def stored_columns(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The indexed copies as PostgreSQL stores them: its text cannot hold NUL, which an invalid
    request may carry (the body keeps it, escaped by canonical JSON); `verify` compares these."""
    return tuple(value.replace("\x00", "\ufffd") if isinstance(value, str) else value for value in record_columns(record))


class PostgresAuditLog(SqlLog):
    """The audit log in PostgreSQL; `path` is the URL without its password.

    `timeout` bounds how long an append waits for other writers (the advisory lock) and for a
    pooled connection. Opening for appending creates or migrates the schema; `mode="read"` needs
    it there already and never writes.
    """

    mark = "%s"
    listed = _LISTED

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        mode: Mode = "append",
        timeout: float = DEFAULT_TIMEOUT,
        pool_size: int = POOL_SIZE,
    ):
        if mode not in ("append", "read"):
            raise ValueError(f"mode must be `append` or `read`, got `{mode}`")
        self.path = redact(url)
        self._clock = clock
        self._mode = mode
        self._timeout = timeout

        def prepare(conn: Any) -> None:
            applied_at = now_iso(clock, self.path) if mode == "append" else None
            migrate(
                conn, table=SCHEMA_TABLE, migrations=_MIGRATIONS, create=mode == "append", fail=self._fail, applied_at=applied_at
            )

        self._db = Database(url, error=AuditError, prepare=prepare, timeout=timeout, pool_size=pool_size)

    def _fail(self, problem: str) -> AuditError:
        return AuditError(f"{self.path}: not a usable audit log: {problem}")

    def close(self) -> None:
        self._db.close()

    def probe(self) -> dict[str, Any]:
        """Reachable: a pooled connection finds the table; writable: opened for appending, and a
        writable transaction finds the end of the chain intact (nothing is written)."""
        return self._db.probe("audit_records", writable=self._mode == "append", check=self._chain_end)

    # -- writing

    def _append(self, batch: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if self._mode == "read":
            raise AuditError(f"{self.path}: the audit log was opened read-only")
        import psycopg

        with self._db.transaction("write the audit log") as conn:
            # lock_timeout bounds the wait for the advisory lock: other writers' appends
            conn.execute(f"SET LOCAL lock_timeout = '{int(self._timeout * 1000)}ms'")
            try:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            except psycopg.errors.LockNotAvailable:
                raise AuditError(
                    f"{self.path}: the audit log is locked by another writer (gave up after {self._timeout:g} s)"
                ) from None
            sequence, prev_hash = self._chain_end(conn)
            sealed = seal(batch, sequence, prev_hash, now_iso(self._clock, self.path), self.path)
            try:
                with conn.cursor() as cursor:
                    cursor.executemany(_INSERT, [(s.sequence, *stored_columns(s.record), s.hash, s.body) for s in sealed])
            except psycopg.errors.UniqueViolation as exc:
                if "decision_id" not in str(exc):
                    raise
                ids = ", ".join(f"`{record['decision_id']}`" for record in batch)
                raise AuditError(f"{self.path}: a decision id of this batch is already in the audit log ({ids})") from None
        return [s.stored for s in sealed]

    def _columns_of(self, record: Mapping[str, Any]) -> tuple[Any, ...]:
        return stored_columns(record)

    # -- reading

    def _read(self, work: Callable[[Any], Any]) -> Any:
        """Run `work` on a pooled connection in one read transaction (one snapshot)."""
        with self._db.transaction("read the audit log") as conn:
            return work(conn)

    def _select(self, columns: str, where: str, params: list[Any], convert: Callable[[Any], Any]) -> Iterator[Any]:
        """Rows streamed through a server-side cursor, in one transaction (one snapshot)."""
        sql = f"SELECT {columns} FROM audit_records {where} ORDER BY sequence"

        def rows() -> Iterator[Any]:
            with self._db.transaction("read the audit log") as conn, conn.cursor(name="audit_read") as cursor:
                cursor.itersize = _FETCH
                cursor.execute(sql, params)
                for row in cursor:
                    yield convert(row)

        return rows()
