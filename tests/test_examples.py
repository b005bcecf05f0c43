"""Every shipped example request gets the decision documented beside it (golden files).

The golden files in examples/decisions/ were checked by hand against docs/semantics.md (times, reasons,
advised sizes); `trace_id`, `decision_id` and `decision_time_ms` vary per run and are left out of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from protection_rules import Engine

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = sorted((ROOT / "examples" / "requests").glob("*.json"))
SCENARIOS = {"core_asset_close", "grace_close", "whipsaw_reopen", "holding_close", "critical_override", "plain_open"}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine.from_policy(ROOT / "policies" / "default.yaml") as engine:
        yield engine


def test_every_scenario_of_the_plan_has_an_example():
    assert {path.stem for path in REQUESTS} == SCENARIOS


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.stem)
def test_example_matches_its_golden_decision(engine, path):
    decision = engine.evaluate(json.loads(path.read_text())).to_dict()
    for volatile in ("trace_id", "decision_id", "decision_time_ms"):
        decision.pop(volatile)
    golden = json.loads((ROOT / "examples" / "decisions" / path.name).read_text())
    assert decision == golden
