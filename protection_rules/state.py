"""The asset state store (docs/semantics.md sections 3 and 6): what happened before a request.

Evaluating never writes here. `apply` commits a decision's state changes atomically and
idempotently (the decision id is the key); executions and core designations are recorded
through their own calls. Three implementations share one contract (tests/test_state.py):
`MemoryStateStore` for tests and embedding, `SqliteStateStore` as the default, and
`PostgresStateStore` (state_postgres.py) for several processes and hosts sharing one state.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from .errors import Issue, RequestInvalid, StateError
from .models import (
    AssetState,
    CoreDesignation,
    GraceState,
    PositionEvent,
    StateChange,
)
from .parsing import MAX_MAGNITUDE
from .postgres import database_url
from .probing import probe_result, probe_sqlite
from .resources import schema
from .timestamps import format_instant

SCHEMA_VERSION = 1
# the request schema's asset pattern: what no request could name must not be stored either
_ASSET = re.compile(schema("request")["properties"]["asset"]["pattern"])


def check_input(asset: str, size: float | None = None) -> None:
    """Refuse what would be stored wrong: an asset no request can name, a size that is no size."""
    issues = []
    if not isinstance(asset, str) or not _ASSET.search(asset):
        issues.append(Issue("asset-invalid", "$.asset", f"`{asset}` is not a valid asset symbol"))
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, float)) or not 0 <= size <= MAX_MAGNITUDE):
        issues.append(Issue("size-invalid", "$.size", f"`{size}` is not a size (a finite number >= 0)"))
    if issues:
        raise RequestInvalid(issues)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An execution as stored, with the id an operator uses to correct it."""

    id: int
    asset: str
    type: Literal["open", "close"]
    at: int
    size: float | None

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "asset": self.asset, "type": self.type, "at": format_instant(self.at), "size": self.size}


@dataclass(frozen=True, slots=True)
class CoreRecord:
    """A core designation as stored, with its bookkeeping."""

    asset: str
    designated_at: int
    expires_at: int | None
    extensions: int
    reason: str


class StateStore(Protocol):
    path: str

    def load(self, asset: str) -> AssetState | None:
        """The asset's state, or None when nothing is stored for it."""

    def apply(self, changes: Sequence[StateChange], decision_id: str) -> bool:
        """Apply a decision's state changes once; False when this decision id was already applied."""

    def record_execution(self, asset: str, kind: Literal["open", "close"], at: int, size: float | None) -> None: ...

    def events(self, asset: str) -> list[StoredEvent]:
        """The asset's executions in time order (ties in the order they were recorded)."""

    def remove_event(self, asset: str, event_id: int) -> StoredEvent | None:
        """Delete one execution; None when the asset has no event with that id."""

    def core(self, asset: str) -> CoreRecord | None: ...

    def cores(self) -> list[CoreRecord]: ...

    def put_core(self, record: CoreRecord) -> None: ...

    def delete_core(self, asset: str) -> None: ...

    def close(self) -> None: ...

    # Optional: `probe() -> probing.probe_result(...)`, which `Engine.health()` calls when present.


# ------------------------------------------------------------------------------------- memory


