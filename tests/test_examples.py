"""Every shipped example request gets the decision documented beside it (golden files).

The golden files in examples/decisions/ were checked by hand against docs/semantics.md (times, reasons,
advised sizes). `trace_id`, `decision_id` and `decision_time_ms` vary per run: the golden files hold
fixed placeholders for them (32 zeros, 0), so each is a whole decision that the decision schema
accepts, and the comparison puts the same placeholders into the fresh decision.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from protection_rules import Engine
from protection_rules.resources import schema

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = sorted((ROOT / "examples" / "requests").glob("*.json"))
GOLDEN = sorted((ROOT / "examples" / "decisions").glob("*.json"))
PLACEHOLDERS = {"trace_id": "0" * 32, "decision_id": "0" * 32, "decision_time_ms": 0}
SCENARIOS = {"core_asset_close", "grace_close", "whipsaw_reopen", "holding_close", "critical_override", "plain_open"}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine.from_policy(ROOT / "policies" / "default.yaml") as engine:
        yield engine


def test_every_scenario_of_the_plan_has_an_example():
    assert {path.stem for path in REQUESTS} == SCENARIOS


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.stem)
def test_example_matches_its_golden_decision(engine, path):
    decision = {**engine.evaluate(json.loads(path.read_text())).to_dict(), **PLACEHOLDERS}
    golden = json.loads((ROOT / "examples" / "decisions" / path.name).read_text())
    assert decision == golden


def test_every_request_has_a_golden_decision():
    assert [p.name for p in GOLDEN] == [p.name for p in REQUESTS]


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_decision_is_a_valid_decision(path):
    golden = json.loads(path.read_text())
    jsonschema.Draft202012Validator(schema("decision")).validate(golden)
    assert {key: golden[key] for key in PLACEHOLDERS} == PLACEHOLDERS
