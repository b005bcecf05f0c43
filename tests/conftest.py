"""Keep every test away from the user's real state store and audit trail."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_state_home(tmp_path_factory, monkeypatch):
    # default paths live under $XDG_STATE_HOME; the env overrides must not leak in either
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state-home")))
    monkeypatch.delenv("PROTECT_STATE", raising=False)
    monkeypatch.delenv("PROTECT_AUDIT", raising=False)
