"""A client of the decision service (`protect serve`): the engine's calls, over HTTP.

    from protection_rules.client import Client
    with Client("http://127.0.0.1:8181", token) as service:
        decision = service.evaluate({"asset": "AAPL", "action": "close", "current_date": "2026-03-12T09:00:00Z"})

It returns what an `Engine` returns (`ProtectionDecision` values, the same denials with `error`
for a request that does not validate or a failure inside a decision), so the rebalancer
adapter takes either. What an engine would raise, the client raises too, as the same classes
(the service answers with error.v1 documents naming them): `DecisionInvalid` for a commit the
audit trail does not hold, `InputInvalid` for an execution in the future, `StateError` for a
store that fails. Its own errors: `AccessDenied` (a missing or wrong token) and `TooLarge` (a
body over the service's bounds).

**Failures are never approvals.** A service that cannot be reached, that times out, or that
answers 5xx (after the retries) raises `ServiceUnavailable`; an answer that is not a decision
raises it too. No call ever returns a decision the service did not send.

**Retries** (`retries`, with exponential backoff from `backoff` seconds) are made only where
repeating cannot do harm: a connection that could not be opened (nothing was sent) for every
call; a timeout, a dropped connection or a 5xx answer only for `evaluate`, `evaluate_many`,
`commit` (idempotent by decision id), `health` and `policy`. Evaluating changes no state, but
a retried evaluation whose first answer was lost leaves a decision record nobody received in
the audit trail; every decision a caller receives is recorded exactly once.
`record_execution` is not repeated once sent: the execution may have been recorded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import httpx

from .errors import (
    AccessDenied,
    Issue,
    ProtectionRulesError,
    RequestInvalid,
    ServiceUnavailable,
    TooLarge,
    error_from_report,
)
from .models import PolicyRef, ProtectionDecision, ProtectionRequest
from .parsing import instants_as_text
from .timestamps import format_instant, to_instant

__all__ = ["AccessDenied", "Client", "ServiceUnavailable", "TooLarge"]

_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout)  # no byte of the call reached the service


class Client:
    """Calls one decision service at `url` with a bearer `token`. Safe to share between threads.

    `timeout`: seconds for each attempt (connect, send, wait for the answer); `retries`: how
    many more attempts a retryable failure gets; `transport`: an httpx transport (tests)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.1,
        transport: httpx.BaseTransport | None = None,
    ):
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("retries and backoff must be >= 0 and timeout > 0")
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ the calls

    def evaluate(self, request: ProtectionRequest | Mapping[str, Any]) -> ProtectionDecision:
        """Decide one request (recorded by the service before it answers)."""
        return _decision(self._call("POST", "/v1/evaluate", _document(request, "$"), idempotent=True))

    def evaluate_many(self, requests: Iterable[ProtectionRequest | Mapping[str, Any]]) -> list[ProtectionDecision]:
        """Decide a batch: one decision per request, same order, one trace id, one audit transaction."""
        documents = [_document(request, f"$[{index}]") for index, request in enumerate(requests)]
        answer = self._call("POST", "/v1/evaluate", {"requests": documents}, idempotent=True)
        decisions = answer.get("decisions") if isinstance(answer, dict) else None
        if not isinstance(decisions, list) or len(decisions) != len(documents):
            raise ServiceUnavailable(f"{self.url}: the answer to a batch of {len(documents)} is not as many decisions")
        return [_decision(decision) for decision in decisions]

    def commit(self, decision: ProtectionDecision | Mapping[str, Any] | str) -> bool:
        """Apply a recorded decision's state changes; False when committed before. A decision
        must be exactly the recorded one; a decision id (text) commits the recorded decision."""
        if isinstance(decision, str):
            body: dict[str, Any] = {"decision_id": decision}
        else:
            body = {"decision": decision.to_dict() if isinstance(decision, ProtectionDecision) else dict(decision)}
        answer = self._call("POST", "/v1/commit", body, idempotent=True)
        return _field(answer, "applied", bool, self.url)

    def record_execution(self, asset: str, kind: Literal["open", "close"], at: Any, size: float | None = None) -> int:
        """Record an executed open or close; returns the instant recorded (epoch microseconds)."""
        try:
            when = format_instant(to_instant(at))
        except ValueError as exc:
            raise RequestInvalid([Issue("timestamp-invalid", "$.at", str(exc))]) from None
        answer = self._call("POST", "/v1/executions", {"asset": asset, "type": kind, "at": when, "size": size}, idempotent=False)
        try:
            return to_instant(_field(answer, "at", str, self.url))
        except ValueError:
            raise ServiceUnavailable(f"{self.url}: the answer's `at` is not an instant") from None

    def health(self) -> dict[str, Any]:
        """The service's `Engine.health()` (also when it is `failing`, which the service answers with 503)."""
        return self._call("GET", "/v1/health", None, idempotent=True, answered=(503,))

    @property
    def policy(self) -> PolicyRef:
        """The policy in force on the service (what answered this call; the next may differ)."""
        ref = _field(self._call("GET", "/v1/policy", None, idempotent=True), "policy", dict, self.url)
        try:
            return PolicyRef(str(ref["name"]), str(ref["version"]), str(ref["sha256"]))
        except KeyError:
            raise ServiceUnavailable(f"{self.url}: the answer names no policy") from None

    # ------------------------------------------------------------------------------ transport

    def _call(self, method: str, path: str, body: Any, *, idempotent: bool, answered: tuple[int, ...] = ()) -> Any:
        content = None if body is None else json.dumps(body, allow_nan=False, ensure_ascii=False).encode("utf-8")
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, path, content=content)
            except httpx.HTTPError as exc:
                if last or not (idempotent or isinstance(exc, _NEVER_SENT)):
                    raise ServiceUnavailable(f"{self.url}{path}: {type(exc).__name__}: {exc}") from None
            else:
                if response.status_code < 500 or response.status_code in answered or last or not idempotent:
                    return self._answer(response, path, answered)
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _answer(self, response: httpx.Response, path: str, answered: tuple[int, ...]) -> Any:
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success or response.status_code in answered:
            if data is None:
                raise ServiceUnavailable(f"{self.url}{path}: the answer is not JSON (HTTP {response.status_code})")
            return data
        error = error_from_report(data)
        if response.status_code >= 500 and (error is None or type(error) is ProtectionRulesError):
            raise ServiceUnavailable(f"{self.url}{path}: HTTP {response.status_code}" + (f": {error}" if error else ""))
        if error is None:
            raise ProtectionRulesError(f"{self.url}{path}: HTTP {response.status_code} without an error document")
        raise error


def _document(request: ProtectionRequest | Mapping[str, Any], path: str) -> Any:
    """A request as JSON: instants as ISO text; a naive datetime is refused here, never guessed."""
    if isinstance(request, ProtectionRequest):
        return request.to_dict()
    data, naive = instants_as_text(request)
    if naive:
        raise RequestInvalid([Issue(issue.code, path + issue.path.removeprefix("$"), issue.message) for issue in naive])
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RequestInvalid([Issue("json-value", path, f"the request cannot be sent as JSON: {exc}")]) from None
    return data


def _decision(data: Any) -> ProtectionDecision:
    try:
        return ProtectionDecision.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ServiceUnavailable(f"the service's answer is not a decision: {type(exc).__name__}: {exc}") from None


def _field(answer: Any, key: str, kind: type, url: str) -> Any:
    value = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(value, kind):
        raise ServiceUnavailable(f"{url}: the answer has no `{key}`")
    return value
