"""The audit trail: one hash-chained record per decision, in SQLite (default) or JSON Lines.

Every evaluation appends exactly one record: the decision id, trace id, the request as
received, the state snapshot used, the policy (name, version, sha256), the engine version, the
whole decision with its trace and the decision time -- enough to replay the decision later.
The sink stamps each record with

- `sequence`: 1, 2, 3... contiguous, assigned under the writers' lock;
- `recorded_at`: ISO UTC (`Z`) from the injected `clock` (epoch seconds), one instant per batch;
- `prev_hash`: the `hash` of the previous record (64 zeros for the first);
- `hash`: sha256 of the record's canonical JSON (`canonical_json`: sorted keys, no spaces,
  UTF-8, no NaN) including `sequence`, `recorded_at` and `prev_hash`, excluding `hash`.

So `verify` detects a changed, deleted or reordered record and names the first bad one. What a
chain alone cannot detect: deleting the LAST records (the shortened log is still a valid
chain), or someone who rewrites a record and every record after it. Keep `VerifyResult.head`
(the hash of the last record) somewhere else -- a ticket, another machine -- to catch both.

Backends (`open_audit` picks by suffix):

- `SqliteAuditLog` (default): one SQLite file in WAL mode, schema created and migrated here
  (table `schema_version`). The canonical body is a TEXT column (`hash` = sha256 of it), beside
  indexed copies of the fields that `query` filters on; `verify` checks the copies agree with
  the body. Each append is one `BEGIN IMMEDIATE` transaction (read the last hash, insert the
  batch), waiting up to `timeout` seconds for other writers, so threads and processes can share
  a file and a failed batch writes none of its records. Commits use `synchronous=FULL`.
- `JsonlAuditLog` (`*.jsonl`): one canonical record per line, for piping and shipping. Appends
  hold `fcntl.flock` around read-last-line + write + fsync; a failed write is truncated away.
  It does not enforce unique decision ids (SQLite does).

Every failure to open, read or write raises `AuditError` (exit code 4) naming the file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import sqlite3
import stat
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import (
    Any,
    Callable,
    Iterable,
    Iterator,
    Literal,
    Mapping,
    Protocol,
    Sequence,
)

from .errors import AuditError
from .timestamps import MICROS_PER_SECOND, format_instant, parse_instant

__all__ = [
    "GENESIS_HASH",
    "RECORD_FIELDS",
    "SCHEMA_VERSION",
    "AuditSink",
    "JsonlAuditLog",
    "SqliteAuditLog",
    "UnwritableAudit",
    "VerifyResult",
    "canonical_json",
    "open_audit",
    "record_hash",
]

SCHEMA_VERSION = 1
GENESIS_HASH = "0" * 64
DEFAULT_TIMEOUT = 30.0
Mode = Literal["append", "read"]

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


class AuditSink(Protocol):
    """Where the engine writes one record per decision."""

    path: str

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Write the records in one transaction (all or none); raises `AuditError`."""

    def close(self) -> None: ...


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


