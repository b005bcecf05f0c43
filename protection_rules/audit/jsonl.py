"""`JsonlAuditLog`: the JSON Lines audit backend, one canonical record per line, appended under
`fcntl.flock`; an append interrupted by a crash is rolled back by the next writer (see the
package docstring, `protection_rules.audit`)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from ..canonical import canonical_json
from ..errors import AuditError, os_reason
from ..probing import PROBE_TIMEOUT, probe_result
from .base import DEFAULT_TIMEOUT, LogFile, Mode, make_parent
from .chain import (
    GENESIS_HASH,
    ChainEntry,
    VerifyResult,
    link_problem,
    now_iso,
    record_hash,
    record_kind,
    seal,
    verify_entries,
)
from .query import ALL_RECORDS, RecordFilter, stats_row, summarise

_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class _Tail:
    """The end of the file as a writer or reader must treat it.

    `end`: the log's records end here. What follows is either the debris of an interrupted append
    (`dropped` says what: an incomplete last line and/or the records of a batch that is not whole)
    or, with `problem` set, damage that is no interrupted append. `before` and `last` are the last
    two records kept, the ones an append chains onto."""

    end: int
    before: ChainEntry | None = None
    last: ChainEntry | None = None
    dropped: dict[str, Any] | None = None
    problem: str | None = None


class _Damage(Exception):
    """The end of the file is neither whole batches nor an interrupted append."""


class JsonlAuditLog(LogFile):
    """One canonical JSON record per line (see the package docstring).

    Each record carries the sink's `batch` stamp {"first": sequence, "size": n}, so the end of the
    file shows whether the last batch was written whole. Opening for appending, and every append,
    rolls back an interrupted append (an incomplete last line, the records of a batch that is not
    whole) and records the rollback in the chain; a read-only open leaves such a tail out of
    everything it reads and never writes (`verify` says what it left out).
    """

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
            make_parent(self.path)
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
            raise AuditError(f"{self.path}: cannot open the audit log: {os_reason(exc)}") from exc
        try:
            with _flocked(self._fd, fcntl.LOCK_EX if mode == "append" else fcntl.LOCK_SH, timeout, self.path):
                self._check_first_line(self._fd)
                if mode == "append":
                    self._settle(self._fd)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def probe(self) -> dict[str, Any]:
        """Reachable: the file at the path is still the one this sink writes to (not moved,
        replaced or deleted); writable: opened for appending, and the end of the chain, read under
        a shared lock, is one an append would extend (an interrupted append is fine: the next
        append rolls it back). Nothing is written."""
        fd = self._fd
        if fd is None:
            return probe_result(False, False, f"{self.path}: the audit log is closed")
        reachable = False
        try:
            with self._snapshot(PROBE_TIMEOUT) as (handle, tail):
                ours, there = os.fstat(fd), os.fstat(handle.fileno())
                if (ours.st_dev, ours.st_ino) != (there.st_dev, there.st_ino):
                    return probe_result(False, False, f"{self.path}: the file was moved or replaced since it was opened")
                reachable = True
                if self._mode != "append":
                    return probe_result(True, False, f"{self.path}: opened read-only")
                self._chain_end(tail)
        except AuditError as exc:
            return probe_result(reachable, False, str(exc))
        except OSError as exc:
            return probe_result(reachable, False, f"{self.path}: {os_reason(exc)}")
        return probe_result(True, True)

    # -- writing

    def _append(self, batch: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:  # flock does not exclude threads sharing one open file
            fd = self._writer()
            with _flocked(fd, fcntl.LOCK_EX, self._timeout, self.path):
                sequence, prev_hash = self._settle(fd)
                sealed = seal(batch, sequence, prev_hash, now_iso(self._clock, self.path), self.path)
                self._write(fd, "".join(s.line for s in sealed).encode("utf-8"), os.fstat(fd).st_size)
        return [s.stored for s in sealed]

    def _settle(self, fd: int) -> tuple[int, str]:
        """Under LOCK_EX: check the end of the chain, roll back an interrupted append, and return
        the sequence and hash the next record chains onto."""
        tail = _scan(fd, os.fstat(fd).st_size)
        sequence, prev_hash = self._chain_end(tail)
        if tail.dropped is not None:
            sequence, prev_hash = self._roll_back(fd, tail, sequence, prev_hash)
        return sequence, prev_hash

    def _chain_end(self, tail: _Tail) -> tuple[int, str]:
        """The sequence and hash the next record chains onto; raises `AuditError` when the end
        is damaged or its last record does not link to the one before."""
        if tail.problem:
            raise AuditError(f"{self.path}: damaged audit log: {tail.problem}: nothing was appended: run `protect audit verify`")
        if tail.last is None:
            return 0, GENESIS_HASH
        broken = link_problem(tail.before, tail.last)
        if broken:
            raise AuditError(
                f"{self.path}: the audit chain is broken at its end: {broken}: nothing was appended: run `protect audit verify`"
            )
        return tail.last.sequence, tail.last.hash or ""

    def _roll_back(self, fd: int, tail: _Tail, sequence: int, prev_hash: str) -> tuple[int, str]:
        """Cut the debris of an interrupted append off (keeping a copy beside the log) and record
        that in the chain."""
        assert tail.dropped is not None
        now = now_iso(self._clock, self.path)
        saved = f"{self.path}.rollback-{tail.dropped['first_sequence']}-{tail.dropped['sha256'][:12]}"
        event = {
            "kind": "rollback",
            "at": now,
            "reason": "an append was interrupted before its decisions were returned",
            "dropped": {**tail.dropped, "saved_as": Path(saved).name},
        }
        (sealed,) = seal([event], sequence, prev_hash, now, self.path)
        try:
            _copy_out(fd, tail.end, saved)
            os.ftruncate(fd, tail.end)
            os.fsync(fd)
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot roll back an interrupted append: {os_reason(exc)}") from exc
        self._write(fd, sealed.line.encode("utf-8"), tail.end)
        return sealed.sequence, sealed.hash

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
                note = f" (and the partial write could not be removed: {os_reason(undo)})"
            raise AuditError(f"{self.path}: cannot write the audit log: {os_reason(exc)}{note}") from exc

    # -- reading

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, all kinds, in file order (which is sequence order in an intact log)."""
        for number, line in self._lines():
            record = _parse(line)
            if not isinstance(record, dict):
                raise AuditError(f"{self.path}: line {number} is not an audit record (run `protect audit verify`)")
            yield record

    def query(self, where: RecordFilter = ALL_RECORDS) -> Iterator[dict[str, Any]]:
        """The records that match `where`, in file order."""
        return (record for record in self.records() if where.matches(record))

    def stats(self, where: RecordFilter = ALL_RECORDS) -> dict[str, Any]:
        """Counts, rates, denials per protection, p50/p99 decision time, overall and per day, of
        the decisions that match `where` (records of other kinds are not decisions)."""
        return summarise(stats_row(record) for record in self.query(where.decisions_only()))

    def find(self, decision_id: str) -> dict[str, Any] | None:
        """The decision record with this id, or None: a scan of the whole file (SQLite has an
        index). Raises AuditError if the id is recorded twice or the record does not link to its
        neighbours."""
        needle = canonical_json(decision_id).encode("utf-8")
        found: tuple[int, bytes, dict[str, Any], bytes | None] | None = None
        after: bytes | None = None
        previous: bytes | None = None
        for number, line in self._lines():
            if found is not None and after is None:
                after = line
            if needle in line:
                record = _parse(line)
                if isinstance(record, dict) and record_kind(record) == "decision" and record.get("decision_id") == decision_id:
                    if found is not None:
                        raise AuditError(
                            f"{self.path}: decision `{decision_id}` is recorded twice (lines {found[0]} and {number}): "
                            "run `protect audit verify`"
                        )
                    found = (number, line, record, previous)
            previous = line
        if found is None:
            return None
        number, line, record, before = found
        problem = link_problem(
            _entry(before, number - 1) if before is not None else None,
            _entry(line, number),
            _entry(after, number + 1) if after is not None else None,
        )
        if problem:
            raise AuditError(
                f"{self.path}: the record of decision `{decision_id}` fails the chain check: {problem}: run `protect audit verify`"
            )
        return record

    def verify(self) -> VerifyResult:
        """Check every line's hash, sequence and link to the line before. An interrupted append
        at the end is left out and described in `torn_tail`; other damage at the end fails."""
        with self._snapshot() as (handle, tail):
            result = verify_entries(_entry(line, number) for number, line in _numbered(handle, tail.end))
        if tail.problem and result.ok:
            return replace(result, ok=False, problem=f"damaged audit log: {tail.problem}")
        return replace(result, torn_tail=tail.dropped)

    # -- internals

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        with self._snapshot() as (handle, tail):
            if tail.problem:
                raise AuditError(f"{self.path}: damaged audit log: {tail.problem} (run `protect audit verify`)")
            yield from _numbered(handle, tail.end)

    @contextmanager
    def _snapshot(self, timeout: float | None = None) -> Iterator[tuple[IO[bytes], _Tail]]:
        """A handle of our own and the end of the log as seen under LOCK_SH. Live writers append
        whole batches under LOCK_EX, so that end is a batch boundary; what lies beyond it is the
        debris of a crashed writer, or damage."""
        if self._fd is None:
            raise AuditError(f"{self.path}: the audit log is closed")
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed by the `with` below
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot read the audit log: {os_reason(exc)}") from exc
        with handle:
            with _flocked(handle.fileno(), fcntl.LOCK_SH, self._timeout if timeout is None else timeout, self.path):
                tail = _scan(handle.fileno(), os.fstat(handle.fileno()).st_size)
            yield handle, tail

    def _writer(self) -> int:
        if self._fd is None:
            raise AuditError(f"{self.path}: the audit log is closed")
        if self._mode == "read":
            raise AuditError(f"{self.path}: the audit log was opened read-only")
        return self._fd

    def _check_first_line(self, fd: int) -> None:
        """Refuse a file that is not an audit log: its first line must be a record. (A file of
        one incomplete line is an interrupted first append, left to `_scan`.)"""
        size = os.fstat(fd).st_size
        first = b""
        while b"\n" not in first and len(first) < min(size, self._FIRST_LINE_LIMIT):
            chunk = os.pread(fd, _CHUNK, len(first))
            if not chunk:
                break
            first += chunk
        if b"\n" not in first and len(first) == size:
            return
        if not _looks_like_record(first.split(b"\n", 1)[0]):
            raise AuditError(f"{self.path}: not an audit log: line 1 is not an audit record")


