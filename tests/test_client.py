"""`protection_rules.client.Client`: the engine's calls over HTTP, with retries that never turn
an error into an approval; and the rebalancer adapter driven through it."""

from __future__ import annotations

import json
from datetime import datetime

import httpx
import pytest
from service_helpers import FAILING, HELD, NOW, OPEN, TOKEN, running

from protection_rules import Engine
from protection_rules.audit import open_audit
from protection_rules.client import AccessDenied, Client, ServiceUnavailable, TooLarge
from protection_rules.errors import DecisionInvalid, InputInvalid, RequestInvalid, StateError
from protection_rules.rebalancer import ProtectionAwareRebalancer, RebalancingTarget
from protection_rules.server import Limits, Tokens, create_app
from protection_rules.state import MemoryStateStore
from protection_rules.timestamps import parse_instant


@pytest.fixture
def served(tmp_path):
    """A real service (uvicorn in a thread) over a memory store and a SQLite audit trail."""
    store = MemoryStateStore()
    with open_audit(tmp_path / "audit.sqlite") as audit:
        engine = Engine.from_policy(state=store, audit=audit)
        with running(create_app(engine, Tokens.of([TOKEN]), limits=Limits(max_body=64_000))) as url:
            yield url, engine, store, audit


def test_the_calls_do_what_the_engine_does(served):
    url, engine, store, audit = served
    with Client(url, TOKEN) as client:
        held = client.evaluate(HELD)
        assert (held.approved, held.blocking_systems) == (False, ("holding_period",))
        batch = client.evaluate_many([OPEN, FAILING, {"asset": "AAPL"}])
        assert [d.decision for d in batch] == ["approve", "deny", "deny"]
        assert batch[2].blocking_systems == ("error",) and batch[2].errors[0].code == "schema-required"
        assert len({d.trace_id for d in batch}) == 1
        assert [r["decision_id"] for r in audit.records()] == [held.decision_id, *(d.decision_id for d in batch)]
        assert client.commit(batch[1]) is True and client.commit(batch[1].decision_id) is False
        assert store.load("INTC").grace.started_at == parse_instant(NOW)
        at = client.record_execution("NVDA", "open", datetime.fromisoformat("2026-03-12T10:05:00+01:00"), 0.05)
        assert at == parse_instant("2026-03-12T09:05:00Z") and [e.at for e in store.events("NVDA")] == [at]
        assert client.health()["status"] == "ok"
        assert client.policy.sha256 == engine.policy.sha256


def test_what_the_engine_would_raise_the_client_raises_as_the_same_class(served):
    url, _, store, _ = served
    with Client(url, TOKEN) as client:
        forged = client.evaluate(FAILING).to_dict()
        forged["state_changes"][0]["asset"] = "AAPL"
        with pytest.raises(DecisionInvalid) as caught:
            client.commit(forged)
        assert caught.value.issues[0].code == "decision-differs"
        with pytest.raises(InputInvalid, match="after the current time"):
            client.record_execution("AAPL", "open", "2999-01-01T00:00:00Z")
        with pytest.raises(TooLarge):
            client.evaluate({**HELD, "reason": "x" * 70_000})
        with pytest.raises(RequestInvalid, match="naive datetime"):
            client.evaluate({**HELD, "current_date": datetime(2026, 3, 12, 9)})  # refused before sending
    with Client(url, "not-the-token-0123456789") as stranger, pytest.raises(AccessDenied):
        stranger.evaluate(HELD)
    assert store.load("AAPL") is None and store.events("AAPL") == []


def test_an_unreachable_service_raises_and_never_approves():
    with Client("http://127.0.0.1:9", TOKEN, retries=1, backoff=0, timeout=2) as client:
        with pytest.raises(ServiceUnavailable, match="ConnectError"):
            client.evaluate(OPEN)
        with pytest.raises(ServiceUnavailable):
            client.health()


APPROVED = Engine.from_policy(audit=None).evaluate(OPEN).to_dict()


def _failing(kind: str):
    if kind == "connect":
        raise httpx.ConnectError("refused")
    if kind == "timeout":
        raise httpx.ReadTimeout("no answer")
    if kind == "502 html":
        return httpx.Response(502, text="<html>bad gateway</html>")
    if kind == "503 state-error":
        report = {"error": {"code": "state-error", "message": "the store is locked", "exit_code": 4, "issues": []}}
        return httpx.Response(503, json=report)
    if kind == "200 not a decision":
        return httpx.Response(200, json={"approved": True})
    if kind == "200 not JSON":
        return httpx.Response(200, text="approved")
    raise AssertionError(kind)


