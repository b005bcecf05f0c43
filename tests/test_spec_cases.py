"""Golden cases of docs/semantics.md: every `tests/cases/*.yaml` file, every case in it, one test each.

Case file format (also the format of the risk team's `protect test` files)
--------------------------------------------------------------------------

    cases:
      - name: core_blocks_close            # unique within the file; the test id is <file>::<name>
        policy: policies/default.yaml      # optional; relative to the repository root (this is the default)
        policy_overrides:                  # optional; deep-merged into the policy document before loading:
          protections:                     #   mappings merge key by key, lists and scalars replace
            holding_period: {min_days: 1}
        request: {...}                     # the request, exactly as a caller sends it (request.v1 schema)
        expect:
          decision: deny                   # approve | deny                                  (required)
          blocking_systems: [core_asset_immunity]   # exact, in order                         (required)
          statuses: {grace_period: skipped}         # optional; only the systems listed are checked
          unblocks_at: 2026-03-21T00:00:00Z         # optional; the decision's, `null` for none
          trace_unblocks_at: {holding_period: ...}  # optional; per protection, `null` for none
          override_applied: false                   # optional
          override_reason_contains: [text, ...]     # optional; each must occur in override_reason
          state_changes: [grace_started]            # optional; the types, exact, in order
          reason_contains: text | [text, ...]       # optional; each must occur in the decision reason
          facts: {grace_period: {advised_size: 512.0}}  # optional; trace facts (floats compared to 1e-9 rel)

Timestamps are ISO-8601 strings; in `expect` they are compared as instants, so
`2026-03-21T00:00:00Z` and `2026-03-21` mean the same. Every expected value in the shipped cases
was computed by hand from docs/semantics.md, never copied from the engine's output.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from spec_helpers import REPO, EngineCache, same_value, statuses, trace_entry

from protection_rules.timestamps import parse_instant

CASES_DIR = Path(__file__).resolve().parent / "cases"
EXPECT_KEYS = {
    "decision",
    "blocking_systems",
    "statuses",
    "unblocks_at",
    "trace_unblocks_at",
    "override_applied",
    "override_reason_contains",
    "state_changes",
    "reason_contains",
    "facts",
}
CASE_KEYS = {"name", "policy", "policy_overrides", "request", "expect"}


def _load_cases() -> list[Any]:
    params = []
    files = sorted(CASES_DIR.glob("*.yaml"))
    assert files, f"no case files in {CASES_DIR}"
    for path in files:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert isinstance(document, dict) and isinstance(document.get("cases"), list), f"{path}: needs a `cases:` list"
        seen: set[str] = set()
        for case in document["cases"]:
            name = case.get("name")
            assert name and name not in seen, f"{path}: case names must be present and unique ({name!r})"
            seen.add(name)
            params.append(pytest.param(case, id=f"{path.stem}::{name}"))
    return params


CASES = _load_cases()


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineCache]:
    cache = EngineCache(tmp_path_factory.mktemp("case-policies"))
    yield cache
    cache.close()


def _instant(value: Any) -> int | None:
    if value is None:
        return None
    # YAML turns an unquoted `2026-03-21` into a date; accept it like its text
    return parse_instant(value if isinstance(value, str) else value.isoformat())


def _texts(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@pytest.mark.parametrize("case", CASES)
def test_spec_case(case: dict[str, Any], engines: EngineCache) -> None:
    unknown = set(case) - CASE_KEYS
    assert not unknown, f"unknown case keys {sorted(unknown)}"
    expect = case["expect"]
    unknown = set(expect) - EXPECT_KEYS
    assert not unknown, f"unknown expect keys {sorted(unknown)}"
    engine = engines.get(case.get("policy"), case.get("policy_overrides"))
    decision = engine.evaluate(case["request"])
    shown = decision.to_dict()

    assert expect["decision"] in ("approve", "deny")
    assert decision.decision == expect["decision"], shown
    assert decision.approved is (expect["decision"] == "approve"), shown
    assert list(decision.blocking_systems) == list(expect["blocking_systems"]), shown

    for system, status in (expect.get("statuses") or {}).items():
        assert statuses(decision).get(system) == status, (system, shown)
    if "unblocks_at" in expect:
        assert decision.unblocks_at == _instant(expect["unblocks_at"]), shown
    for system, when in (expect.get("trace_unblocks_at") or {}).items():
        assert trace_entry(decision, system).unblocks_at == _instant(when), (system, shown)
    if "override_applied" in expect:
        assert decision.override_applied is expect["override_applied"], shown
    if "override_reason_contains" in expect:
        assert decision.override_reason is not None, shown
        for text in _texts(expect["override_reason_contains"]):
            assert text in decision.override_reason, (text, decision.override_reason)
    if "state_changes" in expect:
        assert [change.type for change in decision.state_changes] == list(expect["state_changes"]), shown
    for text in _texts(expect.get("reason_contains") or []):
        assert text in decision.reason, (text, decision.reason)
    for system, wanted in (expect.get("facts") or {}).items():
        facts = trace_entry(decision, system).facts
        for key, value in wanted.items():
            assert key in facts, (system, key, dict(facts))
            assert same_value(facts[key], value), (system, key, facts[key], value)


def test_case_files_cover_every_protection() -> None:
    """Guard against a case directory that silently lost a whole protection's cases."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in CASES_DIR.glob("*.yaml"))
    for system in ("core_asset_immunity", "regime_override", "grace_period", "holding_period", "whipsaw_protection", "error"):
        assert system in text, system
    assert len(CASES) >= 80, len(CASES)


def test_policy_paths_are_relative_to_repo() -> None:
    for param in CASES:
        (case,) = param.values
        if "policy" in case:
            assert (REPO / case["policy"]).is_file(), case["policy"]
