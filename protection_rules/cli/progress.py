"""A progress bar on stderr for long runs, only when stderr is a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int], None] | None]:
    """Yields `advance(n)`, or None when stderr is not a terminal (a log or a pipe gets no bar)."""
    if not sys.stderr.isatty():
        yield None
        return
    # the total is unknown (inputs are streamed): an iterable without a length makes click count
    unknown_length = (n for n in ())
    with click.progressbar(unknown_length, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar.update