def _scan(fd: int, size: int) -> _Tail:
    """Find where the log's whole batches end: an incomplete last line is dropped, and so are the
    records of a last batch that ends before its `batch` stamp says it does."""
    complete = _complete_end(fd, size)
    lines = _backwards(fd, complete)
    try:
        if complete < size and os.pread(fd, 1, complete) != b"{":
            raise _Damage("the last line is incomplete and is not the start of a record")
        cut, records = complete, 0
        stamp: tuple[int, int] | None = None
        kept = next(lines, None)
        last: Any = None
        if kept is not None:
            last = _looks_like_record(kept[1])
            if last is None:
                raise _Damage("the last line is not an audit record")
            stamp = _stamp(last)
            if stamp is not None and last["sequence"] < sum(stamp) - 1:
                # The last batch is not whole: drop its records back to its first one.
                sequence = last["sequence"]
                cut, records = kept[0], 1
                while sequence > stamp[0]:
                    line = next(lines, None)
                    record = _looks_like_record(line[1]) if line is not None else None
                    if record is None or record["sequence"] != sequence - 1 or _stamp(record) != stamp:
                        raise _Damage(
                            f"the last batch (#{stamp[0]}, {stamp[1]} records) is not whole and does not run back to its start"
                        )
                    assert line is not None
                    sequence, cut, records = sequence - 1, line[0], records + 1
                kept = next(lines, None)
                last = _parse(kept[1]) if kept is not None else None
            else:
                stamp = None
    except _Damage as damage:
        return _Tail(complete, problem=str(damage))
    last_entry = _entry_of(last) if kept is not None else None
    before = next(lines, None) if kept is not None else None
    # Only the last record's own hash is checked: the one before it only has to be linked to.
    tail = _Tail(cut, _entry_of(_parse(before[1]), hashed=False) if before is not None else None, last_entry)
    if cut == size:
        return tail
    digest = hashlib.sha256()
    for block in _blocks(fd, cut, size):
        digest.update(block)
    dropped = {
        "records": records,
        "lines": records + (complete < size),
        "bytes": size - cut,
        "sha256": digest.hexdigest(),
        "first_sequence": (last_entry.sequence if last_entry is not None else 0) + 1,
        "batch_size": stamp[1] if stamp is not None else None,
    }
    return replace(tail, dropped=dropped)


