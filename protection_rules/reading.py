"""Bounded reading of files and standard input, as bytes.

Whatever arrives (a 300 MB stream, `/dev/zero`, a line that never ends), nothing here holds
more than a limit plus one chunk: a document is read up to its limit, JSON Lines one line at
a time with a limit per line. Decoding and parsing are `loading`'s job.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import Issue, UsageError, os_reason

STDIN = "-"
CHUNK_BYTES = 64 * 1024
# The limit of one document: a policy, a request file, and each line of a JSON Lines batch.
MAX_DOCUMENT_BYTES = 1_000_000
# How far past the limit the reader looks for the end of an over-long line, so the lines after
# it still get read; a line that does not end within this (garbage, /dev/zero) ends the input.
MAX_SKIP_BYTES = 64 * 1024 * 1024


class DocumentInvalid(Exception):
    """Raised by the readers and parsers; carries the issues found so far."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        super().__init__("; ".join(str(i) for i in issues))


def display_name(path: str | Path) -> str:
    return "<stdin>" if str(path) == STDIN else str(path)


@contextmanager
def opened(path: str | Path) -> Iterator[Iterator[bytes]]:
    """The chunks of a file, or of standard input for `-`.

    A file that does not exist and a closed standard input are usage errors, raised at once;
    a file that exists but cannot be read raises `DocumentInvalid` (`file-unreadable`) when read.
    """
    name = display_name(path)
    if str(path) == STDIN:
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:  # started with `<&-`: Python sets sys.stdin to None
            raise UsageError("standard input is closed")
        yield _chunks(stream, name)
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed by the `with` below, after the yield)
    except FileNotFoundError:
        raise UsageError(f"{name}: no such file") from None
    except OSError as exc:
        # reported when read, like any other read error: the caller turns it into a document's issue
        problem = "is a directory, not a file" if isinstance(exc, IsADirectoryError) else f"cannot read: {os_reason(exc)}"
        yield _unreadable(name, problem)
        return
    with handle:
        yield _chunks(handle, name)


def _unreadable(name: str, problem: str) -> Iterator[bytes]:
    raise DocumentInvalid([Issue("file-unreadable", "$", problem, name)])
    yield b""  # a generator: the error surfaces when the input is read


def _chunks(stream: BinaryIO, name: str) -> Iterator[bytes]:
    read = getattr(stream, "read1", stream.read)
    while True:
        try:
            chunk = read(CHUNK_BYTES)
        except (OSError, ValueError) as exc:  # ValueError: a file object already closed
            if name == "<stdin>" and (isinstance(exc, ValueError) or exc.errno == errno.EBADF):
                raise UsageError("standard input is closed") from None
            problem = os_reason(exc) if isinstance(exc, OSError) else str(exc)
            raise DocumentInvalid([Issue("file-unreadable", "$", f"cannot read: {problem}", name)]) from None
        if not chunk:
            return
        yield chunk


def read_limited(chunks: Iterator[bytes], limit: int) -> tuple[bytes, bool]:
    """Read up to `limit` bytes: (the bytes, True) at the end of input, or (more than `limit`
    bytes, False) as soon as the input proves longer; `chunks` then continues after them."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        if len(buffer) > limit:
            return bytes(buffer), False
    return bytes(buffer), True


@dataclass(frozen=True, slots=True)
class Line:
    """One line of JSON Lines input, without its `\\n`.

    `size` is its length in bytes; over the limit, `data` holds only its first `limit` bytes.
    `ended` is False for an over-long line whose end was not found within `MAX_SKIP_BYTES`:
    the input was not read any further.
    """

    number: int
    data: bytes
    size: int
    ended: bool = True


def split_lines(chunks: Iterable[bytes], limit: int, skip_limit: int | None = None) -> Iterator[Line]:
    """Cut a stream of chunks into lines, holding at most `limit` plus one chunk in memory.

    An over-long line is skipped to its end (counted, not kept), for at most `skip_limit`
    bytes; if it has not ended by then, it is the last line yielded.
    """
    skip_limit = MAX_SKIP_BYTES if skip_limit is None else skip_limit
    number = 0
    buffer = bytearray()
    skipped: Line | None = None  # an over-long line being skipped to its end
    for chunk in chunks:
        if skipped is not None:
            end = chunk.find(b"\n")
            size = skipped.size + (len(chunk) if end < 0 else end)
            if end < 0:
                skipped = Line(skipped.number, skipped.data, size)
                if size - limit > skip_limit:
                    yield Line(skipped.number, skipped.data, size, ended=False)
                    return
                continue
            yield Line(skipped.number, skipped.data, size)
            skipped, chunk = None, chunk[end + 1 :]
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            number += 1
            yield Line(number, bytes(buffer[start : min(end, start + limit)]), end - start)
            start = end + 1
        del buffer[:start]
        if len(buffer) > limit:
            number += 1
            skipped = Line(number, bytes(buffer[:limit]), len(buffer))
            buffer.clear()
    if skipped is not None:
        yield skipped
    elif buffer:
        yield Line(number + 1, bytes(buffer), len(buffer))
