"""Deciding a batch on several cores: `Engine.evaluate_many(..., workers=N)` and
`Engine.evaluate_documents(..., workers=N)`.

N processes decide: this one and N-1 worker processes (spawned, never forked: durable-rules
handles belong to one process). The batch goes in chunks of `CHUNK` requests: N-1 chunks to the
workers, then one decided here with the engine itself, and so on. Each worker holds one engine
per policy, built from the policy the call sends (compiled there, and checked to give the same
ruleset name), and its own state store, opened again from the engine's path or URL. The workers
decide and build the audit records; everything that must happen once and in order stays here:
the trace id and the decision ids (from the engine's `new_id`, in input order, sent with each
request), the audit write (the batches of a one-process call, in input order, on the one hash
chain), metrics and alerts.

A decision comes back without its trace when the rule network made it: the trace stays lazy
here, as in one process. It is read from the audit record when there is one (the record holds
the whole decision), else written again, when first read, by the same steps from the same
inputs: the request as sent (the chunk's pickled message, kept), the state the store gave and
the rules that fired. So every trace is complete and exact, and costs nothing until read. Any
other decision (invalid input, an error) comes back whole.

The pool (`EngineWorkers`) starts with the first batch that needs it and lives until
`Engine.close()`. Batches of fewer than `MIN_BATCH` requests are decided in this process. A
worker that dies, or any failure of the pool, gives an engine-failure deny to every request
whose decision had not come back (to the whole batch in `evaluate_many`).
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from itertools import chain, count, islice, repeat
from multiprocessing.util import Finalize
from typing import TYPE_CHECKING, Any

from msgspec.structs import force_setattr, replace

from .compiler import CompiledPolicy, compile_policy
from .decision import _trace, assemble
from .engine import Engine, _as_received, _Evaluated, _random_id
from .errors import EngineFailure, Issue, StateError, UsageError
from .facts import FactSource, enrich, resolve_context
from .loading import RequestDocument
from .models import AssetState, LazyTrace, ProtectionRequest, ProtectionResult
from .parallel import WorkerPool, chunked, ordered_map
from .parsing import parse_request
from .state import open_state

if TYPE_CHECKING:
    from .engine import _InForce

# Fewer requests than this are decided in the engine's process: sending them costs more than
# a second core gives back (benchmarks/bench_workers.py measures the break-even).
MIN_BATCH = 500
# Requests per message to a worker: large enough that a message's cost (a few hundred µs) is
# small, small enough that the last chunks of a batch end close together.
CHUNK = 250

_WHOLE, _LAZY, _HERE = 0, 1, 2  # how a worker sends a decision back (`_HERE`: decide it in the engine's process)


class EngineWorkers:
    """The worker processes an engine keeps between calls; one call uses them at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: WorkerPool | None = None
        self._key: tuple[int, str | None] | None = None
        self._policy: tuple[str, bytes] | None = None

    def acquire(self, processes: int, state_target: str | None) -> WorkerPool:
        """The pool for this call (held until `release`): the one kept, unless it died or differs."""
        self._lock.acquire()
        key = (processes, state_target)
        if self._pool is not None and (self._pool.broken or self._key != key):
            self._pool.close()
            self._pool = None
        if self._pool is None:
            self._pool, self._key = WorkerPool(processes, _start, (state_target,)), key
        return self._pool

    def release(self) -> None:
        self._lock.release()

    def policy_bytes(self, compiled: CompiledPolicy) -> bytes:
        """The policy as sent to the workers, pickled once per policy put in force."""
        cached = self._policy
        if cached is None or cached[0] != compiled.ruleset_name:
            try:
                blob = pickle.dumps(compiled.policy, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                raise UsageError(
                    f"workers: the policy `{compiled.policy.name}` cannot be sent to a worker process: {exc}"
                ) from None
            cached = self._policy = (compiled.ruleset_name, blob)
        return cached[1]

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


# ------------------------------------------------------------------------------ the engine's side


def workers_of(engine: Engine) -> EngineWorkers:
    """The engine's pool keeper, made on first use (closed by `Engine.close()`)."""
    with engine._lock:
        if engine._workers is None:
            engine._workers = EngineWorkers()
        return engine._workers


def evaluate_many(
    engine: Engine,
    in_force: _InForce,
    requests: Sequence[Any],
    labels: Sequence[str | None],
    *,
    explain: bool,
    trace_id: str,
    workers: int,
) -> list[_Evaluated]:
    """One decision per request, in order; the whole batch denies if the pool fails."""

    def here(item: tuple[Any, str | None]) -> _Evaluated:
        return engine._evaluate(in_force, item[0], explain=explain, source=item[1], trace_id=trace_id)

    run = _Run(engine, in_force, explain=explain, trace_id=trace_id, workers=workers, split=_itself, here=here)
    items = list(zip(requests, labels, strict=True))
    evaluated = [done for _, done in run.decide(items)]
    if run.failure is not None:
        return [run.failed(item, run.failure) for item in items]
    return evaluated


def evaluate_documents(
    engine: Engine, in_force: _InForce, documents: Iterable[RequestDocument], *, explain: bool, trace_id: str, workers: int
) -> Iterator[tuple[RequestDocument, _Evaluated]]:
    """Each document with its decision, in order, as they come back."""

    def here(doc: RequestDocument) -> _Evaluated:
        if doc.issues:
            return engine._rejection(in_force, doc.issues, raw=doc.raw, trace_id=trace_id)
        return engine._evaluate(in_force, doc.data, explain=explain, source=doc.label, trace_id=trace_id)

    run = _Run(engine, in_force, explain=explain, trace_id=trace_id, workers=workers, split=_document_request, here=here)
    return run.decide(documents)


def _itself(item: tuple[Any, str | None]) -> tuple[Any, str | None]:
    return item


def _document_request(doc: RequestDocument) -> tuple[Any, str | None] | None:
    return None if doc.issues else (doc.data, doc.label)


class _Run:
    """One call: what it sends, how it reads the answers, and the failure that stopped the pool."""

    def __init__(
        self,
        engine: Engine,
        in_force: _InForce,
        *,
        explain: bool,
        trace_id: str,
        workers: int,
        split: Callable[[Any], tuple[Any, str | None] | None],
        here: Callable[[Any], _Evaluated],
    ):
        self.engine, self.in_force, self.explain, self.trace_id, self.workers = engine, in_force, explain, trace_id, workers
        self.split, self.here = split, here
        self.failure: Exception | None = None
        self.sent: deque[_SentRequests] = deque()  # each chunk's requests as sent, until it comes back
        self.outstanding: deque[Sequence[Any]] = deque()  # chunks sent or decided here, not yet handed out
        # checked before anything is decided, so that a call refuses whatever the batch's size
        self.state_target = state_target(engine.state)
        self.policy = workers_of(engine).policy_bytes(in_force.compiled)

    def decide(self, items: Iterable[Any]) -> Iterator[tuple[Any, _Evaluated]]:
        pending = iter(items)
        head = list(islice(pending, MIN_BATCH))
        if len(head) < MIN_BATCH:
            for item in head:
                yield item, self.here(item)
            return
        source = chain(head, pending)
        outstanding = self.outstanding
        owner = workers_of(self.engine)
        pool = owner.acquire(self.workers - 1, self.state_target)  # this process is one of the N
        try:
            chunks = ordered_map(_decide_chunk, chunked(source, CHUNK), setup=_start, pool=pool, send=self._send, here=self._here)
            for chunk, answers in chunks:
                if not isinstance(answers, _DecidedHere):
                    requests = self.sent.popleft()
                    answers = list(map(self._read, chunk, _answers(answers), repeat(requests), count()))
                outstanding.popleft()  # the whole chunk is decided: none of it can be lost now
                yield from zip(chunk, answers, strict=True)
        except Exception as exc:  # the fail-closed boundary: a dead worker, a refused message, a bug
            self.failure = exc
        finally:
            owner.release()
        if self.failure is not None:
            # what had not come back, and everything after it, is a deny: never a silent gap
            for item in chain(chain.from_iterable(outstanding), source):
                yield item, self.failed(item, self.failure)

    def _here(self, chunk: Sequence[Any]) -> _DecidedHere:
        self.outstanding.append(chunk)
        return _DecidedHere(self.here(item) for item in chunk)

    def _send(self, chunk: Sequence[Any]) -> tuple[Any, ...]:
        """The message for a chunk: each request with its label and decision id (drawn here, in
        input order, from the engine's `new_id`), pickled here so that a request that cannot be
        pickled is found (and decided here) rather than failing the pool."""
        self.outstanding.append(chunk)
        splits = [self.split(item) for item in chunk]
        ids = self._ids(sum(split is not None for split in splits))
        entries = [None if split is None else (*split, next(ids)) for split in splits]
        try:
            blob = pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            blob = pickle.dumps([_picklable(entry) for entry in entries], protocol=pickle.HIGHEST_PROTOCOL)
        self.sent.append(_SentRequests(blob))
        recording = self.engine.audit is not None
        return (self.in_force.compiled.ruleset_name, self.policy, recording, self.explain, self.trace_id, len(chunk), blob)

    def _ids(self, count: int) -> Iterator[str]:
        new_id = self.engine._new_id
        if new_id is _random_id:  # the same 128 random bits each, drawn in one call
            text = os.urandom(16 * count).hex()
            return (text[start : start + 32] for start in range(0, 32 * count, 32))
        return (new_id() for _ in range(count))

    def _read(self, item: Any, answer: Any, requests: _SentRequests, index: int) -> _Evaluated:
        kind = answer[0]
        if kind == _LAZY:
            _, decision, fired, stored, received, record = answer
            if record is not None:  # the record holds the whole decision
                build = partial(_trace_from_record, record["decision_record"]["trace"])
            else:
                compiled, sources = self.in_force.compiled, self.in_force.sources
                build = partial(_trace_again, compiled, sources, requests, index, stored, fired, self.explain)
            force_setattr(decision, "trace", LazyTrace(build))  # a new object, unpickled here: no one else holds it
            return _Evaluated(decision, received, record)
        if kind == _WHOLE:
            _, decision, received, record = answer
            return _Evaluated(decision, received, record)
        return self.here(item)

    def failed(self, item: Any, exc: Exception) -> _Evaluated:
        """An engine-failure deny (state-error when the worker's state store failed), or the
        decision an item that needs no worker gets here anyway."""
        split = self.split(item)
        if split is None:
            return self.here(item)
        request, label = split
        engine, code = self.engine, "state-error" if isinstance(exc, StateError) else "engine-failure"
        message = f"worker processes: {exc}"
        reason = f"{'State store' if code == 'state-error' else 'Engine'} error: {message}"
        received, received_bytes = _as_received(request) if engine.audit is not None else (None, None)
        started = time.perf_counter()
        decision = engine._failed(self.in_force, reason, [Issue(code, "$", message, label)], request, self.trace_id, started)
        return engine._evaluated(decision, received, None, None, received_bytes)


def state_target(store: Any) -> str | None:
    """What a worker opens the engine's state store from; `UsageError` for a store it cannot
    open again (one in memory, one of the caller's own kind)."""
    if store is None:
        return None
    target = getattr(store, "target", None)
    if not isinstance(target, str) or target == ":memory:":
        raise UsageError(
            f"workers: the state store `{type(store).__name__}` cannot be opened again in a worker process: "
            "give the engine its path or postgresql:// URL, or decide with workers=1"
        )
    return target


def _trace_from_record(entries: Sequence[dict[str, Any]]) -> tuple[ProtectionResult, ...]:
    return tuple(ProtectionResult.from_dict(entry) for entry in entries)


class _SentRequests:
    """A chunk's requests as a worker received them (the pickled message), read again only
    when a trace is: what the caller does with its own requests afterwards changes nothing."""

    __slots__ = ("_blob", "_entries")

    def __init__(self, blob: bytes):
        self._blob: bytes | None = blob
        self._entries: list[Any] | None = None

    def request(self, index: int) -> Any:
        if self._entries is None:
            self._entries, self._blob = pickle.loads(self._blob), None  # type: ignore[arg-type]
        return self._entries[index][0]


def _trace_again(
    compiled: CompiledPolicy,
    sources: tuple[FactSource, ...],
    requests: _SentRequests,
    index: int,
    stored: AssetState | None,
    fired: tuple[str, ...],
    explain: bool,
) -> tuple[ProtectionResult, ...]:
    """The trace the worker would have written: the same steps (`Engine._decide`, then
    `assemble`) from the same request and stored state."""
    request = requests.request(index)
    if isinstance(request, ProtectionRequest):
        request = request.to_dict()
    ctx = resolve_context(parse_request(request), stored)
    fact = enrich(sources, ctx)
    decision = assemble(compiled, ctx, fact, fired, trace_id="", decision_id="", engine_version="", explain=explain, started=0.0)
    return tuple(decision.trace)


class _DecidedHere(list):  # type: ignore[type-arg]
    """A chunk this process decided in its turn, as in one process."""


def _answers(answers: bytes | list[Any]) -> list[Any]:
    return pickle.loads(answers) if isinstance(answers, bytes) else answers


def _picklable(entry: tuple[Any, str | None, str] | None) -> tuple[Any, str | None, str] | None:
    """The entry, or None (decide it here) when its request cannot be pickled."""
    try:
        pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None
    return entry


# ------------------------------------------------------------------------------ in a worker process


class _Held:
    """What a worker process keeps: its state store and an engine per policy (by ruleset name)."""

    def __init__(self, state_target: str | None):
        self.store = None
        self.problem: StateError | None = None
        self.engines: dict[str, Engine] = {}
        self.next_id = ""
        if state_target is not None:
            try:
                self.store = open_state(state_target, create=False)
                Finalize(self, self.store.close, exitpriority=10)  # worker processes end without atexit
            except StateError as exc:
                self.problem = exc  # told to the engine's process with the first chunk

    def engine(self, ruleset_name: str, policy: bytes) -> Engine:
        engine = self.engines.get(ruleset_name)
        if engine is None:
            compiled = compile_policy(pickle.loads(policy))
            if compiled.ruleset_name != ruleset_name:
                raise EngineFailure(f"the policy compiled to `{compiled.ruleset_name}` in a worker, not `{ruleset_name}`")
            engine = self.engines[ruleset_name] = Engine(compiled, state=self.store, audit=None, new_id=self.take_id)
        return engine

    def take_id(self) -> str:
        return self.next_id  # the engine's process drew it: ids come from its `new_id`, in input order


class _Recording:
    """Stands in a worker engine's `audit`: the worker builds the audit records; the engine's
    process writes them."""

    path = "the engine's process"

    def append(self, records: Any) -> None:
        raise EngineFailure("a worker process never writes the audit trail")


_RECORDING = _Recording()


def _start(state_target: str | None) -> _Held:
    return _Held(state_target)


def _decide_chunk(held: _Held, sent: tuple[Any, ...]) -> bytes | list[Any]:
    ruleset_name, policy, recording, explain, trace_id, count, blob = sent
    if held.problem is not None:
        raise held.problem
    try:
        entries = pickle.loads(blob)
    except Exception:  # a class this process cannot import: the engine's process decides the chunk
        return [(_HERE,)] * count
    engine = held.engine(ruleset_name, policy)
    engine.audit = _RECORDING if recording else None  # whether `_evaluate` builds the records
    in_force = engine._in_force
    out: list[Any] = []
    seen: dict[tuple[str, ...], tuple[str, ...]] = {}  # one object per set of fired rules: pickled once a chunk
    for entry in entries:
        if entry is None:
            out.append((_HERE,))
            continue
        request, label, held.next_id = entry
        done = engine._evaluate(in_force, request, explain=explain, source=label, trace_id=trace_id)
        out.append(_answer(done, seen))
    return pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)


def _answer(done: _Evaluated, seen: dict[tuple[str, ...], tuple[str, ...]]) -> tuple[Any, ...]:
    decision, trace = done.decision, done.decision.trace
    build = getattr(trace, "_build", None) if isinstance(trace, LazyTrace) else None
    if isinstance(build, partial) and build.func is _trace and len(build.args) == 7:
        ctx, fired = build.args[1], tuple(build.args[3])
        fired = seen.setdefault(fired, fired)
        stored = ctx.state if ctx.state_source == "store" and done.record is None else None
        return (_LAZY, replace(decision, trace=()), fired, stored, done.received, done.record)
    if isinstance(trace, LazyTrace):
        try:
            trace.entries()  # written here, so that sending it cannot fail
        except Exception as exc:
            raise EngineFailure(f"writing a decision's trace failed: {type(exc).__name__}: {exc}") from None
    return (_WHOLE, decision, done.received, done.record)