def _stamp(record: Mapping[str, Any]) -> tuple[int, int] | None:
    """The record's batch as (first sequence, size); None for a record written before batches
    were stamped (a batch of its own)."""
    stamp = record.get("batch")
    if stamp is None:
        return None
    first = stamp.get("first") if isinstance(stamp, dict) else None
    size = stamp.get("size") if isinstance(stamp, dict) else None
    if not (_is_int(first) and _is_int(size) and first >= 1 and size >= 1 and first <= record["sequence"] < first + size):
        raise _Damage(f"record #{record['sequence']} has an impossible batch stamp `{canonical_json(stamp)}`")
    return first, size


def _entry(line: bytes, number: int | None = None) -> ChainEntry:
    """One line as the chain checks see it; `number` stands in for a missing sequence."""
    return _entry_of(_parse(line), number)


def _entry_of(record: Any, number: int | None = None, *, hashed: bool = True) -> ChainEntry:
    """A parsed line as the chain checks see it (`hashed=False`: its own hash is not checked)."""
    problem = None
    if record is None:
        problem = "the line is not valid JSON (the record was changed)"
    elif not (isinstance(record, dict) and isinstance(record.get("hash"), str)):
        problem = "the line is not an audit record (the record was changed)"
    elif hashed:
        try:
            if record_hash(record) != record["hash"]:
                problem = "the hash does not match the record's content (the record was changed)"
        except (TypeError, ValueError):
            problem = "the line is not canonical audit JSON (the record was changed)"
    if not isinstance(record, dict):
        return ChainEntry(number or 0, None, None, None, None, problem)
    claimed = record.get("sequence")
    if problem is None and not _is_int(claimed):
        problem = "the record has no sequence number (the record was changed)"
    kind = record_kind(record)
    return ChainEntry(
        claimed if _is_int(claimed) else (number or 0),
        record.get("decision_id"),
        kind if isinstance(kind, str) else None,
        record.get("hash"),
        record.get("prev_hash"),
        problem,
    )


