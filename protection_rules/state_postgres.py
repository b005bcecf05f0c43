"""`PostgresStateStore`: the state store contract (state.py, tests/test_state.py) in a PostgreSQL
database shared by every process and host that decides, so a close recorded on one host starts
the holding clock everywhere.

Tables are prefixed `state_` (the audit log may share the database); the schema is versioned in
`state_schema_version` and migrated by `postgres.migrate`. `apply` is idempotent by decision id
under concurrency: the id's row in `state_applied` is inserted first in the same transaction, so
of two connections committing one decision, the second waits on the first's row and then finds
it there, changing nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from .errors import StateError
from .models import AssetState, CoreDesignation, GraceState, PositionEvent, StateChange
from .postgres import POOL_SIZE, Database, migrate, redact
from .state import CoreRecord, StoredEvent, check_input

SCHEMA_TABLE = "state_schema_version"
_MIGRATIONS = {
    1: (
        """CREATE TABLE state_core (
            asset TEXT PRIMARY KEY, designated_at BIGINT NOT NULL, expires_at BIGINT,
            extensions INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '')""",
        "CREATE TABLE state_grace (asset TEXT PRIMARY KEY, started_at BIGINT NOT NULL, original_size DOUBLE PRECISION)",
        """CREATE TABLE state_events (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, asset TEXT NOT NULL,
            type TEXT NOT NULL CHECK (type IN ('open', 'close')), at BIGINT NOT NULL, size DOUBLE PRECISION)""",
        "CREATE INDEX state_events_asset ON state_events (asset, at)",
        "CREATE TABLE state_overrides (asset TEXT PRIMARY KEY, last_override_at BIGINT NOT NULL)",
        "CREATE TABLE state_applied (decision_id TEXT PRIMARY KEY)",
    ),
}
SCHEMA_VERSION = max(_MIGRATIONS)
_CORE = "SELECT asset, designated_at, expires_at, extensions, reason FROM state_core"
_EVENTS = "SELECT id, asset, type, at, size FROM state_events WHERE asset = %s ORDER BY at, id"


class PostgresStateStore:
    """The state store in PostgreSQL; `path` is the URL without its password."""

    def __init__(self, url: str, *, create: bool = True, pool_size: int = POOL_SIZE):
        self.path = redact(url)
        self._url = url

        def prepare(conn: Any) -> None:
            migrate(conn, table=SCHEMA_TABLE, migrations=_MIGRATIONS, create=create, fail=self._fail)

        self._db = Database(url, error=StateError, prepare=prepare, prefix="state store ", pool_size=pool_size)

    @property
    def target(self) -> str:
        """The URL, with its password, that `open_state` opens this store from again (a worker
        process does); never shown: `path` is the one to print."""
        return self._url

    def _fail(self, problem: str) -> StateError:
        return StateError(f"state store {self.path}: {problem}")

    def _read(self, sql: str, args: Iterable[object] = ()) -> list[tuple]:
        with self._db.transaction("read") as conn:
            return conn.execute(sql, tuple(args)).fetchall()

    def _write(self, statements: list[tuple[str, tuple]]) -> None:
        with self._db.transaction("write") as conn:
            for sql, args in statements:
                conn.execute(sql, args)

    def load(self, asset: str) -> AssetState | None:
        # one transaction, REPEATABLE READ: the four tables as of one instant
        with self._db.transaction("read") as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            core = conn.execute(f"{_CORE} WHERE asset = %s", (asset,)).fetchone()
            grace = conn.execute("SELECT started_at, original_size FROM state_grace WHERE asset = %s", (asset,)).fetchone()
            events = conn.execute(_EVENTS, (asset,)).fetchall()
            override = conn.execute("SELECT last_override_at FROM state_overrides WHERE asset = %s", (asset,)).fetchone()
        state = AssetState(
            core=CoreDesignation(core[1], core[2]) if core else None,
            grace=GraceState(*grace) if grace else None,
            events=tuple(PositionEvent(row[2], row[3], row[4]) for row in events),
            last_override_at=override[0] if override else None,
        )
        return None if state == AssetState() else state

    def apply(self, changes: Sequence[StateChange], decision_id: str) -> bool:
        with self._db.transaction("write") as conn:
            claimed = conn.execute(
                "INSERT INTO state_applied (decision_id) VALUES (%s) ON CONFLICT DO NOTHING", (decision_id,)
            ).rowcount
            if claimed == 0:
                return False
            for change in changes:
                if change.type == "grace_started":
                    conn.execute(
                        "INSERT INTO state_grace VALUES (%s, %s, %s) ON CONFLICT (asset) DO NOTHING",
                        (change.asset, change.at, change.original_size),
                    )
                elif change.type == "grace_ended":
                    conn.execute("DELETE FROM state_grace WHERE asset = %s", (change.asset,))
                elif change.type == "override_used":
                    conn.execute(
                        "INSERT INTO state_overrides VALUES (%s, %s)"
                        " ON CONFLICT (asset) DO UPDATE SET last_override_at = EXCLUDED.last_override_at",
                        (change.asset, change.at),
                    )
        return True

    def record_execution(self, asset: str, kind: Literal["open", "close"], at: int, size: float | None) -> None:
        check_input(asset, size)
        statements = [("INSERT INTO state_events (asset, type, at, size) VALUES (%s, %s, %s, %s)", (asset, kind, at, size))]
        if kind == "close":
            statements.append(("DELETE FROM state_grace WHERE asset = %s", (asset,)))
        self._write(statements)

    def events(self, asset: str) -> list[StoredEvent]:
        return [StoredEvent(*row) for row in self._read(_EVENTS, (asset,))]

    def remove_event(self, asset: str, event_id: int) -> StoredEvent | None:
        with self._db.transaction("write") as conn:
            row = conn.execute(
                "DELETE FROM state_events WHERE id = %s AND asset = %s RETURNING id, asset, type, at, size", (event_id, asset)
            ).fetchone()
        return StoredEvent(*row) if row else None

    def core(self, asset: str) -> CoreRecord | None:
        rows = self._read(f"{_CORE} WHERE asset = %s", (asset,))
        return CoreRecord(*rows[0]) if rows else None

    def cores(self) -> list[CoreRecord]:
        return [CoreRecord(*row) for row in self._read(f"{_CORE} ORDER BY asset")]

    def put_core(self, record: CoreRecord) -> None:
        check_input(record.asset)
        self._write(
            [
                (
                    "INSERT INTO state_core VALUES (%s, %s, %s, %s, %s) ON CONFLICT (asset) DO UPDATE SET"
                    " designated_at = EXCLUDED.designated_at, expires_at = EXCLUDED.expires_at,"
                    " extensions = EXCLUDED.extensions, reason = EXCLUDED.reason",
                    (record.asset, record.designated_at, record.expires_at, record.extensions, record.reason),
                )
            ]
        )

    def delete_core(self, asset: str) -> None:
        self._write([("DELETE FROM state_core WHERE asset = %s", (asset,))])

    def probe(self) -> dict[str, Any]:
        return self._db.probe(SCHEMA_TABLE, writable=True)

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        return f"PostgresStateStore({self.path!r})"
