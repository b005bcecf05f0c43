"""What a cold `protect evaluate` imports, and the schema gates generated ahead of time for it."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import fastjsonschema
import pytest

from protection_rules import schema_gates, validation
from protection_rules.resources import schema

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "requests" / "holding_close.json"

# run `protect ARGS` in a fresh interpreter and print the modules it imported
_PROBE = """
import json, sys
from protection_rules.cli import cli
try:
    cli.main(args=sys.argv[1:], prog_name="protect")
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def imported_by(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(json.loads(done.stdout.splitlines()[-1]))


# neither a valid request nor a valid policy needs these: jsonschema only writes error reports;
# without a state store or audit trail, nothing needs sqlite3 or the store's code; logging only
# an alert; difflib only a did-you-mean; fastjsonschema only a schema edited since its gate was
# generated; health only its own call
NOT_FOR_EVALUATE = [
    "difflib",
    "fastjsonschema",
    "jsonschema",
    "logging",
    "protection_rules.audit",
    "protection_rules.cli.audit",
    "protection_rules.cli.diff",
    "protection_rules.cli.validate",
    "protection_rules.health",
    "protection_rules.rebalancer",
    "protection_rules.state",
    "sqlite3",
    "tempfile",
]


def test_a_plain_evaluate_imports_nothing_it_does_not_use():
    modules = imported_by("evaluate", "--no-audit", str(EXAMPLE))
    assert "protection_rules.engine" in modules  # the probe did evaluate
    assert [name for name in NOT_FOR_EVALUATE if name in modules] == []


def test_an_evaluate_with_audit_imports_only_its_backend(tmp_path):
    modules = imported_by("evaluate", "--audit", str(tmp_path / "audit.sqlite"), str(EXAMPLE))
    assert "protection_rules.audit.sqlite" in modules
    assert [name for name in ("jsonschema", "protection_rules.audit.jsonl") if name in modules] == []


def test_an_invalid_request_still_gets_jsonschema_messages(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(EXAMPLE.read_text()), "action": "sell"}))
    done = subprocess.run(
        [sys.executable, "-m", "protection_rules", "evaluate", "--no-audit", str(bad)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 3
    assert '$.action: `"sell"` is not one of `"open"`, `"close"`' in done.stdout  # a deny-with-error decision


@pytest.mark.parametrize(("name", "definition"), schema_gates.GATES)
def test_every_generated_gate_is_fresh(name, definition):
    """Fails after a schema change until `python -m protection_rules.schema_gates` is run. The
    text is compared where the installed fastjsonschema is the one that wrote it."""
    generated = importlib.import_module(f"protection_rules.gates.{schema_gates.module_name(name, definition)}")
    assert schema_gates.digest(name) == generated.SCHEMA_SHA256
    if generated.VERSION == fastjsonschema.VERSION:
        written = (schema_gates.FOLDER / f"{schema_gates.module_name(name, definition)}.py").read_text(encoding="utf-8")
        assert written == schema_gates.gate_source(name, definition)


@pytest.mark.parametrize(("name", "definition"), schema_gates.GATES)
def test_the_generated_gate_is_used_while_it_matches_and_compiled_anew_when_not(name, definition, monkeypatch):
    generated = importlib.import_module(f"protection_rules.gates.{schema_gates.module_name(name, definition)}")
    validation.fast_validator.cache_clear()
    try:
        assert validation.fast_validator(name, definition) is generated.gate
        validation.fast_validator.cache_clear()
        monkeypatch.setattr(validation, "digest", lambda _name: "a schema edited since")
        compiled = validation.fast_validator(name, definition)
        assert compiled is not generated.gate
        assert not validation.fast_valid(name, {"surely": "not valid"}, definition)
    finally:
        validation.fast_validator.cache_clear()


def test_a_fresh_generated_gate_is_used_without_copying_its_schema(monkeypatch):
    """The copy of the schema is for compiling a gate anew; a fresh gate needs none (~0.7 ms)."""
    monkeypatch.setattr(validation, "gate_document", lambda *args: pytest.fail("the schema was copied"))
    validation.fast_validator.cache_clear()
    try:
        for name, definition in schema_gates.GATES:
            generated = importlib.import_module(f"protection_rules.gates.{schema_gates.module_name(name, definition)}")
            assert validation.fast_validator(name, definition) is generated.gate
    finally:
        validation.fast_validator.cache_clear()


def test_compiling_a_gate_leaves_the_shared_schema_untouched(monkeypatch):
    """fastjsonschema writes into what it compiles; the schemas `resources.schema` hands out are
    shared (the OpenAPI document, jsonschema's messages), so a gate must compile a copy."""
    names = {name for name, _ in schema_gates.GATES}
    before = {name: json.dumps(schema(name), sort_keys=True) for name in names}
    monkeypatch.setattr(validation, "digest", lambda _name: "a schema edited since")
    validation.fast_validator.cache_clear()
    try:
        for name, definition in schema_gates.GATES:
            schema_gates.gate_source(name, definition)
            validation.fast_validator(name, definition)
    finally:
        validation.fast_validator.cache_clear()
    assert {name: json.dumps(schema(name), sort_keys=True) for name in names} == before