class MemoryStateStore:
    """A dict-backed store: same contract as SQLite, nothing on disk."""

    path = ":memory:"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cores: dict[str, CoreRecord] = {}
        self._grace: dict[str, GraceState] = {}
        self._events: dict[str, list[StoredEvent]] = {}
        self._next_event = 1
        self._overrides: dict[str, int] = {}
        self._applied: set[str] = set()

    def load(self, asset: str) -> AssetState | None:
        events = tuple(PositionEvent(e.type, e.at, e.size) for e in self.events(asset))
        with self._lock:
            core = self._cores.get(asset)
            state = AssetState(
                core=CoreDesignation(core.designated_at, core.expires_at) if core else None,
                grace=self._grace.get(asset),
                events=events,
                last_override_at=self._overrides.get(asset),
            )
        return None if state == AssetState() else state

    def events(self, asset: str) -> list[StoredEvent]:
        with self._lock:
            return sorted(self._events.get(asset, ()), key=lambda e: (e.at, e.id))

    def remove_event(self, asset: str, event_id: int) -> StoredEvent | None:
        with self._lock:
            for event in self._events.get(asset, ()):
                if event.id == event_id:
                    self._events[asset].remove(event)
                    return event
        return None

    def apply(self, changes: Sequence[StateChange], decision_id: str) -> bool:
        with self._lock:
            if decision_id in self._applied:
                return False
            for change in changes:
                if change.type == "grace_started":
                    self._grace.setdefault(change.asset, GraceState(change.at, change.original_size))
                elif change.type == "grace_ended":
                    self._grace.pop(change.asset, None)
                elif change.type == "override_used":
                    self._overrides[change.asset] = change.at
            self._applied.add(decision_id)
            return True

    def record_execution(self, asset: str, kind: Literal["open", "close"], at: int, size: float | None) -> None:
        check_input(asset, size)
        with self._lock:
            self._events.setdefault(asset, []).append(StoredEvent(self._next_event, asset, kind, at, size))
            self._next_event += 1
            if kind == "close":
                self._grace.pop(asset, None)

    def core(self, asset: str) -> CoreRecord | None:
        with self._lock:
            return self._cores.get(asset)

    def cores(self) -> list[CoreRecord]:
        with self._lock:
            return sorted(self._cores.values(), key=lambda c: c.asset)

    def put_core(self, record: CoreRecord) -> None:
        check_input(record.asset)
        with self._lock:
            self._cores[record.asset] = record

    def delete_core(self, asset: str) -> None:
        with self._lock:
            self._cores.pop(asset, None)

    def close(self) -> None:
        return None

    def probe(self) -> dict[str, Any]:
        return probe_result(True, True)


# ------------------------------------------------------------------------------------- sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS core (
    asset TEXT PRIMARY KEY, designated_at INTEGER NOT NULL, expires_at INTEGER,
    extensions INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS grace (asset TEXT PRIMARY KEY, started_at INTEGER NOT NULL, original_size REAL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, asset TEXT NOT NULL, type TEXT NOT NULL CHECK (type IN ('open', 'close')),
    at INTEGER NOT NULL, size REAL);
