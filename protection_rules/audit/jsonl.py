"""`JsonlAuditLog`: the JSON Lines audit backend, one canonical record per line, appended under
`fcntl.flock` (see the package docstring, `protection_rules.audit`)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import AuditError
from .base import DEFAULT_TIMEOUT, LogFile, Mode, _make_parent, _os_reason
from .chain import (
    GENESIS_HASH,
    VerifyResult,
    _checked_batch,
    _Entry,
    _now,
    _seal,
    _verify_rows,
    record_hash,
)
from .query import _Filter, _micros, _summarise


class JsonlAuditLog(LogFile):
    """One canonical JSON record per line (see the package docstring)."""

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
                handle = open(self.path, "rb")  # noqa: SIM115 - closed by the `with` below
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
