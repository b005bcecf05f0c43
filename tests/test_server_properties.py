"""Properties of the decision service: whatever body arrives, the answer is a decision or a
refusal with an error document, never a 5xx, and an approval only ever comes from the engine."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_helpers import AUTH, HELD, TOKEN
from starlette.testclient import TestClient

from protection_rules import Engine
from protection_rules.server import Limits, Tokens, create_app

ENGINE = Engine.from_policy(audit=None)
HTTP = TestClient(create_app(ENGINE, Tokens.of([TOKEN]), limits=Limits(max_body=20_000, max_depth=8, max_batch=5)))

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
documents = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=30
)
# request-like objects: a valid request with fields changed, added or removed
request_like = st.builds(
    lambda changes, dropped: {**{k: v for k, v in HELD.items() if k not in dropped}, **changes},
    st.dictionaries(st.sampled_from([*HELD, "state", "regime", "metadata", "current_score", "bogus"]), documents, max_size=3),
    st.sets(st.sampled_from(list(HELD))),
)
bodies = (
    documents.map(lambda d: json.dumps(d).encode())
    | request_like.map(lambda d: json.dumps(d).encode())
    | st.lists(request_like | documents, max_size=7).map(lambda rs: json.dumps({"requests": rs}).encode())
    | st.binary(max_size=200)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_any_body_gets_a_decision_or_a_refusal_never_a_5xx(body):
    response = HTTP.post("/v1/evaluate", content=body, headers=AUTH)
    assert response.status_code in (200, 400, 413, 422), response.text
    answer = response.json()
    if response.status_code != 200:
        assert set(answer) == {"error"} and answer["error"]["issues"]
        return
    decisions = answer.get("decisions", [answer])
    for decision in decisions:
        # an approval is a whole decision of the engine: every protection passed or was overridden
        if decision["approved"]:
            assert decision["blocking_systems"] == [] and "errors" not in decision
            assert all(entry["status"] in ("pass", "overridden", "not_applicable", "skipped") for entry in decision["trace"])
