"""The decision service (`protection_rules.server.create_app`), through Starlette's TestClient:
access, bounds, every endpoint, and fail-closed answers; no socket involved."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_helpers import AUTH, FAILING, HELD, NOW, OPEN, TOKEN, running
from starlette.testclient import TestClient

from protection_rules import Engine
from protection_rules.audit import UnwritableAudit, open_audit
from protection_rules.errors import InputInvalid, StateError, UsageError
from protection_rules.server import Limits, Tokens, create_app, load_tokens
from protection_rules.state import MemoryStateStore
from protection_rules.timestamps import parse_instant

ENDPOINTS = [
    ("POST", "/v1/evaluate", HELD),
    ("POST", "/v1/commit", {"decision_id": "0" * 32}),
    ("POST", "/v1/executions", {"asset": "AAPL", "type": "open", "at": NOW}),
    ("GET", "/v1/policy", None),
    ("POST", "/v1/policy/reload", None),
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
]


class Service:
    """An app over an engine with a memory state store and a SQLite audit trail in tmp_path."""

    made: list[Service] = []  # every one built by a test, closed after it (see close_services)

    def __init__(self, tmp_path, *, limits: Limits | None = None, audit: Any = None, engine: Engine | None = None, **options):
        Service.made.append(self)
        self.store = MemoryStateStore()
        self.audit = audit if audit is not None else open_audit(tmp_path / "audit.sqlite")
        self.engine = engine or Engine.from_policy(state=self.store, audit=self.audit)
        self.http = TestClient(
            create_app(self.engine, Tokens.of([TOKEN]), limits=limits, **options), raise_server_exceptions=False
        )

    def call(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = AUTH, raw: bytes | None = None):
        content = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        return self.http.request(method, path, content=content, headers=headers)

    def records(self) -> list[dict[str, Any]]:
        return list(self.audit.records())


@pytest.fixture(autouse=True)
def close_services():
    """Close the audit trail of every Service a test built (Python 3.13 warns of an unclosed
    SQLite connection, and warnings are errors)."""
    yield
    while Service.made:
        Service.made.pop().audit.close()


@pytest.fixture
def service(tmp_path):
    return Service(tmp_path)


def error(response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "exit_code", "issues"}
    return body["error"]


# ------------------------------------------------------------------------------ access

WRONG = {
    "no header": None,
    "wrong token": {"Authorization": "Bearer not-the-token-0123456789"},
    "basic scheme": {"Authorization": f"Basic {TOKEN}"},
    "bearer without token": {"Authorization": "Bearer "},
    "token without scheme": {"Authorization": TOKEN},
    "a prefix of the token": {"Authorization": f"Bearer {TOKEN[:-1]}"},
}


@pytest.mark.parametrize("method, path, body", ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
@pytest.mark.parametrize("headers", WRONG.values(), ids=WRONG.keys())
def test_without_an_accepted_token_nothing_is_done(service, method, path, body, headers):
    response = service.call(method, path, body, headers=headers or {})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert error(response)["code"] == "unauthorized"
    assert service.records() == [] and service.engine.metrics()["decisions"] == 0
    assert service.store.load("AAPL") is None and service.engine.reloads == 0


def test_health_needs_no_token(service):
    response = service.call("GET", "/v1/health", headers={})
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_an_unknown_path_is_401_without_a_token_and_404_with_one(service):
    assert service.call("GET", "/v2/secret", headers={}).status_code == 401
    response = service.call("GET", "/v2/secret")
    assert response.status_code == 404 and error(response)["code"] == "usage"
    assert service.call("GET", "/v1/evaluate").status_code == 405


TOKEN_FILES = {
    "plain": (f"{TOKEN}\n", True),
    "hashed": (f"# ops team\nsha256:{hashlib.sha256(TOKEN.encode()).hexdigest()}\n", True),
    "another token": ("someone-else-0123456789\n", False),
    "hashed uppercase hex": (f"sha256:{hashlib.sha256(TOKEN.encode()).hexdigest().upper()}\n\n", True),
}


@pytest.mark.parametrize("text, accepted", TOKEN_FILES.values(), ids=TOKEN_FILES.keys())
def test_tokens_file_lines_plain_or_hashed(tmp_path, monkeypatch, text, accepted):
    (tmp_path / "tokens").write_text(text)
    monkeypatch.setenv("PROTECT_TOKENS_FILE", str(tmp_path / "tokens"))
    tokens = load_tokens()
    assert tokens.accepts(f"Bearer {TOKEN}") is accepted
    assert tokens.accepts(f"bearer {TOKEN}") is accepted  # the scheme is case-insensitive
    assert not tokens.accepts(None) and not tokens.accepts("")


BAD_TOKEN_FILES = {
    "short token": ("short\n", InputInvalid, "at least 16 characters"),
    "bad digest": ("sha256:abc\n", InputInvalid, "64 hexadecimal digits"),
    "space inside": ("two words-0123456789\n", InputInvalid, "without spaces"),
}


@pytest.mark.parametrize("text, raised, message", BAD_TOKEN_FILES.values(), ids=BAD_TOKEN_FILES.keys())
def test_a_bad_tokens_file_is_refused_without_echoing_the_line(tmp_path, text, raised, message):
    (tmp_path / "tokens").write_text(f"{TOKEN}\n{text}")
    with pytest.raises(raised, match=message) as caught:
        load_tokens(tmp_path / "tokens")
    assert caught.value.issues[0].line == 2 and text.strip() not in str(caught.value)


def test_no_tokens_is_a_usage_error(tmp_path):
    (tmp_path / "tokens").write_text("# nobody yet\n\n")
    with pytest.raises(UsageError, match="no access tokens"):
        load_tokens(tmp_path / "tokens")
    with pytest.raises(UsageError, match="PROTECT_TOKENS_FILE is not set"):
        load_tokens()
    with pytest.raises(UsageError, match="no such file"):
        load_tokens(tmp_path / "missing")


# ------------------------------------------------------------------------------ bodies

DEEP = b"[" * 10_000 + b"]" * 10_000
BODIES = {
    # name: (raw body, status, error code, first issue code)
    "not JSON": (b"{", 400, "input-invalid", "json-syntax"),
    "empty": (b"", 400, "input-invalid", "body-empty"),
    "not UTF-8": (b'{"asset": "\xff"}', 400, "input-invalid", "file-encoding"),
    "NaN": (
        b'{"asset": "A", "action": "open", "current_date": "2026-01-01", "current_size": NaN}',
        400,
        "input-invalid",
        "json-syntax",
    ),
    "a number too large": (b'{"current_size": 1e400}', 400, "input-invalid", "number-too-large"),
    "duplicate key": (b'{"asset": "A", "asset": "B"}', 400, "input-invalid", "json-syntax"),
    "10,000 deep": (DEEP, 413, "too-large", "body-too-large"),
    "33 deep inside metadata": (
        json.dumps({**HELD, "metadata": json.loads("[" * 32 + "]" * 32)}).encode(),
        413,
        "too-large",
        "body-too-large",
    ),
    "over max_body": (json.dumps({**HELD, "reason": "x" * 40_000}).encode(), 413, "too-large", "body-too-large"),
    "batch over max_batch": (json.dumps({"requests": [HELD] * 11}).encode(), 413, "too-large", "body-too-large"),
    "an array": (b"[]", 422, "input-invalid", "schema-type"),
    "requests not an array": (b'{"requests": {}}', 422, "input-invalid", "schema-type"),
    "a batch with another field": (b'{"requests": [], "trace": 1}', 422, "input-invalid", "schema-unknown-field"),
}


@pytest.mark.parametrize("raw, status, code, issue", BODIES.values(), ids=BODIES.keys())
def test_a_body_that_is_no_request_is_refused_and_nothing_recorded(tmp_path, raw, status, code, issue):
    service = Service(tmp_path, limits=Limits(max_body=30_000, max_batch=10))  # the 10,000-deep body is 20,000 bytes
    response = service.call("POST", "/v1/evaluate", raw=raw)
    assert response.status_code == status
    refused = error(response)
    assert (refused["code"], refused["issues"][0]["code"]) == (code, issue)
    assert service.records() == [] and service.engine.metrics()["decisions"] == 0
    assert service.call("POST", "/v1/evaluate", HELD).status_code == 200  # still serving


def test_a_declared_length_over_the_bound_is_refused_before_reading(tmp_path):
    app = create_app(Engine.from_policy(audit=None), Tokens.of([TOKEN]), limits=Limits(max_body=100))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/evaluate",
        "raw_path": b"/v1/evaluate",
        "query_string": b"",
        "headers": [(b"authorization", AUTH["Authorization"].encode()), (b"content-length", b"101")],
    }
    sent: list[dict[str, Any]] = []

    async def receive():
        raise AssertionError("the body was read")

    async def send(message):
        sent.append(message)

    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 413 and b"101 bytes" in sent[1]["body"]


# ------------------------------------------------------------------------------ evaluate


def test_one_request_gives_one_recorded_decision(service):
    response = service.call("POST", "/v1/evaluate", HELD)
    assert response.status_code == 200
    decision = response.json()
    assert (decision["decision"], decision["blocking_systems"]) == ("deny", ["holding_period"])
    assert [r["decision_id"] for r in service.records()] == [decision["decision_id"]]


def test_a_batch_gives_its_decisions_in_order_one_trace_one_transaction(service):
    batch = [HELD, OPEN, {"asset": "AAPL", "action": "close", "current_date": NOW, "bogus": 1}, FAILING]
    response = service.call("POST", "/v1/evaluate", {"requests": batch})
    assert response.status_code == 200
    decisions = response.json()["decisions"]
    assert [(d["asset"], d["decision"]) for d in decisions] == [
        ("AAPL", "deny"),
        ("NVDA", "approve"),
        ("AAPL", "deny"),
        ("INTC", "deny"),
    ]
    assert decisions[2]["blocking_systems"] == ["error"] and decisions[2]["errors"][0]["code"] == "schema-unknown-field"
    assert len({d["trace_id"] for d in decisions}) == 1
    records = service.records()
    assert [r["decision_id"] for r in records] == [d["decision_id"] for d in decisions]
    assert {json.dumps(r["batch"]) for r in records} == {json.dumps({"first": 1, "size": 4})}


def test_an_audit_trail_that_cannot_record_makes_every_decision_a_deny_and_health_failing(tmp_path):
    service = Service(tmp_path, audit=UnwritableAudit(str(tmp_path / "gone.sqlite"), "the disk is full"))
    response = service.call("POST", "/v1/evaluate", {"requests": [OPEN, OPEN]})
    assert response.status_code == 200
    assert [(d["decision"], d["blocking_systems"]) for d in response.json()["decisions"]] == [("deny", ["error"])] * 2
    health = service.call("GET", "/v1/health", headers={})
    assert health.status_code == 503 and health.json()["status"] == "failing"


class _BrokenStore(MemoryStateStore):
    def load(self, asset):
        raise StateError("the state store is unreachable")


def test_a_failure_inside_a_decision_is_a_deny_in_a_200(tmp_path):
    engine = Engine.from_policy(state=_BrokenStore(), audit=None)
    response = Service(tmp_path, engine=engine).call("POST", "/v1/evaluate", OPEN)
    assert response.status_code == 200
    assert (response.json()["decision"], response.json()["blocking_systems"]) == ("deny", ["error"])


class _Exploding(Engine):
    def evaluate(self, request, **options):
        raise RuntimeError("secret detail at /srv/internal.py line 12")


def test_an_unexpected_failure_is_a_bare_500_without_a_trace(tmp_path, caplog):
    engine = _Exploding.from_policy(audit=None)
    response = Service(tmp_path, engine=engine).call("POST", "/v1/evaluate", OPEN)
    assert response.status_code == 500
    assert error(response) == {
        "code": "internal-error",
        "message": "internal error: the server logged the details",
        "exit_code": 4,
        "issues": [],
    }
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "secret detail" in caplog.text  # the log has it


# ------------------------------------------------------------------------------ commit, executions


def test_commit_by_id_or_by_document_applies_the_recorded_changes_once(service):
    first = service.call("POST", "/v1/evaluate", FAILING).json()
    assert service.call("POST", "/v1/commit", {"decision_id": first["decision_id"]}).json() == {
        "decision_id": first["decision_id"],
        "applied": True,
    }
    assert service.call("POST", "/v1/commit", {"decision": first}).json()["applied"] is False
    assert service.store.load("INTC").grace.started_at == parse_instant(NOW)


COMMITS = {
    "unknown id": ({"decision_id": "0" * 32}, "decision-invalid", "decision-not-recorded"),
    "forged asset": (None, "decision-invalid", "decision-differs"),
    "both forms": ({"decision_id": "x", "decision": {}}, "input-invalid", "schema-length"),
    "neither": ({}, "input-invalid", "schema-length"),
    "another field": ({"id": "x"}, "input-invalid", "schema-unknown-field"),
    "an id that is a number": ({"decision_id": 7}, "input-invalid", "schema-type"),
}


@pytest.mark.parametrize("body, code, issue", COMMITS.values(), ids=COMMITS.keys())
def test_a_commit_of_what_is_not_recorded_is_422_and_stores_nothing(service, body, code, issue):
    decision = service.call("POST", "/v1/evaluate", FAILING).json()
    if body is None:
        decision["state_changes"][0]["asset"] = "AAPL"
        body = {"decision": decision}
    response = service.call("POST", "/v1/commit", body)
    assert response.status_code == 422
    assert (error(response)["code"], error(response)["issues"][0]["code"]) == (code, issue)
    assert service.store.load("INTC") is None and service.store.load("AAPL") is None


def test_an_execution_is_recorded(service):
    response = service.call(
        "POST", "/v1/executions", {"asset": "AAPL", "type": "open", "at": "2026-03-10T09:00:00+01:00", "size": 0.05}
    )
    assert response.status_code == 201
    assert response.json() == {"asset": "AAPL", "recorded": "open", "at": "2026-03-10T08:00:00Z"}
    assert [(e.type, e.at) for e in service.store.events("AAPL")] == [("open", parse_instant("2026-03-10T08:00:00Z"))]


EXECUTIONS = {
    "in the future": ({"asset": "AAPL", "type": "open", "at": "2999-01-01T00:00:00Z"}, "timestamp-future"),
    "not open or close": ({"asset": "AAPL", "type": "increase", "at": NOW}, "schema-enum"),
    "no instant": ({"asset": "AAPL", "type": "open"}, "schema-required"),
    "negative size": ({"asset": "AAPL", "type": "open", "at": NOW, "size": -1}, "schema-range"),
}


@pytest.mark.parametrize("body, issue", EXECUTIONS.values(), ids=EXECUTIONS.keys())
def test_a_bad_execution_is_422_and_nothing_stored(service, body, issue):
    response = service.call("POST", "/v1/executions", body)
    assert response.status_code == 422 and error(response)["issues"][0]["code"] == issue
    assert service.store.events("AAPL") == []


# ------------------------------------------------------------------------------ operations


def test_metrics_are_the_engines_counts_in_prometheus_format(service):
    service.call("POST", "/v1/evaluate", {"requests": [HELD, OPEN, OPEN, {"asset": "A"}]})
    response = service.call("GET", "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("protect_decisions_total", (("decision", "approve"),))] == 2
    assert samples[("protect_decisions_total", (("decision", "deny"),))] == 2
    assert samples[("protect_invalid_total", ())] == 1
    assert samples[("protect_denials_total", (("protection", "holding_period"),))] == 1
    assert samples[("protect_denials_total", (("protection", "error"),))] == 1
    assert (
        "protect_policy_info",
        (("name", "default"), ("sha256", service.engine.policy.sha256), ("version", "1.0.0")),
    ) in samples


def _policy_file(tmp_path, min_days: int, *, broken: bool = False) -> str:
    from spec_helpers import DEFAULT_POLICY

    text = DEFAULT_POLICY.read_text()
    assert "min_days: 3" in text and "enabled: true" in text
    text = text.replace("min_days: 3", f"min_days: {min_days}")
    if broken:
        text = text.replace("enabled: true", "enabled: maybe", 1)
    (tmp_path / "policy.yaml").write_text(text)
    return str(tmp_path / "policy.yaml")


def test_reload_puts_a_valid_policy_in_force_and_keeps_the_old_one_for_an_invalid(tmp_path):
    service = Service(tmp_path, engine=Engine.from_policy(_policy_file(tmp_path, 3), audit=None))
    before = service.call("GET", "/v1/policy").json()
    assert before["policy"]["sha256"] == service.engine.policy.sha256 and before["document"]["kind"]
    _policy_file(tmp_path, -1, broken=True)  # two errors
    refused = service.call("POST", "/v1/policy/reload")
    assert refused.status_code == 422 and error(refused)["code"] == "policy-invalid"
    assert len(error(refused)["issues"]) == 2  # every error, not the first
    assert service.call("GET", "/v1/policy").json()["policy"] == before["policy"]
    _policy_file(tmp_path, 1)
    reloaded = service.call("POST", "/v1/policy/reload")
    assert reloaded.status_code == 200 and reloaded.json()["reloads"] == 1
    assert reloaded.json()["policy"]["sha256"] != before["policy"]["sha256"]
    assert service.call("POST", "/v1/evaluate", HELD).json()["decision"] == "approve"  # held 1 day of 1


def test_reload_is_refused_when_not_allowed(tmp_path):
    service = Service(tmp_path, reload_allowed=False)
    response = service.call("POST", "/v1/policy/reload")
    assert response.status_code == 409 and error(response)["code"] == "refused"


def test_the_openapi_document_holds_the_shipped_schemas_and_every_ref_resolves(service):
    from protection_rules.resources import schema

    document = service.call("GET", "/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    components = document["components"]["schemas"]
    request = {k: v for k, v in schema("request").items() if k not in ("$schema", "$id")}
    assert components["request"] == request
    assert set(document["paths"]) == {
        "/v1/evaluate",
        "/v1/commit",
        "/v1/executions",
        "/v1/health",
        "/v1/policy",
        "/v1/policy/reload",
        "/metrics",
        "/openapi.json",
    }
    refs = []

    def walk(value):
        if isinstance(value, dict):
            refs.extend([value["$ref"]] if "$ref" in value else [])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(document)
    assert refs and all(ref.removeprefix("#/components/schemas/") in components for ref in refs)
    assert document["paths"]["/v1/health"]["get"]["security"] == []


# ------------------------------------------------------------------------------ the event loop


class _Slow(Engine):
    entered = threading.Event()
    gate = threading.Event()

    def evaluate(self, request, **options):
        self.entered.set()
        self.gate.wait(10)
        return super().evaluate(request, **options)


def test_a_decision_in_progress_does_not_block_the_event_loop(tmp_path):
    engine = _Slow.from_policy(audit=None)
    with running(create_app(engine, Tokens.of([TOKEN]))) as url:
        answers: list[int] = []
        slow = threading.Thread(
            target=lambda: answers.append(httpx.post(f"{url}/v1/evaluate", json=OPEN, headers=AUTH, timeout=20).status_code)
        )
        slow.start()
        try:
            assert _Slow.entered.wait(10)  # the decision is being made
            health = httpx.get(f"{url}/v1/health", timeout=5)  # answered while the decision waits
            assert health.status_code == 200 and answers == []
        finally:
            _Slow.gate.set()
            slow.join(20)
    assert answers == [200]
