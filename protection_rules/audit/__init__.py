"""The audit trail: hash-chained records, one per decision plus a few other kinds of record, in
SQLite (default) or JSON Lines.

Every evaluation appends exactly one `decision` record: the decision id, trace id, the request
as received, the state snapshot used, the policy (name, version, sha256), the engine version,
the whole decision with its trace and the decision time -- enough to replay the decision later.
Other records share the chain (`kind`, `KINDS`): `state_correction` (an operator's correction
of the state store, written with `append_event`: at least `asset`, `action`, `detail` (any
JSON), `reason`, `at`) and `rollback` (written by the JSON Lines sink itself, see below). A
record without `kind` (logs written before kinds existed) is a decision. The sink stamps each
record with

- `sequence`: 1, 2, 3... contiguous, assigned under the writers' lock;
- `recorded_at`: ISO UTC (`Z`) from the injected `clock` (epoch seconds), one instant per batch;
- `prev_hash`: the `hash` of the previous record (64 zeros for the first);
- `batch`: {"first": sequence of the batch's first record, "size": records in the batch}
  (absent in records written before batches were stamped: each is a batch of its own);
- `hash`: sha256 of the record's canonical JSON (`protection_rules.canonical`: sorted keys, no spaces,
  UTF-8, no NaN) including the stamps above, excluding `hash`.

So `verify` detects a changed, deleted or reordered record and names the first bad one. What a
chain alone cannot detect: deleting the LAST records (the shortened log is still a valid
chain), or someone who rewrites a record and every record after it. Keep `VerifyResult.head`
(the hash of the last record) somewhere else -- a ticket, another machine -- to catch both.

What is checked when. `verify` re-hashes the whole log: O(log size), so it is a command of its
own, not part of every call. Each append (and `find`) checks only the end it chains onto (the
record it returns): that record's hash matches its content (SQLite: and its indexed columns),
its sequence and `prev_hash` follow the record before it (and, for `find`, the record after it
links back to it). A broken end raises `AuditError` naming `protect audit verify`, and nothing
is appended, so the engine denies (exit 4) rather than extend a chain it can see is broken;
damage further back is found only by `verify`.

`find(decision_id)` returns the stored decision record (with `hash`) or None: what a commit
applies. `query(RecordFilter(...))` returns records of all kinds in sequence order; `stats`
counts decisions only.

Backends (`open_audit` picks: a `postgresql://` URL, else by suffix):

- `SqliteAuditLog` (default): one SQLite file in WAL mode, schema created and migrated here
  (table `schema_version`; version 2 added `kind`, migrated in place when a version 1 file is
  opened for appending, while a read-only open reads version 1 as it is). The canonical body is
  a TEXT column (`hash` = sha256 of it), beside indexed copies of the fields that `query`
  filters on (`decision_id` unique; NULL for records of other kinds); `verify` checks the copies
  agree with the body. Each append is one `BEGIN IMMEDIATE` transaction (check the end of the
  chain, insert the batch), waiting up to `timeout` seconds for other writers, so threads and
  processes can share a file, and a failed or killed batch writes none of its records.
  Commits use `synchronous=FULL`.
- `PostgresAuditLog` (`postgresql://...`, the `postgres` extra): the SQLite layout in a
  PostgreSQL database (table `audit_records`, schema versioned in `audit_schema_version`,
  created and migrated here), for several writers on several hosts sharing one chain. Each
  append is one transaction that takes a transaction-level advisory lock before it checks the
  end of the chain, so appends are serialised by the database; `sequence` is the primary key
  and `prev_hash` unique, so no two records can chain onto the same one even without the lock.
  The lock wait is bounded by `timeout` (lock_timeout); a database that is down or refuses is an
  `AuditError` naming the URL without its password.
- `JsonlAuditLog` (`*.jsonl`): one canonical record per line, for piping and shipping. Appends
  hold `fcntl.flock` around read-the-end + write + fsync; a failed write is truncated away. A
  writer killed mid-append leaves an incomplete last line and/or a last batch shorter than its
  `batch` stamp says: decisions that were never returned. Opening for appending, and every
  append, rolls that back: the dropped bytes are copied to `<log>.rollback-<first
  sequence>-<sha256 prefix>` beside the log, cut off, and a `rollback` record is appended
  (`dropped`: records, lines, bytes, sha256, first_sequence, batch_size, saved_as; `at`), so
  `verify` passes and `query --kind rollback` shows it. (A crash between the cut and that
  record leaves the copy as the only trace.) A read-only open never writes: it leaves such a
  tail out of everything it reads and `verify` reports it in `torn_tail`. Any other damage at
  the end (a last line that is no record, a short batch whose records do not run back to its
  start) is not rolled back: appends refuse, reads fail, `verify` reports it. JSON Lines does
  not enforce unique decision ids (SQLite does): `find` scans the file and refuses an id
  recorded twice.

A decision that was written whole but whose process died before returning it stays recorded
(in both backends): recorded but never acted upon is the safe side of "record before return".

Every failure to open, read or write raises `AuditError` (exit code 4) naming the file (or URL).

Modules: `chain` (kinds, canonical JSON, hashing, sealing, whole-chain and end-of-chain checks),
`query` (`RecordFilter`, stats), `sql` (the row layout and the reading the SQL backends share), `sqlite`,
`postgres` and `jsonl` (the backends), `base` (the `AuditSink`
protocol, the checks on what is appended, file plumbing). The backends share those modules' public names and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..canonical import canonical_json
from ..postgres import database_url
from .base import AuditSink, Mode, UnwritableAudit
from .chain import (
    EVENT_FIELDS,
    EVENT_KINDS,
    GENESIS_HASH,
    KINDS,
    RECORD_FIELDS,
    VerifyResult,
    record_hash,
    record_kind,
)
from .query import RecordFilter

if TYPE_CHECKING:
    from .jsonl import JsonlAuditLog
    from .postgres import PostgresAuditLog
    from .sqlite import SCHEMA_VERSION, SqliteAuditLog

# each backend is imported when first used: a command that writes SQLite never loads JSON Lines
_BACKENDS = {"JsonlAuditLog": ".jsonl", "SqliteAuditLog": ".sqlite", "SCHEMA_VERSION": ".sqlite"}


def __getattr__(name: str) -> Any:
    if name not in _BACKENDS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_BACKENDS[name], __name__), name)


__all__ = [
    "EVENT_FIELDS",
    "EVENT_KINDS",
    "GENESIS_HASH",
    "KINDS",
    "RECORD_FIELDS",
    "SCHEMA_VERSION",
    "AuditSink",
    "JsonlAuditLog",
    "RecordFilter",
    "SqliteAuditLog",
    "UnwritableAudit",
    "VerifyResult",
    "canonical_json",
    "open_audit",
    "record_hash",
    "record_kind",
]


def open_audit(
    path: str | Path, *, clock: Callable[[], float] = time.time, mode: Mode = "append"
) -> SqliteAuditLog | JsonlAuditLog | PostgresAuditLog:
    """Open (creating parent folders and the file) the audit log at `path`.

    A `postgresql://` URL is a `PostgresAuditLog` (the `postgres` extra), a path ending in
    `.jsonl` a `JsonlAuditLog`, anything else a `SqliteAuditLog`. With `mode="read"` the log
    must already exist and is never created, migrated or written.
    """
    url = database_url(path)
    if url is not None:
        from .postgres import PostgresAuditLog

        return PostgresAuditLog(url, clock=clock, mode=mode)
    if str(path).lower().endswith(".jsonl"):
        from .jsonl import JsonlAuditLog

        return JsonlAuditLog(path, clock=clock, mode=mode)
    from .sqlite import SqliteAuditLog

    return SqliteAuditLog(path, clock=clock, mode=mode)
