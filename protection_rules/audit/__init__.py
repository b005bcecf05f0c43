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

Modules: `chain` (canonical JSON, hashing, sealing, verification), `query` (filters, stats),
`sqlite` and `jsonl` (the backends), `base` (the `AuditSink` protocol and shared plumbing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .base import AuditSink, Mode, UnwritableAudit
from .chain import (
    GENESIS_HASH,
    RECORD_FIELDS,
    VerifyResult,
    canonical_json,
    record_hash,
)
from .jsonl import JsonlAuditLog
from .sqlite import SCHEMA_VERSION, SqliteAuditLog

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


def open_audit(
    path: str | Path, *, clock: Callable[[], float] = time.time, mode: Mode = "append"
) -> SqliteAuditLog | JsonlAuditLog:
    """Open (creating parent folders and the file) the audit log at `path`.

    A path ending in `.jsonl` is a `JsonlAuditLog`, anything else a `SqliteAuditLog`. With
    `mode="read"` the file must already exist and is never created, migrated or written.
    """
    if str(path).lower().endswith(".jsonl"):
        return JsonlAuditLog(path, clock=clock, mode=mode)
    return SqliteAuditLog(path, clock=clock, mode=mode)
