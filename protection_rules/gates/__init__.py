"""Generated schema gates: see protection_rules/schema_gates.py."""
