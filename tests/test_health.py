"""`Engine.health()` (README, "Operations"): the status rules, each backend's probe, and that a
probe never writes."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_metrics import BrokenForOneAsset, requests

from protection_rules import Engine
from protection_rules.audit import UnwritableAudit, open_audit
from protection_rules.state import MemoryStateStore, SqliteStateStore

POLICY_SHA = "0183b96819be093b73ad049a8a6e5bdb1178615b1fde83b92fad3b955f2c0d3b"  # README's default policy


def engine_with(tmp_path: Path, *, state: Any = None, audit: Any = None) -> Engine:
    return Engine.from_policy(state=state, audit=audit)


def test_a_healthy_engine(tmp_path: Path) -> None:
    with open_audit(tmp_path / "audit.sqlite") as audit:
        state = SqliteStateStore(tmp_path / "state.sqlite")
        try:
            engine = engine_with(tmp_path, state=state, audit=audit)
            engine.evaluate(requests("open")[0])
            health = engine.health()
        finally:
            state.close()
    assert health == {
        "status": "ok",
        "problems": [],
        "policy": {"name": "default", "version": "1.0.0", "sha256": POLICY_SHA},
        "reloads": 0,
        "state_store": {
            "configured": True,
            "backend": "SqliteStateStore",
            "path": str(tmp_path / "state.sqlite"),
            "reachable": True,
            "writable": True,
            "problem": None,
        },
        "audit_sink": {
            "configured": True,
            "backend": "SqliteAuditLog",
            "path": str(tmp_path / "audit.sqlite"),
            "reachable": True,
            "writable": True,
            "problem": None,
        },
        "error_rate": 0.0,
        "error_window": {"size": 1000, "decisions": 1, "errors": 0, "threshold": 0.001},
        "last_error": None,
    }


def test_nothing_configured_and_nothing_decided_is_ok() -> None:
    health = Engine.from_policy(audit=None).health()
    assert health["status"] == "ok" and health["error_rate"] is None
    assert health["state_store"]["configured"] is False and health["audit_sink"]["reachable"] is None


# ------------------------------------------------------------------------------ audit sink probes


def _sqlite_deleted(tmp_path: Path) -> Any:
    sink = open_audit(tmp_path / "audit.sqlite")
    os.remove(tmp_path / "audit.sqlite")
    return sink


def _sqlite_broken_end(tmp_path: Path) -> Any:
    sink = open_audit(tmp_path / "audit.sqlite")
    Engine.from_policy(audit=sink).evaluate_many(requests("open", "open"))
    with sqlite3.connect(tmp_path / "audit.sqlite") as conn:
        conn.execute("UPDATE audit_records SET body = replace(body, 'NVDA', 'NVDX') WHERE sequence = 2")
    conn.close()
    return sink


def _sqlite_read_only(tmp_path: Path) -> Any:
    open_audit(tmp_path / "audit.sqlite").close()
    return open_audit(tmp_path / "audit.sqlite", mode="read")


def _jsonl_replaced(tmp_path: Path) -> Any:
    sink = open_audit(tmp_path / "audit.jsonl")
    os.replace(tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.old")
    (tmp_path / "audit.jsonl").write_text("", encoding="utf-8")
    return sink


def _jsonl_damaged_end(tmp_path: Path) -> Any:
    sink = open_audit(tmp_path / "audit.jsonl")
    Engine.from_policy(audit=sink).evaluate(requests("open")[0])
    with open(tmp_path / "audit.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"not": "a record"}\n')
    return sink


def _closed(name: str) -> Callable[[Path], Any]:
    def make(tmp_path: Path) -> Any:
        sink = open_audit(tmp_path / name)
        sink.close()
        return sink

    return make


class NoProbe:
    path = "elsewhere"

    def append(self, records):
        return None


class ProbeRaises(NoProbe):
    def probe(self):
        raise ConnectionError("the collector is down")


@pytest.mark.parametrize(
    ("make", "reachable", "writable", "problem"),
    [
        (lambda tmp_path: open_audit(tmp_path / "audit.jsonl"), True, True, None),
        (lambda tmp_path: UnwritableAudit("/nowhere/audit.sqlite", "cannot create the folder"), False, False, "folder"),
        (_sqlite_deleted, False, False, "cannot open"),
        (_sqlite_broken_end, True, False, "the audit chain is broken at its end"),
        (_sqlite_read_only, True, False, "opened read-only"),
        (_closed("audit.sqlite"), False, False, "closed"),
        (_jsonl_replaced, False, False, "moved or replaced"),
        (_jsonl_damaged_end, True, False, "damaged audit log"),
        (_closed("audit.jsonl"), False, False, "closed"),
        (lambda tmp_path: ProbeRaises(), False, False, "ConnectionError: the collector is down"),
    ],
)
def test_audit_sink_probes(tmp_path: Path, make, reachable, writable, problem) -> None:
    sink = make(tmp_path)
    try:
        health = engine_with(tmp_path, audit=sink).health()
    finally:
        sink.close() if hasattr(sink, "close") else None
    probe = health["audit_sink"]
    assert (probe["reachable"], probe["writable"]) == (reachable, writable), probe
    if problem is None:
        assert probe["problem"] is None and health["status"] == "ok"
    else:
        assert problem in probe["problem"]
        # an audit sink that cannot take the next record means every decision is a deny
        assert health["status"] == "failing"
        assert health["problems"] == [f"audit sink: {probe['problem']}"]


def test_a_backend_without_a_probe_is_unknown_and_changes_no_status(tmp_path: Path) -> None:
    health = engine_with(tmp_path, audit=NoProbe()).health()
    assert health["status"] == "ok"
    assert health["audit_sink"] | {"problem": None} == {
        "configured": True,
        "backend": "NoProbe",
        "path": "elsewhere",
        "reachable": None,
        "writable": None,
        "problem": None,
    }


@pytest.mark.parametrize("suffix", ["sqlite", "jsonl"])
def test_a_probe_writes_nothing(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"audit.{suffix}"
    with open_audit(path) as sink:
        engine = engine_with(tmp_path, audit=sink)
        engine.evaluate(requests("open")[0])
        before = path.read_bytes()
        assert engine.health()["audit_sink"]["writable"] is True
        assert path.read_bytes() == before
        assert [record["sequence"] for record in sink.query()] == [1]
        assert sink.verify().ok


# ------------------------------------------------------------------------------ state store probes


def test_a_state_store_that_is_gone_is_failing(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.sqlite")
    os.remove(tmp_path / "state.sqlite")
    try:
        health = engine_with(tmp_path, state=store).health()
    finally:
        store.close()
    assert (health["status"], health["state_store"]["reachable"]) == ("failing", False)
    assert not (tmp_path / "state.sqlite").exists()  # the probe never creates the file


def test_a_state_store_locked_by_another_writer_is_degraded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("protection_rules.probing.PROBE_TIMEOUT", 0.05)
    store = SqliteStateStore(tmp_path / "state.sqlite")
    other = sqlite3.connect(tmp_path / "state.sqlite", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        health = engine_with(tmp_path, state=store).health()
        other.execute("ROLLBACK")
    finally:
        other.close()
        store.close()
    # decisions still read state; commits and executions would wait or fail
    assert health["status"] == "degraded"
    assert (health["state_store"]["reachable"], health["state_store"]["writable"]) == (True, False)
    assert "locked" in health["state_store"]["problem"]


def test_a_memory_state_store_is_always_reachable() -> None:
    health = Engine.from_policy(state=MemoryStateStore(), audit=None).health()
    assert (health["state_store"]["reachable"], health["state_store"]["writable"], health["status"]) == (True, True, "ok")


@pytest.mark.parametrize("backend", ["state", "audit"])
def test_a_sqlite_file_the_os_only_lets_us_read_is_not_writable(tmp_path: Path, monkeypatch, backend: str) -> None:
    """SQLite opens a write-protected file read-only without a word (and as root nothing is
    write-protected), so the OS's answer is simulated: the probe's connection is read-only."""
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda target, **kw: connect(target.replace("mode=rw", "mode=ro"), **kw))
    if backend == "state":
        store = SqliteStateStore(tmp_path / "state.sqlite")
        try:
            probe = store.probe()
        finally:
            store.close()
    else:
        with open_audit(tmp_path / "audit.sqlite") as sink:
            probe = sink.probe()
    assert (probe["reachable"], probe["writable"]) == (True, False)
    assert "readonly" in probe["problem"]


# ------------------------------------------------------------------------------ error rate


@pytest.mark.parametrize(
    ("names", "status", "rate"),
    [
        (["open"] * 9, "ok", 0.0),
        (["invalid"] * 9, "ok", 0.0),  # the caller's bad requests are not errors of the engine
        (["broken"] + ["open"] * 9, "degraded", 0.1),  # above 0.1%, under half
        (["broken"] * 5 + ["open"] * 5, "failing", 0.5),  # half or more of the decisions fail
    ],
)
def test_the_status_follows_the_error_rate(names, status, rate) -> None:
    engine = Engine.from_policy(state=BrokenForOneAsset(), audit=None)
    engine.evaluate_many(requests(*names))
    health = engine.health()
    assert (health["status"], health["error_rate"]) == (status, rate)
    if status != "ok":
        assert health["problems"] == [f"error rate {rate:.2%} over the last 10 decision(s) is above 0.10%"]


def test_the_last_error_names_its_decision() -> None:
    engine = Engine.from_policy(state=BrokenForOneAsset(), audit=None, clock=lambda: 1_773_000_000_000_000)
    broken, _ = engine.evaluate_many(requests("broken", "open"))
    assert engine.health()["last_error"] == {
        "code": "state-error",
        "message": "state store: the disk went away",
        "decision_id": broken.decision_id,
        "at": "2026-03-08T20:00:00Z",
    }