CALLS = {
    "evaluate": lambda c: c.evaluate(OPEN),
    "evaluate_many": lambda c: c.evaluate_many([OPEN]),
    "commit": lambda c: c.commit("0" * 32),
    "record_execution": lambda c: c.record_execution("AAPL", "open", NOW),
}

# (call, failure) -> (attempts made, error raised); retries=2: at most 3 attempts
RETRIES = {
    ("evaluate", "connect"): (3, ServiceUnavailable),
    ("evaluate", "timeout"): (3, ServiceUnavailable),
    ("evaluate", "502 html"): (3, ServiceUnavailable),
    ("evaluate", "200 not a decision"): (1, ServiceUnavailable),
    ("evaluate", "200 not JSON"): (1, ServiceUnavailable),
    ("evaluate_many", "timeout"): (3, ServiceUnavailable),
    ("evaluate_many", "200 not a decision"): (1, ServiceUnavailable),
    ("commit", "503 state-error"): (3, StateError),
    ("commit", "timeout"): (3, ServiceUnavailable),
    ("record_execution", "connect"): (3, ServiceUnavailable),  # nothing was sent: safe to repeat
    ("record_execution", "timeout"): (1, ServiceUnavailable),  # it may have been recorded
    ("record_execution", "503 state-error"): (1, StateError),
}


@pytest.mark.parametrize("call, failure", RETRIES, ids=[f"{c}-{f}" for c, f in RETRIES])
def test_retries_only_where_repeating_is_harmless_and_failures_raise(call, failure):
    attempts, raised = RETRIES[(call, failure)]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _failing(failure)

    with Client("http://service", TOKEN, retries=2, backoff=0, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(raised):
            CALLS[call](client)
    assert len(seen) == attempts
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in seen)


def test_a_retry_that_succeeds_returns_the_services_decision():
    answers = iter([httpx.Response(503, text="busy"), httpx.Response(200, json=APPROVED)])
    with Client("http://service", TOKEN, backoff=0, transport=httpx.MockTransport(lambda request: next(answers))) as client:
        assert client.evaluate(OPEN).decision_id == APPROVED["decision_id"]


def test_a_batch_answered_with_too_few_decisions_raises():
    answer = httpx.Response(200, json={"decisions": [APPROVED]})
    with Client("http://service", TOKEN, transport=httpx.MockTransport(lambda request: answer)) as client:
        with pytest.raises(ServiceUnavailable, match="not as many decisions"):
            client.evaluate_many([OPEN, OPEN])


# ------------------------------------------------------------------------------ the rebalancer

TARGETS = [
    RebalancingTarget(asset="NVDA", action="open", current_allocation_pct=0.0, target_allocation_pct=0.05, score=0.8),
    RebalancingTarget(asset="AAPL", current_allocation_pct=0.06, target_allocation_pct=0.0, score=0.45),
    RebalancingTarget(asset="MSFT", current_allocation_pct=0.04, target_allocation_pct=0.041),
]


def _rebalance(service, store) -> list[tuple]:
    store.record_execution("AAPL", "open", parse_instant("2026-03-10T14:30:00Z"), 0.06)
    rebalancer = ProtectionAwareRebalancer(service)
    result = rebalancer.validate(TARGETS, NOW)
    nvda = next(t for t in result.approved if t.asset == "NVDA")
    rebalancer.record_fill(nvda, "2026-03-12T09:05:00Z", 0.05)
    outcome = [
        (t.asset, t.action, t.decision.blocking_systems if t.decision else None) for t in (*result.approved, *result.denied)
    ]
    return [*outcome, result.summary.to_dict(), store.load("AAPL").grace, [e.type for e in store.events("NVDA")], result.policy]


def test_the_rebalancer_gets_the_same_result_through_a_client_as_through_an_engine(tmp_path):
    direct_store = MemoryStateStore()
    direct = _rebalance(Engine.from_policy(state=direct_store, audit=None), direct_store)
    store = MemoryStateStore()
    with open_audit(tmp_path / "audit.sqlite") as audit:
        app = create_app(Engine.from_policy(state=store, audit=audit), Tokens.of([TOKEN]))
        with running(app) as url, Client(url, TOKEN) as client:
            remote = _rebalance(client, store)
    assert remote == direct
    assert direct[:3] == [("NVDA", "open", ()), ("MSFT", "hold", None), ("AAPL", "close", ("grace_period", "holding_period"))]
    assert json.dumps(direct[3]["denials_by_protection"]) == '{"grace_period": 1, "holding_period": 1}'
