"""Keep every test away from the user's real state store and audit trail.

The session points `$XDG_STATE_HOME` at a temporary folder before any test module is imported,
so engines built at import time or in module-scoped fixtures land there too; each test then
gets a fresh one of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_ENV = ("XDG_STATE_HOME", "PROTECT_STATE", "PROTECT_AUDIT")
_saved: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    _saved.update({name: os.environ.get(name) for name in _ENV})
    _saved["_folder"] = tempfile.mkdtemp(prefix="protect-tests-state-")
    os.environ["XDG_STATE_HOME"] = _saved["_folder"]
    os.environ.pop("PROTECT_STATE", None)
    os.environ.pop("PROTECT_AUDIT", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = _saved.pop("_folder", None)
    for name, value in _saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_state_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state-home")))
    # every option reads PROTECT_<COMMAND>_<OPTION>, and colour follows NO_COLOR: none of the
    # caller's settings may change what a test sees
    for name in list(os.environ):
        if name.startswith(("PROTECT_", "_PROTECT_")) or name == "NO_COLOR":
            monkeypatch.delenv(name)


# PostgreSQL (tests/postgres_server.py). Read now: the fixture above clears PROTECT_* per test.
REQUIRE_POSTGRES = bool(os.environ.get("PROTECT_REQUIRE_POSTGRES"))


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server of the tests' own for the session; skips where none can be started,
    unless PROTECT_REQUIRE_POSTGRES is set (CI), where that is a failure."""
    from postgres_server import PostgresServer, Unavailable

    try:
        server = PostgresServer()
    except Unavailable as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PROTECT_REQUIRE_POSTGRES is set but no PostgreSQL can be started: {exc}")
        pytest.skip(f"no PostgreSQL server for the tests: {exc} (set PROTECT_REQUIRE_POSTGRES=1 to make this a failure)")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a new, empty database on the tests' server."""
    return postgres_server.new_database()