def open_audit(path: str | Path, *, clock: Callable[[], float] = time.time, mode: Mode = "append") -> SqliteAuditLog | JsonlAuditLog:
    """Open (creating parent folders and the file) the audit log at `path`.

    A path ending in `.jsonl` is a `JsonlAuditLog`, anything else a `SqliteAuditLog`. With
    `mode="read"` the file must already exist and is never created, migrated or written.
    """
    if str(path).lower().endswith(".jsonl"):
        return JsonlAuditLog(path, clock=clock, mode=mode)
    return SqliteAuditLog(path, clock=clock, mode=mode)


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed and stored; raises ValueError/TypeError if not JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_hash(record: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of `record` without its `hash` key."""
    body = canonical_json({key: value for key, value in record.items() if key != "hash"})
    return _sha256(body)


# ------------------------------------------------------------------------------------- SQLite

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
    f"INSERT INTO audit_records (sequence, {', '.join(_COLUMNS)}, hash, body) "
    f"VALUES ({', '.join('?' * (len(_COLUMNS) + 3))})"
)
_STATS_COLUMNS = "decision, blocking_systems, override_applied, decision_time_ms, evaluated_us"


class SqliteAuditLog:
    """The default sink: an embedded SQLite audit log (see the module docstring)."""

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

    def __enter__(self) -> SqliteAuditLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteAuditLog({self.path!r})"

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
        rows = self._select(
            _STATS_COLUMNS, where, params, lambda row: (row[0], _json_list(row[1]), bool(row[2]), row[3], row[4])
        )
        return _summarise(rows)

    def verify(self) -> VerifyResult:
        """Check every record's hash, sequence, link and indexed columns (see the module doc)."""
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
            conn.execute("PRAGMA synchronous=FULL")  # a returned append survives a power cut
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check the file is an audit log of a version we know; create or migrate it if needed."""
        version = self._schema_version(conn)
        if version == SCHEMA_VERSION:
            return
        if self._mode == "read":
            if version is None:
                raise AuditError(f"{self.path}: not an audit log: an empty SQLite database")
            raise AuditError(f"{self.path}: audit log schema version {version} needs migrating to {SCHEMA_VERSION}: open it for writing first")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._schema_version(conn) or 0  # another process may have got here first
            if version == 0:
                conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (step, _now(self._clock, self.path)))
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _schema_version(self, conn: sqlite3.Connection) -> int | None:
        """None for a fresh (table-less) database; raises AuditError for anything not ours."""
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
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
                for name, have, want in zip(_COLUMNS, columns, expected):
                    if have != want:
                        problem = f"column `{name}` holds `{have}` but the record says `{want}` (the row was edited)"
                        break
        decision_id = record.get("decision_id") if isinstance(record, dict) else columns[0]
        claimed = record.get("sequence") if isinstance(record, dict) else sequence
        if problem is None and claimed != sequence:
            problem = f"stored as #{sequence} but the record says it is #{claimed} (records reordered or renumbered)"
        yield _Entry(sequence, decision_id, stored_hash, record.get("prev_hash") if isinstance(record, dict) else None, problem)


# --------------------------------------------------------------------------------- JSON Lines


class JsonlAuditLog:
    """One canonical JSON record per line (see the module docstring)."""

    _FIRST_LINE_LIMIT = 64 * 1024 * 1024

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
        self._fd: int | None = None
        if mode == "append":
            _make_parent(self.path)
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT
        else:
            flags = os.O_RDONLY
        try:
            self._fd = os.open(self.path, flags | os.O_CLOEXEC, 0o644)
            if stat.S_ISDIR(os.fstat(self._fd).st_mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory")
        except OSError as exc:
            self.close()
            if isinstance(exc, FileNotFoundError) and mode == "read":
                raise AuditError(f"{self.path}: no such audit log") from exc
            raise AuditError(f"{self.path}: cannot open the audit log: {_os_reason(exc)}") from exc
        try:
            self._check_shape()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> JsonlAuditLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JsonlAuditLog({self.path!r})"

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -- writing

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        batch = _checked_batch(records, self.path)
        if not batch:
            return
        with self._lock:  # flock does not exclude threads sharing one open file
            fd = self._writer()
            with _flocked(fd, fcntl.LOCK_EX, self._timeout, self.path):
                size = os.fstat(fd).st_size
                last = self._last_record(fd, size)
                sequence, prev_hash = (last["sequence"], last["hash"]) if last else (0, GENESIS_HASH)
                sealed = _seal(batch, sequence, prev_hash, _now(self._clock, self.path), self.path)
                data = "".join(s.line for s in sealed).encode("utf-8")
                self._write(fd, data, size)

    def _write(self, fd: int, data: bytes, size: int) -> None:
        written = 0
        try:
            view = memoryview(data)
            while written < len(data):
                written += os.write(fd, view[written:])
            os.fsync(fd)
        except OSError as exc:
            note = ""
            try:
                if os.fstat(fd).st_size != size:
                    os.ftruncate(fd, size)
            except OSError as undo:
                note = f" (and the partial write could not be removed: {_os_reason(undo)})"
            raise AuditError(f"{self.path}: cannot write the audit log: {_os_reason(exc)}{note}") from exc

    # -- reading

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, in file order (which is sequence order in an intact log)."""
        for number, line in self._lines():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                raise AuditError(f"{self.path}: line {number} is not an audit record (run `protect audit verify`)")
            yield record

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
        """The records that match every given filter (see `_Filter`), in file order."""
        match = _Filter.build(asset, decision, blocking_system, policy_version, since, until, trace_id).matches
        return (record for record in self.records() if match(record))

    def stats(self, **filters: Any) -> dict[str, Any]:
        """Counts, rates, denials per protection, p50/p99 decision time, overall and per day."""
        rows = (
            (
                r.get("decision"),
                list(r.get("blocking_systems") or ()),
                bool(r.get("override_applied")),
                r.get("decision_time_ms"),
                _micros(r.get("evaluated_at")),
            )
            for r in self.query(**filters)
        )
        return _summarise(rows)

    def verify(self) -> VerifyResult:
        """Check every line's hash, sequence and link to the line before."""
        return _verify_rows(self._entries())

    # -- internals

    def _entries(self) -> Iterator[_Entry]:
        for number, line in self._lines():
            record: Any = None
            problem = None
            try:
                record = json.loads(line)
            except ValueError:
                problem = "the line is not valid JSON (the record was changed)"
            if problem is None and not (isinstance(record, dict) and isinstance(record.get("hash"), str)):
                problem = "the line is not an audit record (the record was changed)"
            if problem is None:
                try:
                    if record_hash(record) != record["hash"]:
                        problem = "the hash does not match the record's content (the record was changed)"
                except (TypeError, ValueError):
                    problem = "the line is not canonical audit JSON (the record was changed)"
            if not isinstance(record, dict):
                yield _Entry(number, None, None, None, problem)
                continue
            claimed = record.get("sequence")
            numbered = isinstance(claimed, int) and not isinstance(claimed, bool)
            if problem is None and not numbered:
                problem = "the record has no sequence number (the record was changed)"
            sequence = claimed if numbered else number
            yield _Entry(sequence, record.get("decision_id"), record.get("hash"), record.get("prev_hash"), problem)

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        if self._fd is None:
            raise AuditError(f"{self.path}: the audit log is closed")

        def lines() -> Iterator[tuple[int, bytes]]:
            try:
                handle = open(self.path, "rb")
            except OSError as exc:
                raise AuditError(f"{self.path}: cannot read the audit log: {_os_reason(exc)}") from exc
            with handle:
                # Writers append whole batches under LOCK_EX, so the size seen under LOCK_SH ends
                # on a batch boundary; reading up to it never sees half a batch.
                with _flocked(handle.fileno(), fcntl.LOCK_SH, self._timeout, self.path):
                    size = os.fstat(handle.fileno()).st_size
                consumed = 0
                for number, line in enumerate(handle, start=1):
                    if consumed >= size:
                        break
                    consumed += len(line)
                    yield number, line.rstrip(b"\n")

        return lines()

    def _writer(self) -> int:
        if self._fd is None:
            raise AuditError(f"{self.path}: the audit log is closed")
        if self._mode == "read":
            raise AuditError(f"{self.path}: the audit log was opened read-only")
        return self._fd

    def _check_shape(self) -> None:
        """Refuse a file that is not an audit log: its first and last lines must be records."""
        fd = self._fd
        assert fd is not None
        with _flocked(fd, fcntl.LOCK_SH, self._timeout, self.path):
            size = os.fstat(fd).st_size
            if size == 0:
                return
            first = b""
            while b"\n" not in first and len(first) < min(size, self._FIRST_LINE_LIMIT):
                chunk = os.pread(fd, 1 << 16, len(first))
                if not chunk:
                    break
                first += chunk
            if not _looks_like_record(first.split(b"\n", 1)[0]):
                raise AuditError(f"{self.path}: not an audit log: line 1 is not an audit record")
            self._last_record(fd, size)

    def _last_record(self, fd: int, size: int) -> dict[str, Any] | None:
        if size == 0:
            return None
        if os.pread(fd, 1, size - 1) != b"\n":
            raise AuditError(f"{self.path}: damaged audit log: the last line is incomplete (an interrupted write?)")
        chunk, end, tail = 1 << 16, size - 1, b""
        while True:
            start = max(0, end - chunk)
            tail = os.pread(fd, end - start, start) + tail
            cut = tail.rfind(b"\n")
            if cut >= 0 or start == 0:
                line = tail[cut + 1 :]
                break
            end = start
        record = _looks_like_record(line)
        if not record:
            raise AuditError(f"{self.path}: not an audit log: the last line is not an audit record")
        return record


def _looks_like_record(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if (
        isinstance(record, dict)
        and isinstance(record.get("sequence"), int)
        and isinstance(record.get("hash"), str)
        and isinstance(record.get("prev_hash"), str)
        and "decision_id" in record
    ):
        return record
    return None


@contextmanager
def _flocked(fd: int, kind: int, timeout: float, path: str) -> Iterator[None]:
    """flock with a timeout: poll with a short backoff (flock itself cannot time out)."""
    deadline = time.monotonic() + timeout
    pause = 0.0005
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise AuditError(f"{path}: the audit log is locked by another writer (gave up after {timeout:g} s)") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.01)
        except OSError as exc:
            raise AuditError(f"{path}: cannot lock the audit log: {_os_reason(exc)}") from exc
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ shared pieces


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
        if not isinstance(record["blocking_systems"], (list, tuple)) or not all(isinstance(s, str) for s in record["blocking_systems"]):
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


def _micros(text: Any) -> int | None:
    if text is None:
        return None
    try:
        return parse_instant(text)
    except ValueError:
        return None


def _now(clock: Callable[[], float], path: str) -> str:
    try:
        return format_instant(round(clock() * MICROS_PER_SECOND))
    except (TypeError, ValueError, OverflowError) as exc:
        raise AuditError(f"{path}: the clock returned an unusable time: {exc}") from None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the transaction is gone with the failure that brought us here


def _make_parent(path: str) -> None:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditError(f"{path}: cannot create the audit log's folder: {_os_reason(exc)}") from exc


def _os_reason(exc: OSError) -> str:
    return {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EISDIR: "it is a folder",
        errno.ENOTDIR: "a parent of it is a file, not a folder",
        errno.EEXIST: "a parent of it is a file, not a folder",
        errno.ENOENT: "no such file or folder",
    }.get(exc.errno or 0, (exc.strerror or str(exc)).lower())


# ---------------------------------------------------------------------------- query and stats


@dataclass(frozen=True, slots=True)
class _Filter:
    """Every given filter must hold. `since`/`until` are ISO timestamps compared with
    `evaluated_at` as the half-open range [since, until); a record without `evaluated_at` never
    matches a time filter. `blocking_system` matches a record listing that protection."""

    asset: str | None = None
    decision: str | None = None
    blocking_system: str | None = None
    policy_version: str | None = None
    since: int | None = None
    until: int | None = None
    trace_id: str | None = None

    @classmethod
    def build(
        cls,
        asset: str | None = None,
        decision: str | None = None,
        blocking_system: str | None = None,
        policy_version: str | None = None,
        since: str | None = None,
        until: str | None = None,
        trace_id: str | None = None,
    ) -> _Filter:
        if decision not in (None, "approve", "deny"):
            raise ValueError(f"decision filter must be `approve` or `deny`, got `{decision}`")
        return cls(
            asset,
            decision,
            blocking_system,
            policy_version,
            None if since is None else parse_instant(since),
            None if until is None else parse_instant(until),
            trace_id,
        )

    def sql(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("asset", self.asset),
            ("decision", self.decision),
            ("policy_version", self.policy_version),
            ("trace_id", self.trace_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.blocking_system is not None:
            clauses.append("EXISTS (SELECT 1 FROM json_each(audit_records.blocking_systems) WHERE value = ?)")
            params.append(self.blocking_system)
        if self.since is not None:
            clauses.append("evaluated_us >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("evaluated_us < ?")
            params.append(self.until)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), params

    def matches(self, record: Mapping[str, Any]) -> bool:
        policy = record.get("policy") if isinstance(record.get("policy"), Mapping) else {}
        for want, have in (
            (self.asset, record.get("asset")),
            (self.decision, record.get("decision")),
            (self.policy_version, policy.get("version")),
            (self.trace_id, record.get("trace_id")),
        ):
            if want is not None and want != have:
                return False
        if self.blocking_system is not None and self.blocking_system not in (record.get("blocking_systems") or ()):
            return False
        if self.since is not None or self.until is not None:
            at = _micros(record.get("evaluated_at"))
            if at is None or (self.since is not None and at < self.since) or (self.until is not None and at >= self.until):
                return False
        return True


def _nearest_rank(ordered: list[float], percent: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least `percent`% of values <= it,
    i.e. ordered[ceil(percent/100 * n) - 1]; always one of the observed values."""
    if not ordered:
        return None
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


class _Tally:
    def __init__(self) -> None:
        self.count = self.approved = self.overrides = 0
        self.denials: Counter[str] = Counter()
        self.times: list[float] = []

    def add(self, decision: str, blocking: list[str], override: bool, time_ms: float | None) -> None:
        self.count += 1
        if decision == "approve":
            self.approved += 1
        else:
            self.denials.update(blocking)
        self.overrides += override
        if isinstance(time_ms, (int, float)):
            self.times.append(float(time_ms))

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.times)
        rate = (lambda part: part / self.count) if self.count else (lambda part: None)
        return {
            "count": self.count,
            "approved": self.approved,
            "denied": self.count - self.approved,
            "approval_rate": rate(self.approved),
            "overrides": self.overrides,
            "override_rate": rate(self.overrides),
            "denials_by_protection": dict(sorted(self.denials.items(), key=lambda item: (-item[1], item[0]))),
            "decision_time_ms": {"p50": _nearest_rank(ordered, 50), "p99": _nearest_rank(ordered, 99)},
        }


def _summarise(rows: Iterable[tuple[str, list[str], bool, float | None, int | None]]) -> dict[str, Any]:
    """Stats over (decision, blocking_systems, override_applied, decision_time_ms, evaluated_us).

    Rates are fractions of all decisions (override_rate: decisions approved by an override);
    a denial blocked by two protections counts once for each; days are UTC days of
    `evaluated_at` (`day` null for records without one).
    """
    total = _Tally()
    per_day: dict[str | None, _Tally] = {}
    for decision, blocking, override, time_ms, evaluated_us in rows:
        day = format_instant(evaluated_us)[:10] if evaluated_us is not None else None
        for tally in (total, per_day.setdefault(day, _Tally())):
            tally.add(decision, blocking, override, time_ms)
    days = sorted(per_day, key=lambda day: (day is None, day or ""))
    return {**total.summary(), "per_day": [{"day": day, **per_day[day].summary()} for day in days]}


class UnwritableAudit:
    """Stands in for an audit log that cannot be opened: every append fails, so every decision denies."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        raise AuditError(self.problem)

    def close(self) -> None:
        return None
