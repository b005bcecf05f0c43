"""The Python API: `Engine.from_policy(path).evaluate(request)` -> `ProtectionDecision`."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import __version__
from .compiler import FACT_KIND, SENTINEL, CompiledPolicy, compile_policy
from .decision import assemble, failed_closed
from .errors import EngineFailure, Issue, RequestInvalid
from .facts import enrich, resolve_context
from .models import ProtectionDecision, ProtectionRequest
from .network import RuleNetwork
from .policy import Policy, load_policy
from .resources import default_policy_path


class Engine:
    """Decides requests under one compiled policy. Safe to share between threads.

    Several engines (several policy versions) live side by side in one process: each owns
    its own rule network, named after the policy's content hash.
    """

    def __init__(self, compiled: CompiledPolicy, *, new_id: Callable[[], str] | None = None):
        self.compiled = compiled
        self._protections = compiled.enabled_protections()
        self._new_id = new_id or (lambda: uuid.uuid4().hex)
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

    @property
    def policy(self) -> Policy:
        return self.compiled.policy

    def evaluate(
        self,
        request: ProtectionRequest | Mapping[str, Any],
        *,
        explain: bool = False,
        source: str | None = None,
    ) -> ProtectionDecision:
        """Decide one request. Never raises for bad input: an invalid request is a deny."""
        started = time.perf_counter()
        trace_id = self._new_id()
        try:
            return self._decide(request, explain=explain, source=source, trace_id=trace_id, started=started)
        except RequestInvalid as exc:
            return self._failed(_invalid_reason(exc.issues), exc.issues, request, trace_id, started)
        except EngineFailure as exc:
            issue = Issue("engine-failure", "$", str(exc), source)
            return self._failed(f"Engine error: {exc}", [issue], request, trace_id, started)
        except Exception as exc:  # noqa: BLE001 - the fail-closed boundary: no error is an approval
            message = f"{type(exc).__name__}: {exc}"
            issue = Issue("internal-error", "$", message, source)
            return self._failed(f"Internal error: {message}", [issue], request, trace_id, started)

    def evaluate_many(self, requests: Iterable[ProtectionRequest | Mapping[str, Any]], *, explain: bool = False) -> list[ProtectionDecision]:
        """Decide a batch; one decision per request, in the same order."""
        return [self.evaluate(request, explain=explain) for request in requests]

    def reject(self, issues: Sequence[Issue], *, source: str | None = None) -> ProtectionDecision:
        """The fail-closed decision for input that could not even be parsed (a bad JSON line)."""
        return self._failed(_invalid_reason(issues), issues, None, self._new_id(), time.perf_counter())

    def _decide(self, request: Any, *, explain: bool, source: str | None, trace_id: str, started: float) -> ProtectionDecision:
        if isinstance(request, ProtectionRequest):
            # re-validate typed requests too: a hand-built object must not skip the checks
            request = request.to_dict()
        parsed = ProtectionRequest.from_dict(request, source=source)
        ctx = resolve_context(parsed)
        fact = enrich(self._protections, ctx)
        fired = self._network.fire(fact)
        expected = self.compiled.expected(fact)
        if fired != expected:
            raise EngineFailure(f"rule network fired {list(fired)} but the policy's conditions give {list(expected)}")
        return assemble(
            self.compiled,
            ctx,
            fact,
            fired,
            trace_id=trace_id,
            engine_version=__version__,
            explanation=self.compiled.explain(fact) if explain else None,
            started=started,
        )

    def _failed(self, reason: str, issues: Any, request: Any, trace_id: str, started: float) -> ProtectionDecision:
        return failed_closed(
            self.compiled, reason, issues, request=request, trace_id=trace_id, engine_version=__version__, started=started
        )


def _invalid_reason(issues: Sequence[Issue]) -> str:
    first = issues[0] if issues else None
    return f"Request invalid: {first.path}: {first.message}" if first else "Request invalid"
