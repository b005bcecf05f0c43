"""Run a task over chunks of a long input on every core, in input order, failing closed.

Each worker process builds its own state once (`setup(*setup_args)`: the engines; durable-rules
handles belong to one process) and then runs `task(state, send(chunk))` per chunk. A
`WorkerPool` keeps its processes between calls for an owner that maps again and again. Results come
back in the order of the chunks. At most two chunks per worker are in flight, so memory stays bounded
for any input length. A worker that dies is an `EngineFailure`: never a silent partial result.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import chain
from typing import Any, TypeVar

from .errors import EngineFailure

T = TypeVar("T")
R = TypeVar("R")

# Per worker process: what `setup` built, for every later `task` call in that process.
_WORKER_STATE: Any = None


def ordered_map(
    task: Callable[[Any, Any], R],
    chunks: Iterable[Sequence[T]],
    *,
    setup: Callable[..., Any],
    setup_args: tuple[Any, ...] = (),
    workers: int = 1,
    send: Callable[[Sequence[T]], Any] = list,
    progress: Callable[[int], None] | None = None,
    pool: WorkerPool | None = None,
    here: Callable[[Sequence[T]], R] | None = None,
) -> Iterator[tuple[Sequence[T], R]]:
    """Yield `(chunk, task(state, send(chunk)))` for each chunk, in order.

    `task` and `setup` must be module-level functions (they are sent to the workers by name);
    `send` picks what of a chunk the task needs, so that only that is pickled. With one worker,
    or input of a single chunk, everything runs in this process: starting processes costs more
    than a small input. Given a `pool` (kept between calls by its owner, who built it with its
    own `setup`), the chunks go to it, and with `here` this process takes its turn (see
    `WorkerPool.map`). `progress(n)` is told of each chunk's length.
    """
    if pool is not None:
        yield from pool.map(task, chunks, send=send, progress=progress, here=here)
        return
    pending = iter(chunks)
    head = [chunk for chunk in (next(pending, None), next(pending, None)) if chunk is not None]
    chunks = chain(head, pending)
    if workers <= 1 or len(head) < 2:
        state = setup(*setup_args)
        for chunk in chunks:
            result = task(state, send(chunk))
            if progress is not None:
                progress(len(chunk))
            yield chunk, result
        return
    pool = WorkerPool(workers, setup, setup_args)
    try:
        yield from pool.map(task, chunks, send=send, progress=progress)
    finally:
        pool.close()


class WorkerPool:
    """`workers` processes, each holding what `setup(*setup_args)` built, until `close()`.

    Processes start with the first chunk and stay for later calls: an owner that decides batch
    after batch (the engine) pays their start-up once. Once a worker has died the pool is
    `broken` for good and its owner starts another.
    """

    def __init__(self, workers: int, setup: Callable[..., Any], setup_args: tuple[Any, ...] = ()):
        # spawn, not fork: a forked child would inherit this process's rule networks and threads
        context = multiprocessing.get_context("spawn")
        self.workers = workers
        self.broken = False
        self._executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(setup, setup_args))

    def map(
        self,
        task: Callable[[Any, Any], R],
        chunks: Iterable[Sequence[T]],
        *,
        send: Callable[[Sequence[T]], Any] = list,
        progress: Callable[[int], None] | None = None,
        here: Callable[[Sequence[T]], R] | None = None,
    ) -> Iterator[tuple[Sequence[T], R]]:
        """`(chunk, task(state, send(chunk)))` for each chunk, in order; a dead worker is an `EngineFailure`.

        With `here`, this process takes its turn: after each `workers` chunks sent, the next one
        gives `(chunk, here(chunk))`, computed here at once (in input order with the sending)
        while the workers decide the chunks sent before it."""
        in_flight: deque[tuple[Sequence[T], Future[R], bool]] = deque()  # (chunk, its result, sent?)
        sent = 0  # chunks in flight to the workers
        try:
            for index, chunk in enumerate(chunks):
                if here is not None and index % (self.workers + 1) == self.workers:
                    done: Future[R] = Future()
                    done.set_result(here(chunk))
                    in_flight.append((chunk, done, False))
                    continue
                in_flight.append((chunk, self._executor.submit(_run, task, send(chunk)), True))
                sent += 1
                while sent >= 2 * self.workers:
                    chunk_done, future, was_sent = in_flight.popleft()
                    sent -= was_sent
                    yield _done(chunk_done, future, progress)
            while in_flight:
                chunk_done, future, _ = in_flight.popleft()
                yield _done(chunk_done, future, progress)
        except BrokenProcessPool as exc:
            self.broken = True
            raise EngineFailure(f"a worker process died ({exc}); no partial result is reported") from None
        finally:
            for _, left, _ in in_flight:  # a caller that stopped early leaves nothing queued
                left.cancel()

    def pids(self) -> list[int]:
        """The worker processes' ids (those started so far)."""
        return [process.pid for process in list(self._executor._processes.values()) if process.pid is not None]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _done(chunk: Sequence[T], future: Future[R], progress: Callable[[int], None] | None) -> tuple[Sequence[T], R]:
    result = future.result()
    if progress is not None:
        progress(len(chunk))
    return chunk, result


def _start_worker(setup: Callable[..., Any], setup_args: tuple[Any, ...]) -> None:
    global _WORKER_STATE
    _WORKER_STATE = setup(*setup_args)


def _run(task: Callable[[Any, Any], R], sent: Any) -> R:
    return task(_WORKER_STATE, sent)


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last one shorter), read lazily."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
