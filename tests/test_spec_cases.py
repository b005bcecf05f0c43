"""Golden cases of docs/semantics.md: every `tests/cases/*.yaml` file, every case in it, one test each,
run through the library's case runner (`protection_rules.testing`), the one `protect test` uses.

The format is that of `protect test` (schemas/cases.v1.schema.json; README "Testing a policy"):

    cases:
      - name: core_blocks_close            # unique within the file; the test id is <file>::<name>
        policy_overrides:                  # optional; deep-merged into the policy document before loading:
          protections:                     #   mappings merge key by key, lists and scalars replace
            holding_period: {min_days: 1}
        request: {...}                     # the request, exactly as a caller sends it (request.v1 schema)
        expect:                            # at least one field; only the fields given are checked
          decision: deny                   # approve | deny
          blocking_systems: [core_asset_immunity]   # exact, in order
          statuses: {grace_period: skipped}         # only the systems listed are checked
          unblocks_at: 2026-03-21T00:00:00Z         # the decision's, `null` for none
          trace_unblocks_at: {holding_period: ...}  # per protection, `null` for none
          override_applied: false
          override_reason_contains: [text, ...]     # each must occur in override_reason
          state_changes: [grace_started]            # the types, exact, in order
          reason_contains: text | [text, ...]       # each must occur in the decision reason
          facts: {grace_period: {advised_size: 512.0}}  # trace facts (floats compared to 1e-9 rel)

These files name no `policy:`, so every case runs under the shipped default policy (with its
overrides). Timestamps are ISO-8601 strings; in `expect` they are compared as instants, so
`2026-03-21T00:00:00Z` and `2026-03-21` mean the same. Every expected value in the shipped cases
was computed by hand from docs/semantics.md, never copied from the engine's output.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from protection_rules import Engine
from protection_rules.cases import Case, load_case_files
from protection_rules.cli import cli
from protection_rules.testing import Engines, run_case

CASES_DIR = Path(__file__).resolve().parent / "cases"
FILES = load_case_files([CASES_DIR])
CASES = [pytest.param(case, id=f"{Path(case.file).stem}::{case.name}") for file in FILES for case in file.cases]


@pytest.fixture(scope="module")
def engines() -> Iterator[Engines]:
    with Engines() as cache:
        yield cache


@pytest.mark.parametrize("case", CASES)
def test_spec_case(case: Case, engines: Engines) -> None:
    result = run_case(case, engines)
    assert result.passed, "\n".join([case.location, *(m.message for m in result.mismatches), str(result.decision.to_dict())])


def test_protect_test_passes_every_shipped_case() -> None:
    result = CliRunner().invoke(cli, ["test", str(CASES_DIR)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"{len(CASES)} passed, 0 failed"


def test_case_files_cover_every_protection() -> None:
    """Guard against a case directory that silently lost a whole protection's cases."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in CASES_DIR.glob("*.yaml"))
    for system in ("core_asset_immunity", "regime_override", "grace_period", "holding_period", "whipsaw_protection", "error"):
        assert system in text, system
    assert len(CASES) >= 80, len(CASES)


@pytest.mark.parametrize("score", [math.nan, math.inf], ids=["nan", "infinity"])
def test_non_finite_numbers_fail_closed(score: float) -> None:
    """A case file cannot hold these (YAML documents are read with finite numbers only); a Python caller can."""
    with Engine.from_policy(audit=None) as engine:
        decision = engine.evaluate(
            {"asset": "X", "action": "close", "current_date": "2026-03-20T12:00:00Z", "current_score": score}
        )
    assert (decision.decision, decision.blocking_systems) == ("deny", ("error",))
    assert "current_score" in decision.reason
