"""Cheap health probes of the state store and audit sink backends (`Engine.health()`).

A probe answers "could the next read and the next write succeed?" without writing anything:
each backend's `probe()` returns `probe_result(...)`. What a probe cannot see, a full disk for
one, shows up as an error on the next real write (and in the error rate).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

PROBE_TIMEOUT = 1.0  # seconds a probe waits for another writer's lock before it says "locked"


def probe_result(reachable: bool, writable: bool, problem: str | None = None) -> dict[str, Any]:
    return {"reachable": reachable, "writable": writable, "problem": problem}


def probe_sqlite(
    path: str,
    *,
    table: str,
    read: Callable[[sqlite3.Connection], object],
    write: Callable[[sqlite3.Connection], object] | None,
) -> dict[str, Any]:
    """Probe a SQLite file on a connection of its own (never creating the file): `read` proves
    it reachable; `write` (None: read-only by design) runs in a write transaction, after a write
    that changes nothing to `table` (so a read-only file fails), and the transaction is rolled back."""
    import sqlite3  # here: a cold `protect evaluate` without a store or audit trail never needs it

    try:
        conn = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=rw", uri=True, timeout=PROBE_TIMEOUT, isolation_level=None)
    except sqlite3.Error as exc:
        return probe_result(False, False, f"{path}: cannot open: {exc}")
    try:
        try:
            read(conn)
        except Exception as exc:
            return probe_result(False, False, _reason(path, "cannot read", exc))
        if write is None:
            return probe_result(True, False, f"{path}: opened read-only")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(f"UPDATE {table} SET rowid = rowid WHERE 0")  # `table` is a constant of the caller
                write(conn)
            finally:
                conn.execute("ROLLBACK")
        except Exception as exc:
            return probe_result(True, False, _reason(path, "cannot write", exc))
        return probe_result(True, True)
    finally:
        conn.close()


def _reason(path: str, doing: str, exc: Exception) -> str:
    text = str(exc)
    return text if text.startswith(path) else f"{path}: {doing}: {text}"
