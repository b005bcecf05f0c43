"""The Python API: `Engine.from_policy(path).evaluate(request)` -> `ProtectionDecision`."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import __version__
from .alerts import AlertCallback, AlertThresholds, deliver
from .alerts import logger as alert_logger
from .canonical import canonical_bytes, checked_canonical_bytes
from .compiler import FACT_KIND, SENTINEL, CompiledPolicy, compile_policy
from .decision import assemble, failed_closed
from .errors import (
    AuditError,
    EngineFailure,
    Issue,
    RequestInvalid,
    StateError,
    UsageError,
)
from .facts import FactSource, enrich, resolve_context
from .loading import RequestDocument
from .metrics import Metrics
from .models import AssetState, ProtectionDecision, ProtectionRequest
from .network import RuleNetwork
from .parsing import instants_as_text, parse_request, prepare_request_validation, state_chronology_issues
from .paths import AUDIT_ENV, default_audit_path
from .policy import Policy, load_policy
from .protections import Context
from .record_json import EncodedRecord, decision_bytes, encode_record, part_bytes
from .recording import Recorder, wall_clock
from .resources import default_policy_path

if TYPE_CHECKING:
    from .audit import AuditSink
    from .commit import IssuedDecisions
    from .state import StateStore
    from .workers import EngineWorkers


def open_default_audit(target: str | Path | None = None) -> AuditSink:
    """The audit log at `target` (a path or postgresql:// URL), else `$PROTECT_AUDIT`, else the
    default path; an unopenable one denies all."""
    from .audit import UnwritableAudit, open_audit

    target = target or os.environ.get(AUDIT_ENV) or default_audit_path()
    try:
        return open_audit(target)
    except AuditError as exc:
        return UnwritableAudit(str(target), str(exc))


class _DefaultAudit:
    """Marks "no `audit` argument": record in the default audit trail (docs/semantics.md section 5: every decision)."""

    def __repr__(self) -> str:
        return "DEFAULT_AUDIT"


DEFAULT_AUDIT: Any = _DefaultAudit()

# Documents decided and recorded together (one audit transaction) by `evaluate_documents`
DOCUMENT_CHUNK = 1000


class Engine:
    """Decides requests under one compiled policy. Safe to share between threads.

    Several engines (several policy versions) live side by side in one process: each owns
    its own rule network, named after the policy's content hash. With a `state` store,
    requests without a `state` object read the asset's state from it. Every decision is
    recorded in the audit trail before it is returned, and one that cannot be recorded is a
    deny: by default in `$PROTECT_AUDIT` or the default audit log (see paths.py); pass
    `audit=None` to record nothing, or a sink of your own. `state` and `audit` also take a path
    or a `postgresql://` URL, opened (`open_state`, `open_audit`) and closed by the engine.

    `reload(path)` swaps in another policy while the engine runs; each call that decides
    takes the policy in force once, so its decisions are made wholly under one policy.
    `metrics()`, `health()` and `on_alert(callback)`: README, "Operations".
    """

    def __init__(
        self,
        compiled: CompiledPolicy,
        *,
        state: StateStore | str | Path | None = None,
        audit: AuditSink | str | Path | None = DEFAULT_AUDIT,
        new_id: Callable[[], str] | None = None,
        clock: Callable[[], int] = wall_clock,
    ):
        self._owns_state = isinstance(state, (str, Path))
        if self._owns_state:
            from .state import open_state  # imported when used: sqlite3 and the store's code

            state = open_state(state)
        self.state = state
        self._owns_audit = audit is DEFAULT_AUDIT or isinstance(audit, (str, Path))
        if self._owns_audit:
            audit = open_default_audit(audit if isinstance(audit, (str, Path)) else None)
        self.audit = audit
        self._clock = clock  # epoch microseconds: recording checks it, metrics stamp errors; never a decision
        self._issued = _issued_decisions() if self.audit is None else None
        prepare_request_validation()  # compile once here, not inside the first decision's time
        self._new_id = new_id or _random_id
        # Every rule network this engine built, by ruleset name. A network is never freed (see
        # docs/durable-rules.md section 2): a reload retires it here, and reloading the same
        # compiled policy again reuses it, so the leak is one network per distinct policy.
        self._networks: dict[str, RuleNetwork] = {}
        self._lock = threading.Lock()  # serialises reloads and callback registrations, never decisions
        self._in_force = self._prepare(compiled)
        self._reloads = 0
        self._metrics = Metrics(clock)
        self._alert_callbacks: tuple[AlertCallback, ...] = ()
        self._workers: EngineWorkers | None = None  # worker processes, on first `workers=N` (workers.py)

    @classmethod
    def from_policy(cls, policy: str | Path | Policy | None = None, **options: Any) -> Engine:
        """Load (a path, default: the shipped default policy), validate and compile a policy.

        Raises `PolicyInvalid` with every issue when the policy does not validate.
        """
        if not isinstance(policy, Policy):
            policy = load_policy(policy if policy is not None else default_policy_path())
        return cls(compile_policy(policy), **options)

    def close(self) -> None:
        """Stop this engine's worker processes; close the audit log and state store it opened
        itself (those passed in stay the caller's)."""
        if self._workers is not None:
            self._workers.close()
        if self._owns_audit and self.audit is not None:
            self.audit.close()
        if self._owns_state and self.state is not None:
            self.state.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def compiled(self) -> CompiledPolicy:
        """The compiled policy in force (a reload replaces it)."""
        return self._in_force.compiled

    @property
    def policy(self) -> Policy:
        return self._in_force.compiled.policy

    @property
    def _network(self) -> RuleNetwork:
        return self._in_force.network

    # ------------------------------------------------------------------------------ operations

    def reload(self, policy: str | Path | Policy) -> Policy:
        """Put another policy in force, atomically, once it has loaded, validated, compiled and
        built its rule network; return it.

        Raises `PolicyInvalid` with every issue (`UsageError` for a file that does not exist,
        `EngineFailure` if the rule network refuses it) and leaves the policy in force untouched.
        Calls deciding when the reload lands finish under the policy they started with.
        """
        if not isinstance(policy, Policy):
            policy = load_policy(policy)
        compiled = compile_policy(policy)
        with self._lock:
            self._in_force = self._prepare(compiled)
            self._reloads += 1
        return policy

    def _prepare(self, compiled: CompiledPolicy) -> _InForce:
        network = self._networks.get(compiled.ruleset_name)
        if network is None:
            network = RuleNetwork(
                compiled.ruleset_name,
                compiled.ruleset_json,
                kind=FACT_KIND,
                sentinel=SENTINEL,
                fact_types=compiled.fact_types,
                max_activations=compiled.max_activations,
            )
            self._networks[compiled.ruleset_name] = network
        return _InForce(compiled, network, compiled.fact_sources, compiled.policy.alerts)

    @property
    def reloads(self) -> int:
        """How many reloads put a policy in force since the engine was built."""
        return self._reloads

    def metrics(self) -> dict[str, Any]:
        """What this engine decided since it was built, across reloads (README, "Operations")."""
        return self._metrics.snapshot()

    def health(self) -> dict[str, Any]:
        """Status, the policy in force, the state store and audit sink probes, the error rate
        over the policy's `alerts.window` last decisions and the last error (README, "Operations")."""
        from .health import check_health

        in_force = self._in_force
        return check_health(
            policy=in_force.compiled.ref,
            reloads=self.reloads,
            state=self.state,
            audit=self.audit,
            errors=self._metrics.error_window(in_force.thresholds.window),
            thresholds=in_force.thresholds,
        )

    def on_alert(self, callback: AlertCallback) -> AlertCallback:
        """Call `callback(alert)` for every alert (besides the `protection_rules.alerts` logger);
        returns it, so it also works as a decorator. A callback that raises is logged."""
        with self._lock:
            self._alert_callbacks = (*self._alert_callbacks, callback)
        return callback

    # ------------------------------------------------------------------------------ deciding

    def evaluate(
        self,
        request: ProtectionRequest | Mapping[str, Any],
        *,
        explain: bool = False,
        source: str | None = None,
    ) -> ProtectionDecision:
        """Decide one request. Never raises for bad input: an invalid request is a deny."""
        in_force = self._in_force
        return self._recorded(
            in_force, [self._evaluate(in_force, request, explain=explain, source=source, trace_id=self._new_id())]
        )[0]

    def evaluate_many(
        self,
        requests: Iterable[ProtectionRequest | Mapping[str, Any]],
        *,
        explain: bool = False,
        sources: Sequence[str] | None = None,
        workers: int = 1,
    ) -> list[ProtectionDecision]:
        """Decide a batch: one decision per request, same order, one trace id, one audit write.

        `workers=N` (N > 1) decides it on N cores, this process and N-1 worker processes kept
        until `close()`, with the same decisions, trace id, audit write and metrics (workers.py;
        README, "Python API" and "Performance")."""
        in_force, trace_id = self._in_force, self._new_id()
        items = list(requests)
        labels = list(sources) if sources is not None else [None] * len(items)
        if _check_workers(workers) > 1:
            from .workers import evaluate_many

            many = evaluate_many(self, in_force, items, labels, explain=explain, trace_id=trace_id, workers=workers)
            return self._recorded(in_force, many)
        return self._recorded(
            in_force,
            [
                self._evaluate(in_force, r, explain=explain, source=s, trace_id=trace_id)
                for r, s in zip(items, labels, strict=True)
            ],
        )

    def evaluate_documents(
        self,
        documents: Iterable[RequestDocument],
        *,
        explain: bool = False,
        chunk_size: int = DOCUMENT_CHUNK,
        workers: int = 1,
    ) -> Iterator[tuple[RequestDocument, ProtectionDecision]]:
        """Decide requests read from a file or stream, parsed or not, as they arrive.

        Yields each document with its decision, in input order, one trace id for the whole
        call. Every `chunk_size` documents are recorded in one audit write before any of their
        decisions is yielded: memory stays bounded for any number of documents, and nothing
        unrecorded is ever handed out. The whole call decides under the policy in force when it
        starts (a reload meanwhile applies to the next call). `workers` as for `evaluate_many`.
        """
        in_force, trace_id = self._in_force, self._new_id()
        if _check_workers(workers) > 1:
            from .workers import evaluate_documents

            decided = evaluate_documents(self, in_force, documents, explain=explain, trace_id=trace_id, workers=workers)
            while done := list(islice(decided, chunk_size)):
                yield from zip([doc for doc, _ in done], self._recorded(in_force, [item for _, item in done]), strict=True)
            return
        pending = iter(documents)
        while chunk := list(islice(pending, chunk_size)):
            evaluated = [
                self._rejection(in_force, doc.issues, raw=doc.raw, trace_id=trace_id)
                if doc.issues
                else self._evaluate(in_force, doc.data, explain=explain, source=doc.label, trace_id=trace_id)
                for doc in chunk
            ]
            yield from zip(chunk, self._recorded(in_force, evaluated), strict=True)

    def _rejection(self, in_force: _InForce, issues: Sequence[Issue], *, raw: str | None, trace_id: str) -> _Evaluated:
        started = time.perf_counter()
        decision = self._failed(in_force, _invalid_reason(issues), issues, None, trace_id, started)
        return self._evaluated(decision, {"unparsed": raw} if raw is not None else None, None)

    def _evaluated(
        self,
        decision: ProtectionDecision,
        received: Any,
        ctx: Context | None,
        stored: AssetState | None = None,
        received_bytes: bytes | None = None,
    ) -> _Evaluated:
        # the record is built now, so a batch does not keep every request's context alive
        record = _record(decision, received, ctx, stored, received_bytes) if self.audit is not None else None
        return _Evaluated(decision, received, record)

    def _evaluate(self, in_force: _InForce, request: Any, *, explain: bool, source: str | None, trace_id: str) -> _Evaluated:
        started = time.perf_counter()
        recording = self.audit is not None
        try:
            decision, ctx = self._decide(in_force, request, explain=explain, source=source, trace_id=trace_id, started=started)
            received, received_bytes = _as_decided(request) if recording else (None, None)
            return self._evaluated(decision, received, ctx, None, received_bytes)
        except RequestInvalid as exc:
            decision = self._failed(in_force, _invalid_reason(exc.issues), exc.issues, request, trace_id, started)
            received, received_bytes = _as_received(request) if recording else (None, None)
            return self._evaluated(decision, received, None, getattr(exc, "stored", None), received_bytes)
        except EngineFailure as exc:
            issue = Issue("engine-failure", "$", str(exc), source)
            decision = self._failed(in_force, f"Engine error: {exc}", [issue], request, trace_id, started)
        except StateError as exc:
            issue = Issue("state-error", "$", str(exc), source)
            decision = self._failed(in_force, f"State store error: {exc}", [issue], request, trace_id, started)
        except Exception as exc:  # the fail-closed boundary: no error is ever an approval
            message = f"{type(exc).__name__}: {exc}"
            issue = Issue("internal-error", "$", message, source)
            decision = self._failed(in_force, f"Internal error: {message}", [issue], request, trace_id, started)
        received, received_bytes = _as_received(request) if recording else (None, None)
        return self._evaluated(decision, received, None, None, received_bytes)

    def _decide(
        self, in_force: _InForce, request: Any, *, explain: bool, source: str | None, trace_id: str, started: float
    ) -> tuple[ProtectionDecision, Context]:
        if isinstance(request, ProtectionRequest):
            # re-validate typed requests too: a hand-built object must not skip the checks
            request = request.to_dict()
        parsed = parse_request(request, source=source)
        stored = None
        if parsed.state is None and self.state is not None:
            stored = self.state.load(parsed.asset)
            if stored is not None:
                # docs/semantics.md section 2 holds for stored state too: a stored instant after
                # `current_date` is a bad request, not a silent pass
                issues = state_chronology_issues(stored, parsed.current_date, f"state store {self.state.path}")
                if issues:
                    raise _StoredStateInvalid(issues, stored)
        compiled = in_force.compiled
        ctx = resolve_context(parsed, stored)
        fact = enrich(in_force.sources, ctx)
        fired = in_force.network.fire(fact)
        expected = compiled.expected(fact)
        if fired != expected:
            raise EngineFailure(f"rule network fired {list(fired)} but the policy's conditions give {list(expected)}")
        decision = assemble(
            compiled,
            ctx,
            fact,
            fired,
            trace_id=trace_id,
            decision_id=self._new_id(),
            engine_version=__version__,
            explain=explain,
            started=started,
        )
        return decision, ctx

    def _failed(
        self, in_force: _InForce, reason: str, issues: Any, request: Any, trace_id: str, started: float
    ) -> ProtectionDecision:
        return failed_closed(
            in_force.compiled,
            reason,
            issues,
            request=request,
            trace_id=trace_id,
            decision_id=self._new_id(),
            engine_version=__version__,
            started=started,
        )

    # ------------------------------------------------------------------------------ recording

    def _recorded(self, in_force: _InForce, evaluated: list[_Evaluated]) -> list[ProtectionDecision]:
        """Write the batch's audit records in one go; if that fails, every decision is a deny.
        Then count the decisions as returned."""
        problem = None
        if self.audit is None:
            assert self._issued is not None
            for item in evaluated:
                self._issued.keep(item.decision)
            decisions = [item.decision for item in evaluated]
        else:
            try:
                self.audit.append([item.record for item in evaluated])
                decisions = [item.decision for item in evaluated]
            except (AuditError, OSError, ValueError, TypeError) as exc:
                problem = str(exc)
                message = f"the decision could not be recorded in the audit trail: {exc}"
                decisions = [
                    self._failed(
                        in_force,
                        f"Audit error: {message}",
                        [Issue("audit-error", "$", message, getattr(self.audit, "path", None))],
                        item.received,
                        item.decision.trace_id,
                        time.perf_counter(),
                    )
                    for item in evaluated
                ]
        # The decisions are final (and recorded): nothing after this point may change or lose them.
        try:
            alerts = self._metrics.observe(decisions, in_force.thresholds, in_force.compiled.ref, problem)
            if alerts:
                deliver(alerts, self._alert_callbacks)
        except Exception:
            alert_logger.exception("counting %d decision(s) failed; the decisions stand", len(decisions))
        return decisions

    # ------------------------------------------------------------------------------ state

    def commit(self, decision: ProtectionDecision | Mapping[str, Any] | str) -> bool:
        """Apply a decision's state changes (after the order executed); idempotent by decision id.

        Only a decision this engine's audit trail holds is applied, and only as recorded (see
        commit.py): given a decision, it must be exactly the recorded one; given a decision id
        (text), the recorded decision of that id is applied. An engine with `audit=None` keeps
        the state changes of the decisions it issued (the last 10,000 that change state) and
        commits only those. Returns False when
        the decision was already committed. Raises `StateError` without a store,
        `DecisionInvalid` for a decision that does not validate, is not found or differs from
        the record.
        """
        if self.state is None:
            raise StateError("no state store configured: pass state=... or --state PATH")
        from .commit import AuditedDecisions, Committer

        source = self._issued if self.audit is None else AuditedDecisions(self.audit)
        return Committer(self.state, source).commit(decision)

    def record_execution(self, asset: str, kind: Literal["open", "close"], at: Any, size: float | None = None) -> int:
        """Record an executed open or close at `at` (epoch microseconds, an aware datetime or
        ISO text; not later than this engine's clock allows); returns the instant recorded, in
        epoch microseconds. A close also ends grace."""
        if self.state is None:
            raise StateError("no state store configured: pass state=... or --state PATH")
        return Recorder(self.state, clock=self._clock).record_execution(asset, kind, at, size)


@dataclasses.dataclass(frozen=True, slots=True)
class _InForce:
    """The policy in force and what deciding under it needs; a call that decides reads it once."""

    compiled: CompiledPolicy
    network: RuleNetwork
    sources: tuple[FactSource, ...]
    thresholds: AlertThresholds


@dataclasses.dataclass(slots=True)  # not frozen: one per decision, and frozen fields cost ~2.5x to set
class _Evaluated:
    decision: ProtectionDecision
    received: Any
    record: dict[str, Any] | None


class _StoredStateInvalid(RequestInvalid):
    """The request is refused for the state the store holds; the record keeps that state."""

    def __init__(self, issues: Sequence[Issue], stored: AssetState):
        super().__init__(issues)
        self.stored = stored


def _record(
    decision: ProtectionDecision, received: Any, ctx: Context | None, stored: AssetState | None, received_bytes: bytes | None
) -> EncodedRecord:
    """The audit record: enough to replay the decision exactly (request + state + policy).

    `stored` is the state store's answer for a request refused because of it (no context);
    `received_bytes` the canonical JSON of `received`, when `_as_received` wrote it. The record is
    written as canonical JSON here, while its values are at hand (record_json.py)."""
    state_bytes = None
    if ctx is not None:
        state = ctx.state.to_dict() if ctx.state_source != "none" else None
        if ctx.state_source == "request":  # validated with the request (a store's is not trusted so far)
            state_bytes = part_bytes(state, checked=True)
    else:
        state = stored.to_dict() if stored is not None else None
    written = decision.to_dict()  # the record's copies of its fields are the same values, written once
    record = {
        "kind": "decision",
        "decision_id": decision.decision_id,
        "trace_id": decision.trace_id,
        "evaluated_at": written["evaluated_at"],
        "asset": decision.asset,
        "action": decision.action,
        "decision": decision.decision,
        "blocking_systems": written["blocking_systems"],
        "override_applied": decision.override_applied,
        "policy": written["policy"],
        "engine_version": decision.engine_version,
        "request": received,
        "state": state,
        "state_source": decision.state_source,
        "decision_record": written,
        "decision_time_ms": decision.decision_time_ms,
    }
    parts = {
        "request": received_bytes if received_bytes is not None else part_bytes(received),
        "state": state_bytes or (part_bytes(state) if state is not None else b"null"),
        "decision_record": decision_bytes(written),
    }
    # a part the reference encoder refuses leaves the record to the sink, which refuses the batch
    return encode_record(record, parts)


def _issued_decisions() -> IssuedDecisions:
    from .commit import IssuedDecisions  # imported when used: an engine with an audit trail never is

    return IssuedDecisions()


# Random ids are drawn ID_DRAW at a time: one getrandom system call serves that many decisions.
ID_DRAW = 256
_drawn_ids: deque[str] = deque()
if hasattr(os, "register_at_fork"):  # a forked child must not hand out its parent's next ids
    os.register_at_fork(after_in_child=_drawn_ids.clear)


def _random_id() -> str:
    # 128 random bits as hex, like uuid4().hex without building a UUID object. `popleft` is
    # atomic, so no two threads get one id; two threads that find the pool empty both refill it.
    try:
        return _drawn_ids.popleft()
    except IndexError:
        drawn = os.urandom(16 * ID_DRAW).hex()
        _drawn_ids.extend(drawn[start : start + 32] for start in range(32, len(drawn), 32))
        return drawn[:32]


def _as_received(request: Any) -> tuple[Any, bytes | None]:
    """The request as JSON for the audit trail, with its canonical JSON (None: the sink writes
    it); what cannot be JSON is kept as its repr."""
    if isinstance(request, ProtectionRequest):
        return request.to_dict(), None
    try:
        # as the audit trail will hash it: half a character is refused too
        return request, canonical_bytes(request)
    except (TypeError, ValueError):
        pass
    try:  # only then look for datetimes a Python caller handed in (a walk over the whole request)
        candidate = instants_as_text(request)[0]
        return candidate, canonical_bytes(candidate)
    except (TypeError, ValueError):
        pass
    return {"unparsed": repr(request)[:100_000]}, None  # repr escapes what is not text


def _as_decided(request: Any) -> tuple[Any, bytes | None]:
    """`_as_received` for a request that was decided: validation refused NaN, infinity and every
    value that is not JSON but an instant as a `datetime` (which orjson refuses, so
    `_as_received` writes it as text), so its canonical JSON needs no walk over it."""
    if isinstance(request, ProtectionRequest):
        return request.to_dict(), None
    try:
        return request, checked_canonical_bytes(request)
    except (TypeError, ValueError):
        return _as_received(request)


def _check_workers(workers: int) -> int:
    if type(workers) is not int or workers < 1:
        raise UsageError(f"`workers` must be a whole number of at least 1, got `{workers!r}`")
    return workers


def _invalid_reason(issues: Sequence[Issue]) -> str:
    first = issues[0] if issues else None
    return f"Request invalid: {first.path}: {first.message}" if first else "Request invalid"