def _parse(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _looks_like_record(line: bytes) -> dict[str, Any] | None:
    record = _parse(line)
    if (
        isinstance(record, dict)
        and _is_int(record.get("sequence"))
        and isinstance(record.get("hash"), str)
        and isinstance(record.get("prev_hash"), str)
        and ("decision_id" in record or "kind" in record)
    ):
        return record
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbered(handle: IO[bytes], end: int) -> Iterator[tuple[int, bytes]]:
    """The lines before offset `end` (a line boundary), numbered from 1, without newlines."""
    consumed = 0
    for number, line in enumerate(handle, start=1):
        if consumed >= end:
            break
        consumed += len(line)
        yield number, line.rstrip(b"\n")


def _complete_end(fd: int, size: int) -> int:
    """The offset just after the file's last newline (0 if it has none)."""
    if size and os.pread(fd, 1, size - 1) == b"\n":
        return size
    end, chunk = size, _CHUNK
    while end > 0:
        start = max(0, end - chunk)
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end, chunk = start, chunk * 2
    return 0


def _backwards(fd: int, end: int) -> Iterator[tuple[int, bytes]]:
    """The complete lines before offset `end` (just after a newline), last first, as (offset of
    the line, line without its newline); reads in growing chunks from the end."""
    buffer, buffer_start, line_end, chunk = b"", end, end, _CHUNK // 4
    while line_end > 0:
        newline = line_end - 1 - buffer_start  # index in buffer of the newline ending this line
        cut = buffer.rfind(b"\n", 0, newline) if newline >= 0 else -1
        if cut < 0 and buffer_start > 0:
            start = max(0, buffer_start - chunk)
            buffer = os.pread(fd, buffer_start - start, start) + buffer
            buffer_start, chunk = start, chunk * 2
            continue
        line_start = buffer_start + cut + 1
        yield line_start, buffer[cut + 1 : newline]
        buffer, line_end = buffer[: cut + 1], line_start


def _blocks(fd: int, start: int, end: int) -> Iterator[bytes]:
    while start < end:
        block = os.pread(fd, min(_CHUNK * 16, end - start), start)
        if not block:
            return
        start += len(block)
        yield block


def _copy_out(fd: int, start: int, target: str) -> None:
    """Keep the bytes from `start` to the end in a file of their own (synced) before they are cut."""
    with open(target, "wb") as out:
        for block in _blocks(fd, start, os.fstat(fd).st_size):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())


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
            raise AuditError(f"{path}: cannot lock the audit log: {os_reason(exc)}") from exc
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