CREATE INDEX IF NOT EXISTS events_asset ON events (asset, at);
CREATE TABLE IF NOT EXISTS overrides (asset TEXT PRIMARY KEY, last_override_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS applied (decision_id TEXT PRIMARY KEY);
"""
_TABLES = {"schema_version", "core", "grace", "events", "overrides", "applied"}


class SqliteStateStore:
    """The default store: one SQLite file in WAL mode; instants are integer microseconds."""

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = str(path)
        self._lock = threading.Lock()
        target = Path(path)
        if not create and not target.exists():
            raise StateError(f"state store {self.path}: no such file")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"state store {self.path}: cannot open: {exc}") from exc
        try:
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise StateError(f"state store {self.path}: not a usable state store: {exc}") from exc
        except StateError:
            self._db.close()
            raise

    @property
    def target(self) -> str:
        """What `open_state` opens this store from again (a worker process does)."""
        return self.path

    def _migrate(self) -> None:
        db = self._db
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and not tables <= _TABLES:
            raise StateError(
                f"state store {self.path}: holds other tables ({', '.join(sorted(tables - _TABLES))}); not a state store"
            )
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise StateError(
                    f"state store {self.path}: schema version {row[0]} is newer than this release ({SCHEMA_VERSION})"
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _read(self, sql: str, args: Iterable[object] = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"state store {self.path}: read failed: {exc}") from exc

    def _write(self, statements: list[tuple[str, tuple]], *, guard: str | None = None) -> bool:
        """Run statements in one IMMEDIATE transaction; with `guard`, skip if the id is applied."""
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                if guard is not None:
                    if db.execute("SELECT 1 FROM applied WHERE decision_id = ?", (guard,)).fetchone():
                        db.execute("ROLLBACK")
                        return False
                    db.execute("INSERT INTO applied VALUES (?)", (guard,))
                for sql, args in statements:
                    db.execute(sql, args)
                db.execute("COMMIT")
                return True
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StateError(f"state store {self.path}: write failed: {exc}") from exc

    def load(self, asset: str) -> AssetState | None:
        core = self.core(asset)
        grace = self._read("SELECT started_at, original_size FROM grace WHERE asset = ?", (asset,))
        events = self.events(asset)
        override = self._read("SELECT last_override_at FROM overrides WHERE asset = ?", (asset,))
        state = AssetState(
            core=CoreDesignation(core.designated_at, core.expires_at) if core else None,
            grace=GraceState(*grace[0]) if grace else None,
            events=tuple(PositionEvent(e.type, e.at, e.size) for e in events),
            last_override_at=override[0][0] if override else None,
        )
        return None if state == AssetState() else state

    def apply(self, changes: Sequence[StateChange], decision_id: str) -> bool:
        statements: list[tuple[str, tuple]] = []
        for change in changes:
            if change.type == "grace_started":
                statements.append(
                    ("INSERT OR IGNORE INTO grace VALUES (?, ?, ?)", (change.asset, change.at, change.original_size))
                )
            elif change.type == "grace_ended":
                statements.append(("DELETE FROM grace WHERE asset = ?", (change.asset,)))
            elif change.type == "override_used":
                statements.append(("INSERT OR REPLACE INTO overrides VALUES (?, ?)", (change.asset, change.at)))
        return self._write(statements, guard=decision_id)

    def record_execution(self, asset: str, kind: Literal["open", "close"], at: int, size: float | None) -> None:
        check_input(asset, size)
        statements = [("INSERT INTO events (asset, type, at, size) VALUES (?, ?, ?, ?)", (asset, kind, at, size))]
        if kind == "close":
            statements.append(("DELETE FROM grace WHERE asset = ?", (asset,)))
        self._write(statements)

    def events(self, asset: str) -> list[StoredEvent]:
        rows = self._read("SELECT id, asset, type, at, size FROM events WHERE asset = ? ORDER BY at, id", (asset,))
        return [StoredEvent(*row) for row in rows]

    def remove_event(self, asset: str, event_id: int) -> StoredEvent | None:
        found = [e for e in self.events(asset) if e.id == event_id]
        if not found:
            return None
        self._write([("DELETE FROM events WHERE id = ? AND asset = ?", (event_id, asset))])
        return found[0]

    def core(self, asset: str) -> CoreRecord | None:
        rows = self._read("SELECT asset, designated_at, expires_at, extensions, reason FROM core WHERE asset = ?", (asset,))
        return CoreRecord(*rows[0]) if rows else None

    def cores(self) -> list[CoreRecord]:
        rows = self._read("SELECT asset, designated_at, expires_at, extensions, reason FROM core ORDER BY asset")
        return [CoreRecord(*row) for row in rows]

    def put_core(self, record: CoreRecord) -> None:
        check_input(record.asset)
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO core VALUES (?, ?, ?, ?, ?)",
                    (record.asset, record.designated_at, record.expires_at, record.extensions, record.reason),
                )
            ]
        )

    def delete_core(self, asset: str) -> None:
        self._write([("DELETE FROM core WHERE asset = ?", (asset,))])

    def probe(self) -> dict[str, Any]:
        """Reachable: the file opens anew and has its schema; writable: a write transaction
        starts and takes a write (rolled back: nothing is written)."""
        return probe_sqlite(
            self.path,
            table="schema_version",
            read=lambda conn: conn.execute("SELECT version FROM schema_version").fetchone(),
            write=lambda conn: None,
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_state(path: str | Path, *, create: bool = True) -> StateStore:
    """`:memory:` gives a MemoryStateStore, a `postgresql://` URL a PostgresStateStore (the
    `postgres` extra), anything else a SqliteStateStore. With `create` False the store must
    exist already (a file, or a database holding the schema)."""
    if str(path) == ":memory:":
        return MemoryStateStore()
    url = database_url(path)
    if url is not None:
        from .state_postgres import PostgresStateStore

        return PostgresStateStore(url, create=create)
    return SqliteStateStore(path, create=create)  # type: ignore[arg-type]
