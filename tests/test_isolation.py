"""The suite never writes into the user's home or state folders (only temporary ones)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_collecting_and_running_module_fixtures_leaves_the_users_state_home_empty(tmp_path):
    home, state_home = tmp_path / "home", tmp_path / "state"
    home.mkdir()
    state_home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_STATE_HOME": str(state_home)}
    env.pop("PROTECT_AUDIT", None)
    env.pop("PROTECT_STATE", None)
    runs = [
        ["--collect-only", "tests"],  # every module imported: engines built at import time
        ["tests/test_examples.py", "tests/test_engine_properties.py::test_same_input_same_decision"],  # module fixtures
    ]
    for selection in runs:
        ran = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
    assert _files(state_home) == []
    assert _files(home) == []


def test_state_commands_open_no_audit_log(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from protection_rules.cli import cli

    state_home = tmp_path / "state-home"
    monkeypatch.setenv("XDG_STATE_HOME", str(state_home))
    store = str(tmp_path / "state.sqlite")
    for args in (
        ["state", "core", "add", "SPY", "--at", "2026-01-01T00:00:00Z", "--state", store],
        ["state", "core", "extend", "SPY", "--at", "2026-01-02T00:00:00Z", "--state", store],
        ["state", "record", "open", "QQQ", "--at", "2026-01-01T00:00:00Z", "--state", store],
        ["state", "show", "QQQ", "--state", store],
    ):
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert not state_home.exists()
