"""The Python API: `Engine.from_policy(path).evaluate(request)` -> `ProtectionDecision`."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import __version__
from .compiler import FACT_KIND, SENTINEL, CompiledPolicy, compile_policy
from .decision import assemble, failed_closed
from .errors import (
    AuditError,
    DecisionInvalid,
    EngineFailure,
    Issue,
    RequestInvalid,
    StateError,
)
from .facts import enrich, resolve_context
from .loading import RequestDocument, SourceMap
from .models import (
    ProtectionDecision,
    ProtectionRequest,
    prepare_request_validation,
    state_chronology_issues,
)
from .network import RuleNetwork
from .paths import AUDIT_ENV, default_audit_path
from .policy import Policy, load_policy
from .protections import Context
from .resources import default_policy_path
from .state import StateStore
from .timestamps import format_instant, parse_instant
from .validation import schema_issues

if TYPE_CHECKING:
    from .audit import AuditSink


def open_default_audit() -> AuditSink:
    """The audit log at `$PROTECT_AUDIT`, else the default path; an unopenable one denies all."""
    from .audit import UnwritableAudit, open_audit

    target = os.environ.get(AUDIT_ENV) or default_audit_path()
    try:
        return open_audit(target)
    except AuditError as exc:
        return UnwritableAudit(str(target), str(exc))


class _DefaultAudit:
    """Marks "no `audit` argument": record in the default audit trail (SPEC: every decision)."""

    def __repr__(self) -> str:
        return "DEFAULT_AUDIT"


DEFAULT_AUDIT: Any = _DefaultAudit()


class Engine:
    """Decides requests under one compiled policy. Safe to share between threads.

    Several engines (several policy versions) live side by side in one process: each owns
    its own rule network, named after the policy's content hash. With a `state` store,
    requests without a `state` object read the asset's state from it. Every decision is
    recorded in the audit trail before it is returned, and one that cannot be recorded is a
    deny: by default in `$PROTECT_AUDIT` or the default audit log (see paths.py); pass
    `audit=None` to record nothing, or a sink of your own.
    """

    def __init__(
        self,
        compiled: CompiledPolicy,
        *,
        state: StateStore | None = None,
        audit: AuditSink | None = DEFAULT_AUDIT,
        new_id: Callable[[], str] | None = None,
    ):
        self.compiled = compiled
        self.state = state
        self.audit = open_default_audit() if audit is DEFAULT_AUDIT else audit
        self._owns_audit = audit is DEFAULT_AUDIT
        self._protections = compiled.enabled_protections()
        prepare_request_validation()  # compile once here, not inside the first decision's time
        self._new_id = new_id or _random_id
        self._network = RuleNetwork(
            compiled.ruleset_name,
            compiled.ruleset_json,
            kind=FACT_KIND,
            sentinel=SENTINEL,
            fact_types=compiled.fact_types,
            max_activations=compiled.max_activations,
        )

    @classmethod
    def from_policy(cls, policy: str | Path | Policy | None = None, **options: Any) -> Engine:
        """Load (a path, default: the shipped default policy), validate and compile a policy.

        Raises `PolicyInvalid` with every issue when the policy does not validate.
        """
        if not isinstance(policy, Policy):
            policy = load_policy(policy if policy is not None else default_policy_path())
        return cls(compile_policy(policy), **options)

    def close(self) -> None:
        """Close the audit log this engine opened itself (sinks passed in stay the caller's)."""
        if self._owns_audit and self.audit is not None:
            self.audit.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def policy(self) -> Policy:
        return self.compiled.policy

    # ------------------------------------------------------------------------------ deciding

    def evaluate(
        self,
        request: ProtectionRequest | Mapping[str, Any],
        *,
        explain: bool = False,
        source: str | None = None,
    ) -> ProtectionDecision:
        """Decide one request. Never raises for bad input: an invalid request is a deny."""
        return self._recorded([self._evaluate(request, explain=explain, source=source, trace_id=self._new_id())])[0]

    def evaluate_many(
        self,
        requests: Iterable[ProtectionRequest | Mapping[str, Any]],
        *,
        explain: bool = False,
        sources: Sequence[str] | None = None,
    ) -> list[ProtectionDecision]:
        """Decide a batch: one decision per request, same order, one trace id, one audit write."""
        trace_id = self._new_id()
        items = list(requests)
        labels = list(sources) if sources is not None else [None] * len(items)
        return self._recorded(
            [self._evaluate(r, explain=explain, source=s, trace_id=trace_id) for r, s in zip(items, labels, strict=True)]
        )

    def evaluate_documents(self, documents: Sequence[RequestDocument], *, explain: bool = False) -> list[ProtectionDecision]:
        """Decide requests read from a file or stream, parsed or not: one audit write for all."""
        trace_id = self._new_id()
        return self._recorded(
            [
                self._rejection(doc.issues, raw=doc.raw, trace_id=trace_id)
                if doc.issues
                else self._evaluate(doc.data, explain=explain, source=doc.label, trace_id=trace_id)
                for doc in documents
            ]
        )

    def _rejection(self, issues: Sequence[Issue], *, raw: str | None, trace_id: str) -> _Evaluated:
        started = time.perf_counter()
        decision = self._failed(_invalid_reason(issues), issues, None, trace_id, started)
        return self._evaluated(decision, {"unparsed": raw} if raw is not None else None, None)

    def _evaluated(self, decision: ProtectionDecision, received: Any, ctx: Context | None) -> _Evaluated:
        # the record is built now, so a batch does not keep every request's context alive
        return _Evaluated(decision, received, _record(decision, received, ctx) if self.audit is not None else None)

    def _evaluate(self, request: Any, *, explain: bool, source: str | None, trace_id: str) -> _Evaluated:
        started = time.perf_counter()
        received = _as_received(request) if self.audit is not None else None
        try:
            decision, ctx = self._decide(request, explain=explain, source=source, trace_id=trace_id, started=started)
            return self._evaluated(decision, received, ctx)
        except RequestInvalid as exc:
            decision = self._failed(_invalid_reason(exc.issues), exc.issues, request, trace_id, started)
        except EngineFailure as exc:
            issue = Issue("engine-failure", "$", str(exc), source)
            decision = self._failed(f"Engine error: {exc}", [issue], request, trace_id, started)
        except StateError as exc:
            issue = Issue("state-error", "$", str(exc), source)
            decision = self._failed(f"State store error: {exc}", [issue], request, trace_id, started)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            issue = Issue("internal-error", "$", message, source)
            decision = self._failed(f"Internal error: {message}", [issue], request, trace_id, started)
        return self._evaluated(decision, received, None)

    def _decide(
        self, request: Any, *, explain: bool, source: str | None, trace_id: str, started: float
    ) -> tuple[ProtectionDecision, Context]:
        if isinstance(request, ProtectionRequest):
            # re-validate typed requests too: a hand-built object must not skip the checks
            request = request.to_dict()
        parsed = ProtectionRequest.from_dict(request, source=source)
        stored = None
        if parsed.state is None and self.state is not None:
            stored = self.state.load(parsed.asset)
            if stored is not None:
                # SPEC.md section 2 holds for stored state too: a stored instant after
                # `current_date` is a bad request, not a silent pass
                issues = state_chronology_issues(stored, parsed.current_date, f"state store {self.state.path}")
                if issues:
                    raise RequestInvalid(issues)
        ctx = resolve_context(parsed, stored)
        fact = enrich(self._protections, ctx)
        fired = self._network.fire(fact)
        expected = self.compiled.expected(fact)
        if fired != expected:
            raise EngineFailure(f"rule network fired {list(fired)} but the policy's conditions give {list(expected)}")
        decision = assemble(
            self.compiled,
            ctx,
            fact,
            fired,
            trace_id=trace_id,
            decision_id=self._new_id(),
            engine_version=__version__,
            explanation=self.compiled.explain(fact) if explain else None,
            started=started,
        )
        return decision, ctx

    def _failed(self, reason: str, issues: Any, request: Any, trace_id: str, started: float) -> ProtectionDecision:
        return failed_closed(
            self.compiled,
            reason,
            issues,
            request=request,
            trace_id=trace_id,
            decision_id=self._new_id(),
            engine_version=__version__,
            started=started,
        )

    # ------------------------------------------------------------------------------ recording

    def _recorded(self, evaluated: list[_Evaluated]) -> list[ProtectionDecision]:
        """Write the batch's audit records in one go; if that fails, every decision is a deny."""
        if self.audit is None:
            return [item.decision for item in evaluated]
        try:
            self.audit.append([item.record for item in evaluated])
        except (AuditError, OSError, ValueError, TypeError) as exc:
            message = f"the decision could not be recorded in the audit trail: {exc}"
            return [
                self._failed(
                    f"Audit error: {message}",
                    [Issue("audit-error", "$", message, getattr(self.audit, "path", None))],
                    item.received,
                    item.decision.trace_id,
                    time.perf_counter(),
                )
                for item in evaluated
            ]
        return [item.decision for item in evaluated]

    # ------------------------------------------------------------------------------ state

    def commit(self, decision: ProtectionDecision | Mapping[str, Any]) -> bool:
        """Apply a decision's state changes (after the order executed); idempotent by decision id.

        Returns False when this decision was already committed. Raises `StateError` without a
        store, `DecisionInvalid` for a decision document that does not validate.
        """
        if self.state is None:
            raise StateError("no state store configured: pass state=... or --state PATH")
        if not isinstance(decision, ProtectionDecision):
            issues = (
                schema_issues("decision", decision, SourceMap(None))
                if isinstance(decision, dict)
                else [Issue("schema-type", "$", "a decision must be a JSON object")]
            )
            if issues:
                raise DecisionInvalid(issues)
            decision = ProtectionDecision.from_dict(decision)
        return self.state.apply(decision, decision.decision_id)

    def record_execution(self, asset: str, kind: Literal["open", "close"], at: int | str, size: float | None = None) -> None:
        """Record an executed open or close (a close also ends the asset's grace period)."""
        if self.state is None:
            raise StateError("no state store configured: pass state=... or --state PATH")
        when = parse_instant(at) if isinstance(at, str) else at
        self.state.record_execution(asset, kind, when, size)


@dataclasses.dataclass(frozen=True, slots=True)
class _Evaluated:
    decision: ProtectionDecision
    received: Any
    record: dict[str, Any] | None


def _record(decision: ProtectionDecision, received: Any, ctx: Context | None) -> dict[str, Any]:
    """The audit record: enough to replay the decision exactly (request + state + policy)."""
    state = ctx.state.to_dict() if ctx is not None and ctx.state_source != "none" else None
    return {
        "kind": "decision",
        "decision_id": decision.decision_id,
        "trace_id": decision.trace_id,
        "evaluated_at": format_instant(decision.evaluated_at) if decision.evaluated_at is not None else None,
        "asset": decision.asset,
        "action": decision.action,
        "decision": decision.decision,
        "blocking_systems": list(decision.blocking_systems),
        "override_applied": decision.override_applied,
        "policy": decision.policy.to_dict(),
        "engine_version": decision.engine_version,
        "request": received,
        "state": state,
        "state_source": decision.state_source,
        "decision_record": decision.to_dict(),
        "decision_time_ms": decision.decision_time_ms,
    }


def _random_id() -> str:
    # 128 random bits as hex, like uuid4().hex without building a UUID object (5x cheaper)
    return os.urandom(16).hex()


def _as_received(request: Any) -> Any:
    """The request as JSON for the audit trail; what cannot be JSON is kept as its repr."""
    if isinstance(request, ProtectionRequest):
        return request.to_dict()
    try:
        json.dumps(request, allow_nan=False)
        return request
    except (TypeError, ValueError):
        return {"unparsed": repr(request)[:100_000]}


def _invalid_reason(issues: Sequence[Issue]) -> str:
    first = issues[0] if issues else None
    return f"Request invalid: {first.path}: {first.message}" if first else "Request invalid"
