"""The audit trail: the sink contract over both backends (SQLite and JSON Lines), tamper
detection by `verify`, all-or-nothing batches, failures as AuditError, concurrent writers,
query filters, stats by hand, and the `protect audit` commands."""

from __future__ import annotations

import ast
import fcntl
import hashlib
import itertools
import json
import multiprocessing
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from protection_rules.audit import (
    GENESIS_HASH,
    SCHEMA_VERSION,
    JsonlAuditLog,
    RecordFilter,
    SqliteAuditLog,
    canonical_json,
    open_audit,
    record_hash,
    record_kind,
)
from protection_rules.cli import cli
from protection_rules.errors import EXIT_INTERNAL, EXIT_USAGE, AuditError

KINDS = ["sqlite", "jsonl"]
# The backend-neutral contract also runs over PostgreSQL (a database per log, on the tests' server)
CONTRACT = [*KINDS, "postgres"]
LOG_CLASSES = {"sqlite": SqliteAuditLog, "jsonl": JsonlAuditLog}
T0 = 1773302400.0  # 2026-03-12T08:00:00Z
POLICY = {"name": "default", "version": "1.0.0", "sha256": "a7" * 32}
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "requests"
CORRECTION = {
    "asset": "QQQ",
    "action": "remove_event",
    "detail": {"event": {"type": "open", "at": "2999-12-31T00:00:00Z"}},
    "reason": "recorded with a mistyped year",
    "at": "2026-03-12T09:30:00Z",
}


class FakeClock:
    """Epoch seconds from T0, 1.5 s apart per call."""

    def __init__(self, start: float = T0):
        self.now = start

    def __call__(self) -> float:
        value = self.now
        self.now += 1.5
        return value


def make_record(
    decision_id: str,
    *,
    asset: str | None = "AAPL",
    decision: str = "deny",
    blocking: list[str] | None = None,
    evaluated_at: str | None = "2026-03-12T07:00:00Z",
    override: bool = False,
    version: str = "1.0.0",
    trace_id: str | None = None,
    time_ms: float = 1.25,
) -> dict[str, Any]:
    """A record shaped as the engine passes it in."""
    blocking = (["holding_period"] if decision == "deny" else []) if blocking is None else blocking
    request = {"asset": asset, "action": "close", "current_date": evaluated_at, "request_id": decision_id}
    policy = {**POLICY, "version": version}
    return {
        "kind": "decision",
        "decision_id": decision_id,
        "trace_id": trace_id or f"trace-{decision_id}",
        "evaluated_at": evaluated_at,
        "asset": asset,
        "action": "close",
        "decision": decision,
        "blocking_systems": blocking,
        "override_applied": override,
        "policy": policy,
        "engine_version": "0.1.0",
        "request": request,
        "state": {"events": [{"type": "open", "at": "2026-03-10T09:00:00Z"}]},
        "state_source": "request",
        "decision_record": {
            "decision": decision,
            "blocking_systems": blocking,
            "trace": [{"system": "holding_period", "status": "block"}],
        },
        "decision_time_ms": time_ms,
    }


_postgres: dict[str, Any] = {}  # the server and the databases of the running test (postgres only)


@pytest.fixture(autouse=True)
def _postgres_logs(request):
    """For a test parametrized with the postgres backend: the server `log_path` creates databases on."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "postgres" in callspec.params.values():
        _postgres.update(server=request.getfixturevalue("postgres_server"), logs={})
    yield
    _postgres.clear()


def log_path(tmp_path: Path, kind: str, name: str = "audit") -> Any:
    """Where a test's log named `name` lives: a file, or (postgres) the URL of a database of its own."""
    if kind == "postgres":
        if name not in _postgres["logs"]:
            _postgres["logs"][name] = _postgres["server"].new_database()
        return _postgres["logs"][name]
    return tmp_path / f"{name}.{kind}"


def postgres_sql(url: str, sql: str) -> None:
    """Change a PostgreSQL log behind the sink's back (what a tamperer with database access does)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def filled(path: Path, count: int = 5) -> list[dict[str, Any]]:
    """Append d1..dN one at a time (odd ones denied); return the stored records."""
    with open_audit(path, clock=FakeClock()) as log:
        for n in range(1, count + 1):
            log.append([make_record(f"d{n}", decision="deny" if n % 2 else "approve")])
        return list(log.records())


def verify(path: Path):
    with open_audit(path, mode="read") as log:
        return log.verify()


def stored(path: Path) -> list[dict[str, Any]]:
    with open_audit(path, mode="read") as log:
        return list(log.records())


# ------------------------------------------------------------------------------ the contract


@pytest.mark.parametrize("kind", CONTRACT)
def test_append_round_trips_full_records_with_sequence_chain_and_clock(tmp_path, kind):
    clock = FakeClock()
    with open_audit(log_path(tmp_path, kind), clock=clock) as log:
        clock.now = T0  # the SQLite backend stamps its schema with the clock when it creates it
        given = [make_record("d1"), make_record("d2", decision="approve"), make_record("d3"), make_record("d4")]
        log.append(given[:1])
        log.append(given[1:2])
        log.append(given[2:])  # one batch: one recorded_at
        records = list(log.records())
    assert [r["sequence"] for r in records] == [1, 2, 3, 4]
    assert [r["recorded_at"] for r in records] == [
        "2026-03-12T08:00:00Z",
        "2026-03-12T08:00:01.500000Z",
        "2026-03-12T08:00:03Z",
        "2026-03-12T08:00:03Z",
    ]
    assert [r["batch"] for r in records] == [
        {"first": 1, "size": 1},
        {"first": 2, "size": 1},
        {"first": 3, "size": 2},
        {"first": 3, "size": 2},
    ]
    for record, original in zip(records, given, strict=True):
        assert {k: v for k, v in record.items() if k not in ("sequence", "recorded_at", "prev_hash", "batch", "hash")} == original
    assert records[0]["prev_hash"] == GENESIS_HASH
    for before, after in itertools.pairwise(records):
        assert after["prev_hash"] == before["hash"]
    for record in records:
        body = {k: v for k, v in record.items() if k != "hash"}
        assert record["hash"] == hashlib.sha256(canonical_json(body).encode()).hexdigest() == record_hash(record)


@pytest.mark.parametrize("kind", CONTRACT)
def test_reopening_continues_the_sequence_and_the_chain(tmp_path, kind):
    path = log_path(tmp_path, kind)
    first = filled(path, 3)
    with open_audit(path, clock=FakeClock()) as log:
        log.append([make_record("d4")])
    records = stored(path)
    assert [r["sequence"] for r in records] == [1, 2, 3, 4]
    assert records[3]["prev_hash"] == first[2]["hash"]
    assert verify(path).ok


@pytest.mark.parametrize(
    "suffix, cls",
    [
        (".jsonl", JsonlAuditLog),
        (".JSONL", JsonlAuditLog),
        (".sqlite", SqliteAuditLog),
        (".db", SqliteAuditLog),
        ("", SqliteAuditLog),
    ],
)
def test_open_audit_picks_the_backend_by_suffix_and_creates_folders(tmp_path, suffix, cls):
    path = tmp_path / "deep" / "er" / f"audit{suffix}"
    with open_audit(path) as log:
        assert type(log) is cls
        assert log.path == str(path)
    assert path.exists()


def test_sqlite_log_is_wal_with_a_schema_version_table(tmp_path):
    path = tmp_path / "audit.sqlite"
    open_audit(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


@pytest.mark.parametrize("kind", CONTRACT)
def test_append_accepts_any_sequence_and_an_empty_one(tmp_path, kind):
    path = log_path(tmp_path, kind)
    with open_audit(path) as log:
        log.append([])
        log.append(tuple(make_record(f"d{n}") for n in (1, 2)))
        log.append(make_record(f"d{n}") for n in (3,))
    assert [r["decision_id"] for r in stored(path)] == ["d1", "d2", "d3"]


@pytest.mark.parametrize("kind", CONTRACT)
@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("trace_id"), "missing `trace_id`"),
        (lambda r: r.pop("kind"), "missing `kind`"),
        (
            lambda r: r.update(kind="rollback"),
            "`kind` must be `decision` (other records go through append_event), got `rollback`",
        ),
        (lambda r: r.update(decision="maybe"), "`decision` must be `approve` or `deny`, got `maybe`"),
        (lambda r: r.update(decision_id=""), "`decision_id` must be a non-empty string"),
        (lambda r: r.update(policy={"name": "x"}), "`policy` must hold"),
        (lambda r: r.update(evaluated_at="yesterday"), "`evaluated_at`"),
    ],
    ids=["missing-field", "missing-kind", "other-kind", "bad-decision", "empty-id", "bad-policy", "bad-time"],
)
def test_a_malformed_record_is_refused_naming_the_file_and_the_record(tmp_path, kind, mutate, message):
    path = log_path(tmp_path, kind)
    bad = make_record("d2")
    mutate(bad)
    with open_audit(path) as log:
        with pytest.raises(AuditError) as caught:
            log.append([make_record("d1"), bad])
    assert str(caught.value).startswith(f"{path}: record 2 of 2")
    assert message in str(caught.value)
    assert stored(path) == []


@pytest.mark.parametrize("kind", CONTRACT)
@pytest.mark.parametrize(
    "forged",
    [
        {"sequence": 99},
        {"prev_hash": "f" * 64},
        {"recorded_at": "1999-01-01T00:00:00Z"},
        {"batch": {"first": 7, "size": 9}},
        {"hash": "0" * 64},
    ],
    ids=["sequence", "prev_hash", "recorded_at", "batch", "hash"],
)
def test_the_sink_replaces_its_own_fields_a_record_carries(tmp_path, kind, forged):
    path = log_path(tmp_path, kind)
    record = {**make_record("d1"), **forged}
    with open_audit(path, clock=lambda: 1773302400.0) as log:
        log.append([record])
        result = log.verify()
    (kept,) = stored(path)
    assert (kept["sequence"], kept["prev_hash"], kept["recorded_at"], kept["batch"]) == (
        1,
        "0" * 64,
        "2026-03-12T08:00:00Z",
        {"first": 1, "size": 1},
    )
    assert kept["hash"] == record_hash(kept) and result.ok and result.head == kept["hash"]
    assert {key: kept[key] for key in make_record("d1")} == make_record("d1")


def test_sqlite_refuses_a_duplicate_decision_id(tmp_path):
    path = tmp_path / "audit.sqlite"
    filled(path, 2)
    with open_audit(path) as log, pytest.raises(AuditError, match="already in the audit log"):
        log.append([make_record("d1")])
    assert len(stored(path)) == 2


# ------------------------------------------------------------------------------------ verify


@pytest.mark.parametrize("kind", CONTRACT)
def test_verify_passes_on_a_fresh_log_and_an_empty_one(tmp_path, kind):
    empty = log_path(tmp_path, kind, "empty")
    open_audit(empty).close()
    assert verify(empty) == verify(empty).__class__(ok=True, count=0)
    path = log_path(tmp_path, kind)
    records = filled(path, 5)
    result = verify(path)
    assert (result.ok, result.count, result.first_bad, result.problem, result.head) == (True, 5, None, "", records[-1]["hash"])


def _sql(*statements: str) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(statement)

    return run


def _rewrite_body_and_hash(conn: sqlite3.Connection, sequence: int = 3) -> None:
    """A forger who flips a decision and fixes the record's hash: the next record's link still breaks."""
    body, decision = conn.execute("SELECT body, decision FROM audit_records WHERE sequence = ?", (sequence,)).fetchone()
    flipped = "approve" if decision == "deny" else "deny"
    body = body.replace(f'"decision":"{decision}"', f'"decision":"{flipped}"')
    conn.execute(
        "UPDATE audit_records SET body = ?, hash = ?, decision = ? WHERE sequence = ?",
        (body, hashlib.sha256(body.encode()).hexdigest(), flipped, sequence),
    )


SQLITE_TAMPERING = [
    (
        "body-byte",
        _sql('UPDATE audit_records SET body = replace(body, \'"asset":"AAPL"\', \'"asset":"AAPX"\') WHERE sequence = 3'),
        3,
        "d3",
        "the hash does not match",
    ),
    (
        "decision-column",
        _sql("UPDATE audit_records SET decision = 'approve' WHERE sequence = 3"),
        3,
        "d3",
        "column `decision` holds `approve` but the record says `deny`",
    ),
    ("asset-column", _sql("UPDATE audit_records SET asset = 'MSFT' WHERE sequence = 2"), 2, "d2", "column `asset`"),
    (
        "blocking-column",
        _sql("UPDATE audit_records SET blocking_systems = '[]' WHERE sequence = 3"),
        3,
        "d3",
        "column `blocking_systems`",
    ),
    (
        "hash-column",
        _sql("UPDATE audit_records SET hash = replace(hash, substr(hash, 1, 1), 'x') WHERE sequence = 4"),
        4,
        "d4",
        "the hash does not match",
    ),
    ("middle-deleted", _sql("DELETE FROM audit_records WHERE sequence = 3"), 4, "d4", "expected #3 after #2, found #4"),
    (
        "first-deleted",
        _sql("DELETE FROM audit_records WHERE sequence = 1"),
        2,
        "d2",
        "expected #1 after the start of the log, found #2",
    ),
    (
        "reordered",
        _sql(
            "UPDATE audit_records SET sequence = -2 WHERE sequence = 2",
            "UPDATE audit_records SET sequence = 2 WHERE sequence = 3",
            "UPDATE audit_records SET sequence = 3 WHERE sequence = -2",
        ),
        2,
        "d3",
        "stored as #2 but the record says it is #3",
    ),
    ("rehashed-forgery", _rewrite_body_and_hash, 4, "d4", "prev_hash does not match record #3"),
]


@pytest.mark.parametrize(
    "tamper, first_bad, decision_id, problem", [case[1:] for case in SQLITE_TAMPERING], ids=[case[0] for case in SQLITE_TAMPERING]
)
def test_sqlite_verify_names_the_first_bad_record(tmp_path, tamper, first_bad, decision_id, problem):
    path = tmp_path / "audit.sqlite"
    filled(path, 5)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        tamper(conn)
    finally:
        conn.close()
    result = verify(path)
    assert (result.ok, result.first_bad, result.decision_id) == (False, first_bad, decision_id)
    assert problem in result.problem


def _lines(edit: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def run(path: Path) -> None:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        path.write_text("".join(edit(lines)), encoding="utf-8")

    return run


def _rehash(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    changed = {**record, **changes}
    return {**changed, "hash": record_hash(changed)}


def _jsonl_edit(edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> Callable[[Path], None]:
    def run_edit(path: Path) -> None:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        path.write_text("".join(canonical_json(r) + "\n" for r in edit(records)), encoding="utf-8")

    return run_edit


JSONL_TAMPERING = [
    (
        "line-edited",
        _lines(lambda ls: [*ls[:2], ls[2].replace('"asset":"AAPL"', '"asset":"AAPX"'), *ls[3:]]),
        3,
        "d3",
        "the hash does not match",
    ),
    ("line-broken", _lines(lambda ls: [*ls[:2], ls[2][:40] + "\n", *ls[3:]]), 3, None, "not valid JSON"),
    ("line-deleted", _lines(lambda ls: [*ls[:2], *ls[3:]]), 4, "d4", "expected #3 after #2, found #4"),
    ("lines-swapped", _lines(lambda ls: [*ls[:2], ls[3], ls[2], *ls[4:]]), 4, "d4", "expected #3 after #2, found #4"),
    (
        "rehashed-forgery",
        _jsonl_edit(lambda rs: [*rs[:2], _rehash(rs[2], decision="approve", blocking_systems=[]), *rs[3:]]),
        4,
        "d4",
        "prev_hash does not match record #3",
    ),
    ("whitespace-is-not-content", _lines(lambda ls: [*ls[:4], ls[4].replace(",", ", ", 1)]), None, None, ""),
]


@pytest.mark.parametrize(
    "tamper, first_bad, decision_id, problem", [case[1:] for case in JSONL_TAMPERING], ids=[case[0] for case in JSONL_TAMPERING]
)
def test_jsonl_verify_names_the_first_bad_record(tmp_path, tamper, first_bad, decision_id, problem):
    path = tmp_path / "audit.jsonl"
    filled(path, 5)
    tamper(path)
    result = verify(path)
    assert (result.ok, result.first_bad, result.decision_id) == (first_bad is None, first_bad, decision_id)
    assert problem in result.problem


@pytest.mark.parametrize("kind", KINDS)
def test_deleting_the_last_record_keeps_a_valid_chain_but_changes_the_head(tmp_path, kind):
    """The documented limit of a chain alone, and how the head hash catches it."""
    path = log_path(tmp_path, kind)
    records = filled(path, 4)
    before = verify(path)
    if kind == "sqlite":
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("DELETE FROM audit_records WHERE sequence = 4")
        conn.close()
    else:
        _lines(lambda ls: ls[:3])(path)
    after = verify(path)
    assert after.ok and after.count == 3
    assert (before.head, after.head) == (records[3]["hash"], records[2]["hash"])


# ------------------------------------------------------------------ batches and failures


@pytest.mark.parametrize("kind", CONTRACT)
@pytest.mark.parametrize(
    "poison", [float("nan"), float("inf"), {1, 2}, "\ud800"], ids=["nan", "infinity", "set", "lone-surrogate"]
)
def test_a_batch_is_one_transaction_an_unserialisable_record_stores_none_of_it(tmp_path, kind, poison):
    path = log_path(tmp_path, kind)
    filled(path, 2)
    poisoned = make_record("b3")
    poisoned["decision_record"]["score"] = poison
    with open_audit(path) as log:
        with pytest.raises(AuditError) as caught:
            log.append([make_record("b1"), make_record("b2"), poisoned])
        assert str(caught.value).startswith(f"{path}: record 3 of 3 (decision `b3`)")
        assert [r["decision_id"] for r in log.records()] == ["d1", "d2"]
        log.append([make_record("d3")])
    assert [r["sequence"] for r in stored(path)] == [1, 2, 3]
    assert verify(path).ok


def test_sqlite_batch_rolls_back_rows_already_inserted(tmp_path):
    """The 3rd row fails inside the database (duplicate id) after rows 1-2 were inserted."""
    path = tmp_path / "audit.sqlite"
    filled(path, 2)
    with open_audit(path) as log, pytest.raises(AuditError):
        log.append([make_record("b1"), make_record("b2"), make_record("d1")])
    assert [r["decision_id"] for r in stored(path)] == ["d1", "d2"]
    assert verify(path).ok


def _not_a_folder(tmp_path: Path, kind: str) -> Path:
    (tmp_path / "plain.txt").write_text("a file\n")
    return tmp_path / "plain.txt" / f"audit.{kind}"


def _a_folder(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"audit.{kind}"
    path.mkdir()
    return path


def _a_text_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"audit.{kind}"
    path.write_text("hello\nthis is not an audit log\n")
    return path


UNUSABLE = [
    ("parent-is-a-file", _not_a_folder, "cannot create the audit log's folder"),
    ("path-is-a-folder", _a_folder, "cannot open the audit log"),
    ("text-file", _a_text_file, "not an audit log"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("make, message", [case[1:] for case in UNUSABLE], ids=[case[0] for case in UNUSABLE])
def test_an_unusable_path_raises_audit_error_naming_it(tmp_path, kind, make, message):
    path = make(tmp_path, kind)
    with pytest.raises(AuditError) as caught:
        open_audit(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert caught.value.exit_code == EXIT_INTERNAL


def _sqlite_with(tmp_path: Path, *statements: str) -> Path:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize(
    "statements, message",
    [
        (["CREATE TABLE positions (asset TEXT)"], "not an audit log: a SQLite database with other tables (`positions`)"),
        (
            [
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)",
                f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION + 1}, 'x')",
            ],
            f"audit log schema version {SCHEMA_VERSION + 1} is newer than this protection-rules supports ({SCHEMA_VERSION})",
        ),
    ],
    ids=["other-tables", "newer-schema"],
)
def test_a_sqlite_database_that_is_not_our_audit_log_is_refused(tmp_path, statements, message):
    path = _sqlite_with(tmp_path, *statements)
    with pytest.raises(AuditError, match="^" + str(path).replace(".", r"\.") + ": ") as caught:
        open_audit(path)
    assert message in str(caught.value)


def test_a_jsonl_file_of_other_json_is_refused(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text('{"asset": "AAPL"}\n')
    with pytest.raises(AuditError, match="not an audit log: line 1 is not an audit record"):
        open_audit(path)


@pytest.mark.parametrize("kind", KINDS)
def test_read_mode_never_creates_and_never_writes(tmp_path, kind):
    path = log_path(tmp_path, kind)
    with pytest.raises(AuditError, match="no such audit log"):
        open_audit(path, mode="read")
    assert not path.exists()
    filled(path, 1)
    with open_audit(path, mode="read") as log, pytest.raises(AuditError, match="opened read-only"):
        log.append([make_record("x")])


@pytest.mark.parametrize("kind", CONTRACT)
def test_a_closed_log_refuses_appends(tmp_path, kind):
    log = open_audit(log_path(tmp_path, kind))
    log.close()
    log.close()  # idempotent
    with pytest.raises(AuditError, match="closed"):
        log.append([make_record("d1")])


@pytest.mark.parametrize("kind", KINDS)
def test_locked_past_the_timeout_raises_audit_error(tmp_path, kind):
    path = log_path(tmp_path, kind)
    filled(path, 1)
    log = LOG_CLASSES[kind](path, timeout=0.2)
    try:
        if kind == "sqlite":
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
        else:
            holder = open(path, "rb")  # noqa: SIM115 - held across the test, closed in finally
            fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        try:
            with pytest.raises(AuditError, match=r"locked by another writer \(gave up after 0\.2 s\)") as caught:
                log.append([make_record("d2")])
            assert str(caught.value).startswith(f"{path}: ")
        finally:
            holder.close()
        log.append([make_record("d2")])  # the lock is gone: writing works again
    finally:
        log.close()
    assert [r["sequence"] for r in stored(path)] == [1, 2]


@pytest.mark.parametrize("kind", KINDS)
def test_disk_full_mid_batch_raises_and_keeps_what_was_stored(tmp_path, kind):
    """A file-size limit (RLIMIT_FSIZE, in a child process) fails the write part-way, as a full
    disk does; works as root, unlike chmod."""
    path = log_path(tmp_path, kind)
    filled(path, 3)
    size_before = path.stat().st_size
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_audit import make_record
        from protection_rules.audit import open_audit
        from protection_rules.errors import AuditError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        log = open_audit({str(path)!r})
        resource.setrlimit(resource.RLIMIT_FSIZE, ({size_before} + 3000, resource.RLIM_INFINITY))
        big = [make_record(f"big{{n}}") for n in range(40)]
        for record in big:
            record["request"]["metadata"] = {{"note": "x" * 2000}}
        try:
            log.append(big)
        except AuditError as exc:
            print(exc)
            sys.exit(0)
        finally:
            log.close()
        sys.exit("no AuditError")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: ")
    assert [r["decision_id"] for r in stored(path)] == ["d1", "d2", "d3"]
    assert verify(path).ok
    if kind == "jsonl":
        assert path.stat().st_size == size_before  # the partial write was cut off again


def test_jsonl_on_a_full_device_raises_audit_error(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.symlink_to("/dev/full")
    with open_audit(path) as log, pytest.raises(AuditError, match="cannot write the audit log: the disk is full"):
        log.append([make_record("d1")])


# ---------------------------------------------------------------- crashes and broken chain ends

# A child process opens the log, starts appending a batch of BATCH big records and SIGKILLs
# itself part-way: JSON Lines after a real write(2) of part of the batch (cut in the middle of a
# line, or just after one), SQLite after two thirds of the batch's INSERTs inside its transaction.
# Before dying it prints what it had written.
BATCH = 600
KILLER = """
import json, os, signal, sys
sys.path.insert(0, {tests!r})
from test_audit import make_record
from protection_rules.audit import open_audit

path, where, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
log = open_audit(path)
batch = [make_record(f"killed-{{n}}") for n in range(size)]
for record in batch:
    record["request"]["metadata"] = {{"note": "x" * 3000}}


def die(report):
    print(json.dumps(report), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if where == "mid-transaction":
    inserts = []

    def trace(statement):
        if statement.startswith("INSERT"):
            inserts.append(1)
            if len(inserts) == size * 2 // 3:
                die({{"inserted": len(inserts)}})

    log._conn.set_trace_callback(trace)
else:
    write = os.write

    def torn_write(fd, data):
        data = bytes(data)
        cut = data.index(b"\\n", len(data) // 2) + 1 if where == "at-a-line-end" else len(data) // 2
        written = write(fd, data[:cut])
        die({{"bytes": written, "lines": data[:cut].count(b"\\n")}})

    os.write = torn_write
log.append(batch)
sys.exit("the append returned")
"""
KILLS = [("sqlite", "mid-transaction"), ("jsonl", "mid-line"), ("jsonl", "at-a-line-end")]


def killed_writer(path: Path, where: str) -> dict[str, Any]:
    """Run the killer on `path`; return what it wrote before it died."""
    script = KILLER.format(tests=str(Path(__file__).parent))
    result = subprocess.run(
        [sys.executable, "-c", script, str(path), where, str(BATCH)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("kind, where", KILLS, ids=[f"{kind}-{where}" for kind, where in KILLS])
@pytest.mark.parametrize("before", [0, 3], ids=["new-log", "3-records"])
def test_a_writer_killed_mid_append_leaves_none_of_its_batch_and_the_log_goes_on(tmp_path, kind, where, before):
    """The contract of both sinks (issue 7, item 10): after a writer dies mid-append, the log
    opens, verifies, holds none of the dead batch's records, and the next append chains on."""
    path = log_path(tmp_path, kind)
    kept = filled(path, before) if before else []
    size_before = path.stat().st_size if before else 0
    report = killed_writer(path, where)
    if kind == "jsonl":  # the file really holds part of the dead batch
        debris = path.read_bytes()[size_before:]
        assert len(debris) == report["bytes"] and debris.count(b"\n") == report["lines"] > 0
        assert debris.startswith(b'{"action":"close","asset":"AAPL","batch":{"first":%d,"size":%d}' % (before + 1, BATCH))
    else:
        assert report["inserted"] == BATCH * 2 // 3
    with open_audit(path, clock=FakeClock(T0 + 3600)) as log:
        log.append([make_record("after")])
    records = stored(path)
    assert not [r for r in records if str(r.get("decision_id")).startswith("killed-")]
    assert records[:before] == kept
    assert [r["decision_id"] for r in records if record_kind(r) == "decision"] == [f"d{n}" for n in range(1, before + 1)] + [
        "after"
    ]
    assert [r["sequence"] for r in records] == list(range(1, len(records) + 1))
    assert records[-1]["prev_hash"] == records[-2]["hash"] if len(records) > 1 else GENESIS_HASH
    result = verify(path)
    assert (result.ok, result.count, result.head) == (True, len(records), records[-1]["hash"])
    if kind == "jsonl":
        (rollback,) = [r for r in records if record_kind(r) == "rollback"]
        assert rollback["sequence"] == before + 1 and rollback["at"] == "2026-03-12T09:00:00Z"
        assert rollback["dropped"] == {
            "records": report["lines"],
            "lines": report["lines"] + (where == "mid-line"),
            "bytes": len(debris),
            "sha256": hashlib.sha256(debris).hexdigest(),
            "first_sequence": before + 1,
            "batch_size": BATCH,
            "saved_as": f"{path.name}.rollback-{before + 1}-{hashlib.sha256(debris).hexdigest()[:12]}",
        }
        assert (tmp_path / rollback["dropped"]["saved_as"]).read_bytes() == debris  # nothing is lost
    else:
        assert len(records) == before + 1  # SQLite rolled the transaction back itself


def test_jsonl_an_incomplete_last_line_alone_is_rolled_back(tmp_path):
    """A batch written whole, then a half line: only the half line goes (lines 1, records 0)."""
    path = tmp_path / "audit.jsonl"
    filled(path, 2)
    half = b'{"action":"close","asset":"AA'
    with path.open("ab") as handle:
        handle.write(half)
    with open_audit(path, clock=FakeClock(T0 + 3600)) as log:
        log.append([make_record("d3")])
    records = stored(path)
    assert [(r["sequence"], record_kind(r)) for r in records] == [
        (1, "decision"),
        (2, "decision"),
        (3, "rollback"),
        (4, "decision"),
    ]
    digest = hashlib.sha256(half).hexdigest()
    assert (
        records[2]["dropped"]
        == {
            "records": 0,
            "lines": 1,
            "bytes": 29,  # {"action":"close","asset":"AA
            "sha256": digest,
            "first_sequence": 3,
            "batch_size": None,
            "saved_as": f"audit.jsonl.rollback-3-{digest[:12]}",
        }
    )
    assert verify(path).ok


def _one_batch_of_4_without(*lines: int) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        path.unlink()
        with open_audit(path) as log:
            log.append([make_record(f"b{n}") for n in range(1, 5)])
        _lines(lambda ls: [line for number, line in enumerate(ls, start=1) if number not in lines])(path)

    return damage


def _appended(data: bytes) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        with path.open("ab") as handle:
            handle.write(data)

    return damage


DAMAGED_ENDS = [
    ("incomplete-line-of-no-record", _appended(b"garbage"), "the last line is incomplete and is not the start of a record"),
    ("last-line-no-record", _appended(b"hello\n"), "the last line is not an audit record"),
    (
        "short-batch-with-a-gap",
        _one_batch_of_4_without(2, 4),
        "the last batch (#1, 4 records) is not whole and does not run back to its start",
    ),
]


@pytest.mark.parametrize("damage, problem", [case[1:] for case in DAMAGED_ENDS], ids=[case[0] for case in DAMAGED_ENDS])
def test_jsonl_damage_at_the_end_that_is_no_interrupted_append_is_not_rolled_back(tmp_path, damage, problem):
    path = tmp_path / "audit.jsonl"
    filled(path, 2)
    damage(path)
    damaged = path.read_bytes()
    with pytest.raises(AuditError) as caught:
        open_audit(path)
    assert str(caught.value) == f"{path}: damaged audit log: {problem}: nothing was appended: run `protect audit verify`"
    with open_audit(path, mode="read") as log:
        assert not log.verify().ok
        with pytest.raises(AuditError, match=f"damaged audit log: {re.escape(problem)}"):
            list(log.records())
    assert path.read_bytes() == damaged and sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl"]


@pytest.mark.parametrize("where", ["mid-line", "at-a-line-end"])
def test_jsonl_read_only_leaves_an_interrupted_append_out_and_writes_nothing(tmp_path, where):
    path = tmp_path / "audit.jsonl"
    kept = filled(path, 3)
    size_before = path.stat().st_size
    report = killed_writer(path, where)
    torn = path.read_bytes()
    with open_audit(path, mode="read") as log:
        result = log.verify()
        assert [r["decision_id"] for r in log.records()] == ["d1", "d2", "d3"]
        assert [r["decision_id"] for r in log.query(RecordFilter(asset="AAPL"))] == ["d1", "d2", "d3"]
        assert log.stats()["count"] == 3
        assert log.find("killed-0") is None and log.find("d3") == kept[2]
    assert (result.ok, result.count, result.head) == (True, 3, kept[2]["hash"])
    assert result.torn_tail == {
        "records": report["lines"],
        "lines": report["lines"] + (where == "mid-line"),
        "bytes": len(torn) - size_before,
        "sha256": hashlib.sha256(torn[size_before:]).hexdigest(),
        "first_sequence": 4,
        "batch_size": BATCH,
    }
    cli_result = run("verify", "--audit", str(path))
    assert cli_result.exit_code == 0
    assert cli_result.stdout == (
        f"audit log {path}: 3 record(s), chain valid; left out an interrupted append at the end "
        f"({report['lines']} record(s) in {result.torn_tail['lines']} line(s), {len(torn) - size_before} bytes, from #4): "
        f"the next append rolls it back (head {kept[2]['hash']})\n"
    )
    assert path.read_bytes() == torn and sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl"]


def test_cli_evaluate_after_a_killed_jsonl_writer_decides_and_records_the_rollback(tmp_path):
    """The issue's reproduction: after the kill, evaluations were denied (exit 4) for good."""
    path = tmp_path / "log.jsonl"
    filled(path, 2)
    killed_writer(path, "mid-line")
    evaluated = CliRunner().invoke(cli, ["evaluate", "--audit", str(path), str(EXAMPLES / "plain_open.json")])
    assert evaluated.exit_code == 0, evaluated.output
    rollbacks = run("query", "--audit", str(path), "--kind", "rollback")
    assert rollbacks.exit_code == 0 and rollbacks.stderr == "1 record(s)\n"
    row = rollbacks.stdout.splitlines()[1].split()
    assert row[:2] == ["3", "rollback"] and row[3:10] == ["-"] * 6 + ["dropped"]
    assert run("verify", "--audit", str(path)).exit_code == 0
    assert [r["asset"] for r in stored(path) if record_kind(r) == "decision"] == ["AAPL", "AAPL", "AMZN"]


BROKEN_ENDS = [
    (
        "jsonl-last-edited",
        "jsonl",
        _jsonl_edit(lambda rs: [*rs[:4], {**rs[4], "decision": "approve"}]),
        "record #5: the hash does not match the record's content (the record was changed)",
    ),
    (
        "jsonl-rehashed-forgery-before-the-last",
        "jsonl",
        _jsonl_edit(lambda rs: [*rs[:3], _rehash(rs[3], decision="deny"), rs[4]]),
        "record #5: prev_hash does not match the record before it",
    ),
    (
        "jsonl-record-before-the-last-deleted",
        "jsonl",
        _jsonl_edit(lambda rs: [*rs[:3], rs[4]]),
        "record #5 follows #3: records deleted or reordered",
    ),
    (
        "sqlite-last-edited",
        "sqlite",
        _sql("UPDATE audit_records SET body = replace(body, '\"AAPL\"', '\"AAPX\"') WHERE sequence = 5"),
        "record #5: the hash does not match the record's content (the record was changed)",
    ),
    (
        "sqlite-rehashed-forgery-before-the-last",
        "sqlite",
        lambda conn: _rewrite_body_and_hash(conn, 4),
        "record #5: prev_hash does not match the record before it",
    ),
]


@pytest.mark.parametrize("kind, tamper, problem", [case[1:] for case in BROKEN_ENDS], ids=[case[0] for case in BROKEN_ENDS])
def test_a_chain_broken_at_its_end_is_not_extended(tmp_path, kind, tamper, problem):
    """Issue 7, item 11: the sink checks the end it chains onto before every append."""
    path = log_path(tmp_path, kind)
    filled(path, 5)
    if kind == "sqlite":
        conn = sqlite3.connect(path, isolation_level=None)
        tamper(conn)
        conn.close()
    else:
        tamper(path)
    before = stored(path)
    for attempt in (lambda log: log.append([make_record("d6")]), lambda log: log.append_event("state_correction", CORRECTION)):
        with pytest.raises(AuditError) as caught:
            with open_audit(path) as log:
                attempt(log)
        assert str(caught.value) == (
            f"{path}: the audit chain is broken at its end: {problem}: nothing was appended: run `protect audit verify`"
        )
    assert stored(path) == before


@pytest.mark.parametrize("kind", CONTRACT)
def test_cli_evaluate_denies_with_exit_4_on_a_chain_broken_at_its_end(tmp_path, kind):
    path = log_path(tmp_path, kind)
    filled(path, 3)
    if kind == "sqlite":
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("UPDATE audit_records SET body = replace(body, '\"deny\"', '\"approve\"') WHERE sequence = 3")
        conn.close()
    elif kind == "postgres":
        postgres_sql(path, "UPDATE audit_records SET body = replace(body, '\"deny\"', '\"approve\"') WHERE sequence = 3")
    else:
        _lines(lambda ls: [*ls[:2], ls[2].replace('"deny"', '"approve"')])(path)
    result = CliRunner().invoke(cli, ["evaluate", "--format", "json", "--audit", str(path), str(EXAMPLES / "plain_open.json")])
    assert result.exit_code == EXIT_INTERNAL
    decision = json.loads(result.stdout)
    assert (decision["approved"], decision["blocking_systems"], decision["errors"][0]["code"]) == (
        False,
        ["error"],
        "audit-error",
    )
    assert "the audit chain is broken at its end: record #3" in decision["errors"][0]["message"]
    assert "run `protect audit verify`" in decision["errors"][0]["message"]
    assert len(stored(path)) == 3


# ------------------------------------------------------------------- other kinds of record


@pytest.mark.parametrize("kind", CONTRACT)
def test_events_share_the_chain_and_query_returns_every_kind_in_order(tmp_path, kind):
    path = log_path(tmp_path, kind)
    clock = FakeClock()
    with open_audit(path, clock=clock) as log:
        clock.now = T0  # the SQLite backend stamps its schema with the clock when it creates it
        log.append([make_record("d1", asset="QQQ")])
        event = log.append_event("state_correction", CORRECTION)
        log.append([make_record("d2"), make_record("d3", decision="approve")])
    assert event == {
        **CORRECTION,
        "kind": "state_correction",
        "sequence": 2,
        "recorded_at": "2026-03-12T08:00:01.500000Z",
        "prev_hash": stored(path)[0]["hash"],
        "batch": {"first": 2, "size": 1},
        "hash": event["hash"],
    }
    assert event["hash"] == record_hash(event)
    records = stored(path)
    assert [(r["sequence"], record_kind(r)) for r in records] == [
        (1, "decision"),
        (2, "state_correction"),
        (3, "decision"),
        (4, "decision"),
    ]
    assert records[1] == event
    assert verify(path).ok and verify(path).count == 4
    with open_audit(path, mode="read") as log:
        assert [r["sequence"] for r in log.query(RecordFilter(kind="state_correction"))] == [2]
        assert [r["sequence"] for r in log.query(RecordFilter(kind="decision"))] == [1, 3, 4]
        assert [r["sequence"] for r in log.query(RecordFilter(asset="QQQ"))] == [1, 2]  # a correction names its asset
        assert [r["sequence"] for r in log.query(RecordFilter(since="2026-03-12T09:30:00Z"))] == [2]  # its `at`
        assert [r["sequence"] for r in log.query(RecordFilter(decision="deny"))] == [1, 3]
        assert (log.stats()["count"], log.stats()["approved"]) == (3, 1)  # decisions only
        assert log.stats(RecordFilter(asset="QQQ"))["count"] == 1
        with pytest.raises(ValueError, match="stats count decisions only, not `state_correction` records"):
            log.stats(RecordFilter(kind="state_correction"))


@pytest.mark.parametrize("kind", CONTRACT)
@pytest.mark.parametrize(
    "event_kind, fields, message",
    [
        ("note", CORRECTION, "an event's kind must be one of `state_correction`, got `note`"),
        ("rollback", CORRECTION, "an event's kind must be one of `state_correction`, got `rollback`"),
        ("decision", CORRECTION, "an event's kind must be one of `state_correction`, got `decision`"),
        ("state_correction", {**CORRECTION, "kind": "x"}, "state_correction record: `kind` is given as the first argument"),
        ("state_correction", {k: v for k, v in CORRECTION.items() if k != "reason"}, "missing `reason`"),
        ("state_correction", {k: v for k, v in CORRECTION.items() if k != "detail"}, "missing `detail`"),
        ("state_correction", {**CORRECTION, "asset": " "}, "`asset` must be a non-empty string"),
        ("state_correction", {**CORRECTION, "at": "yesterday"}, "state_correction record: `at`: `yesterday`"),
        ("state_correction", {**CORRECTION, "detail": float("nan")}, "(a state_correction record) is not valid JSON"),
    ],
    ids=["unknown", "rollback", "decision", "kind-in-fields", "no-reason", "no-detail", "blank-asset", "bad-at", "nan"],
)
def test_append_event_refuses_what_it_cannot_record(tmp_path, kind, event_kind, fields, message):
    path = log_path(tmp_path, kind)
    filled(path, 1)
    with open_audit(path) as log, pytest.raises(AuditError) as caught:
        log.append_event(event_kind, fields)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert len(stored(path)) == 1


def test_sqlite_events_have_no_decision_id_and_ids_stay_unique(tmp_path):
    path = tmp_path / "audit.sqlite"
    filled(path, 1)
    with open_audit(path) as log:
        log.append_event("state_correction", CORRECTION)
        log.append_event("state_correction", CORRECTION)
        with pytest.raises(AuditError, match="already in the audit log"):
            log.append([make_record("d1")])
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT kind, decision_id, asset, decision FROM audit_records ORDER BY sequence").fetchall()
    finally:
        conn.close()
    assert rows == [
        ("decision", "d1", "AAPL", "deny"),
        ("state_correction", None, "QQQ", None),
        ("state_correction", None, "QQQ", None),
    ]


@pytest.mark.parametrize("kind", CONTRACT)
def test_cli_query_kind_filter_and_stats_count_decisions_only(tmp_path, kind):
    path = log_path(tmp_path, kind)
    filled(path, 2)
    with open_audit(path) as log:
        log.append_event("state_correction", CORRECTION)
    text = run("query", "--audit", str(path), "--kind", "state_correction")
    assert text.exit_code == 0 and text.stderr == "1 record(s)\n"
    assert text.stdout.splitlines()[1].split() == [
        "3",
        "state_correction",
        "2026-03-12T09:30:00Z",
        "QQQ",
        "remove_event",
        *["-"] * 4,
        *["recorded", "with", "a", "mistyped", "year"],
    ]
    every = run("query", "--audit", str(path), "--format", "jsonl")
    assert [json.loads(line).get("kind") for line in every.stdout.splitlines()] == ["decision", "decision", "state_correction"]
    assert run("stats", "--audit", str(path)).stdout.startswith("2 decision(s): 1 approved (50.0%), 1 denied")
    assert "--kind" not in run("stats", "--help").stdout
    assert run("query", "--audit", str(path), "--kind", "note").exit_code == EXIT_USAGE


# ------------------------------------------------------------ logs written before kinds existed

V1 = Path(__file__).parent / "audit_v1"  # written by the engine before records had `kind` and `batch`


def _v1_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript((V1 / "audit.sql").read_text())
    conn.close()
    return path


def _rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT sequence, decision_id, hash, body FROM audit_records ORDER BY sequence").fetchall()
    finally:
        conn.close()


def _version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    finally:
        conn.close()


def test_a_version_1_sqlite_log_is_read_as_it_is_and_migrated_in_place_when_appended_to(tmp_path):
    path = _v1_sqlite(tmp_path)
    v1_rows = _rows(path)
    assert len(v1_rows) == 3 and all('"kind"' not in body for *_, body in v1_rows)
    with open_audit(path, mode="read") as log:  # read-only: no migration, nothing written
        result = log.verify()
        assert (result.ok, result.count, result.head) == (True, 3, v1_rows[2][2])
        assert [r["sequence"] for r in log.query(RecordFilter(kind="decision"))] == [1, 2, 3]
        assert list(log.query(RecordFilter(kind="rollback"))) == []
        assert log.stats()["count"] == 3
        assert log.find(v1_rows[1][1])["hash"] == v1_rows[1][2]
    assert _version(path) == 1
    with open_audit(path, clock=FakeClock()) as log:
        log.append([make_record("d4")])
        log.append_event("state_correction", CORRECTION)
        assert log.find(v1_rows[0][1])["sequence"] == 1
    assert _version(path) == SCHEMA_VERSION == 2
    assert _rows(path)[:3] == v1_rows  # bodies and hashes copied unchanged
    result = verify(path)
    assert (result.ok, result.count) == (True, 5)
    assert stored(path)[3]["prev_hash"] == v1_rows[2][2]


def test_a_jsonl_log_written_before_kinds_verifies_and_chains_on(tmp_path):
    path = tmp_path / "v1.jsonl"
    path.write_bytes((V1 / "audit.jsonl").read_bytes())
    old = [json.loads(line) for line in (V1 / "audit.jsonl").read_text().splitlines()]
    assert len(old) == 3 and not any("kind" in r or "batch" in r for r in old)
    assert verify(path).ok and verify(path).head == old[2]["hash"]
    with open_audit(path, mode="read") as log:
        assert log.stats()["count"] == 3 and len(list(log.query(RecordFilter(kind="decision")))) == 3
    with open_audit(path) as log:
        log.append([make_record("d4")])
    records = stored(path)
    assert records[:3] == old
    assert (records[3]["sequence"], records[3]["prev_hash"], records[3]["batch"]) == (4, old[2]["hash"], {"first": 4, "size": 1})
    assert verify(path).ok


# ------------------------------------------------------------------------------------- find


@pytest.mark.parametrize("kind", CONTRACT)
def test_find_returns_the_stored_decision_record_or_none(tmp_path, kind):
    path = log_path(tmp_path, kind)
    records = filled(path, 4)
    with open_audit(path) as log:
        event = log.append_event("state_correction", CORRECTION)
        assert log.find("d3") == records[2]
        assert log.find("d1") == records[0]  # first record: no neighbour before it
        assert log.find("d4") == records[3]
        assert log.find("nope") is None
        assert log.find("") is None
    with open_audit(path, mode="read") as log:
        assert log.find("d2") == records[1] and log.find("d2")["hash"] == records[1]["hash"]
    assert event["sequence"] == 5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tampering", ["content-changed", "rehashed-forgery"])
def test_find_refuses_a_record_that_does_not_fit_its_chain(tmp_path, kind, tampering):
    path = log_path(tmp_path, kind)
    filled(path, 5)
    if kind == "sqlite":
        conn = sqlite3.connect(path, isolation_level=None)
        if tampering == "rehashed-forgery":
            _rewrite_body_and_hash(conn, 3)
        else:
            conn.execute("UPDATE audit_records SET body = replace(body, '\"AAPL\"', '\"AAPX\"') WHERE sequence = 3")
        conn.close()
    elif tampering == "rehashed-forgery":
        _jsonl_edit(lambda rs: [*rs[:2], _rehash(rs[2], decision="approve"), *rs[3:]])(path)
    else:
        _lines(lambda ls: [*ls[:2], ls[2].replace('"AAPL"', '"AAPX"'), *ls[3:]])(path)
    problem = {
        "content-changed": "record #3: the hash does not match the record's content (the record was changed)",
        "rehashed-forgery": "record #4 does not link to record #3",
    }[tampering]
    with open_audit(path, mode="read") as log, pytest.raises(AuditError) as caught:
        log.find("d3")
    assert str(caught.value) == (
        f"{path}: the record of decision `d3` fails the chain check: {problem}: run `protect audit verify`"
    )


def test_jsonl_find_refuses_a_decision_id_recorded_twice(tmp_path):
    path = tmp_path / "audit.jsonl"
    filled(path, 2)
    with open_audit(path) as log:
        log.append([make_record("d1")])
        with pytest.raises(AuditError, match=r"decision `d1` is recorded twice \(lines 1 and 3\)"):
            log.find("d1")
        assert log.find("d2")["sequence"] == 2


# ------------------------------------------------------------------------------------ layout


def test_the_audit_modules_import_no_private_names_from_each_other():
    """Issue 7, structure: what the sinks share has public names."""
    package = Path(__file__).resolve().parent.parent / "protection_rules"
    private = []
    for module in [*sorted((package / "audit").glob("*.py")), package / "cli" / "audit.py"]:
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                private += [f"{module.name}: {alias.name}" for alias in node.names if alias.name.startswith("_")]
    assert private == []


# ------------------------------------------------------------------------------- concurrency


def _append_many(path: str, worker: int, count: int, barrier: Any) -> None:
    log = open_audit(path)
    try:
        barrier.wait()
        for n in range(count):
            log.append([make_record(f"p{worker}-{n}")])
    finally:
        log.close()


@pytest.mark.parametrize("kind", CONTRACT)
def test_four_processes_appending_500_each_lose_nothing(tmp_path, kind):
    path = str(log_path(tmp_path, kind))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    workers = [context.Process(target=_append_many, args=(path, worker, 500, barrier)) for worker in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=300)
    assert [process.exitcode for process in workers] == [0, 0, 0, 0]
    records = stored(path)
    assert [r["sequence"] for r in records] == list(range(1, 2001))
    for worker in range(4):  # each writer's records, in its own order
        assert [r["decision_id"] for r in records if r["decision_id"].startswith(f"p{worker}-")] == [
            f"p{worker}-{n}" for n in range(500)
        ]
    result = verify(path)
    assert (result.ok, result.count) == (True, 2000)


@pytest.mark.parametrize("kind", CONTRACT)
def test_eight_threads_sharing_one_sink_lose_nothing(tmp_path, kind):
    path = log_path(tmp_path, kind)
    errors: list[BaseException] = []
    with open_audit(path) as log:

        def work(worker: int) -> None:
            try:
                for n in range(100):
                    log.append([make_record(f"t{worker}-{n}")])
            except BaseException as exc:  # surfaced below; a thread cannot fail the test itself
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert sorted(r["decision_id"] for r in stored(path)) == sorted(f"t{w}-{n}" for w in range(8) for n in range(100))
    result = verify(path)
    assert (result.ok, result.count) == (True, 800)


# ----------------------------------------------------------------------------- query, stats

# (id, asset, evaluated_at, decision, blocking systems, override, policy version, time ms)
QUERY_SET = [
    ("q1", "AAPL", "2026-03-10T09:00:00Z", "approve", [], False, "1.0.0", 3.0),
    ("q2", "AAPL", "2026-03-10T15:30:00Z", "deny", ["holding_period"], False, "1.0.0", 1.0),
    ("q3", "MSFT", "2026-03-11T00:00:00Z", "deny", ["grace_period", "holding_period"], False, "1.0.0", 8.0),
    ("q4", "MSFT", "2026-03-11T12:00:00Z", "approve", [], True, "1.1.0", 2.0),
    ("q5", "NVDA", "2026-03-11T23:59:59.999999Z", "deny", ["whipsaw_protection"], False, "1.1.0", 5.0),
    ("q6", "AAPL", "2026-03-12T00:00:00Z", "deny", ["core_asset_immunity"], False, "1.1.0", 13.0),
    ("q7", "NVDA", "2026-03-12T09:00:00Z", "approve", [], True, "1.1.0", 21.0),
    ("q8", None, None, "deny", ["error"], False, "1.0.0", 0.5),  # an unparseable request
]


@pytest.fixture(params=CONTRACT)
def query_log(request, tmp_path):
    path = log_path(tmp_path, request.param)
    with open_audit(path) as log:
        log.append(
            [
                make_record(
                    i, asset=a, evaluated_at=at, decision=d, blocking=b, override=o, version=v, time_ms=ms, trace_id=f"t{i[1:]}"
                )
                for i, a, at, d, b, o, v, ms in QUERY_SET
            ]
        )
    with open_audit(path, mode="read") as log:
        yield log


QUERIES = [
    ({}, "q1 q2 q3 q4 q5 q6 q7 q8"),
    ({"asset": "AAPL"}, "q1 q2 q6"),
    ({"asset": "TSLA"}, ""),
    ({"decision": "approve"}, "q1 q4 q7"),
    ({"decision": "deny"}, "q2 q3 q5 q6 q8"),
    ({"blocking_system": "holding_period"}, "q2 q3"),
    ({"blocking_system": "grace_period"}, "q3"),
    ({"policy_version": "1.1.0"}, "q4 q5 q6 q7"),
    ({"trace_id": "t4"}, "q4"),
    ({"since": "2026-03-11"}, "q3 q4 q5 q6 q7"),
    ({"until": "2026-03-11"}, "q1 q2"),
    ({"since": "2026-03-11T00:00:00Z", "until": "2026-03-12T00:00:00Z"}, "q3 q4 q5"),
    ({"since": "2026-03-10T15:30:00.000001Z", "until": "2026-03-11T00:00:00.000001Z"}, "q3"),
    ({"since": "2026-03-11T12:30:00+01:00"}, "q4 q5 q6 q7"),  # 11:30Z: a text comparison would drop q4
    ({"since": "2026-03-11", "until": "2026-03-11"}, ""),
    ({"asset": "MSFT", "decision": "deny"}, "q3"),
    ({"asset": "AAPL", "decision": "deny", "since": "2026-03-11"}, "q6"),
    ({"decision": "deny", "blocking_system": "holding_period", "policy_version": "1.0.0"}, "q2 q3"),
    ({"asset": "NVDA", "policy_version": "1.1.0", "until": "2026-03-12", "trace_id": "t5"}, "q5"),
]


@pytest.mark.parametrize("filters, expected", QUERIES, ids=[json.dumps(q[0]) for q in QUERIES])
def test_query_filters(query_log, filters, expected):
    records = list(query_log.query(RecordFilter(**filters)))
    assert [r["decision_id"] for r in records] == expected.split()
    assert all("hash" in r and "request" in r for r in records)  # full records


@pytest.mark.parametrize(
    "filters, message",
    [
        ({"decision": "maybe"}, "decision filter must be `approve` or `deny`, got `maybe`"),
        ({"kind": "note"}, "kind filter must be one of `decision`, `rollback`, `state_correction`, got `note`"),
        ({"since": "yesterday"}, "`yesterday` is not an ISO-8601 timestamp"),
        ({"until": "2026-13-01"}, "2026-13-01"),
    ],
)
def test_a_filter_refuses_values_that_cannot_match(filters, message):
    with pytest.raises(ValueError) as caught:
        RecordFilter(**filters)
    assert message in str(caught.value)


def _day(day, count, approved, overrides, denials, p50, p99):
    return {
        "day": day,
        "count": count,
        "approved": approved,
        "denied": count - approved,
        "approval_rate": approved / count,
        "overrides": overrides,
        "override_rate": overrides / count,
        "denials_by_protection": denials,
        "decision_time_ms": {"p50": p50, "p99": p99},
    }


def test_stats_by_hand(query_log):
    """Times sorted: 0.5 1 2 3 5 8 13 21. Nearest rank: p50 = 4th (3.0; interpolation would give
    4.0), p99 = ceil(7.92) = 8th (21.0)."""
    stats = query_log.stats()
    per_day = stats.pop("per_day")
    overall = _day(
        None,
        8,
        3,
        2,
        {"holding_period": 2, "core_asset_immunity": 1, "error": 1, "grace_period": 1, "whipsaw_protection": 1},
        3.0,
        21.0,
    )
    del overall["day"]
    assert stats == overall
    assert stats["approval_rate"] == 0.375 and stats["override_rate"] == 0.25
    assert list(stats["denials_by_protection"]) == [
        "holding_period",
        "core_asset_immunity",
        "error",
        "grace_period",
        "whipsaw_protection",
    ]
    assert per_day == [
        _day("2026-03-10", 2, 1, 0, {"holding_period": 1}, 1.0, 3.0),
        _day("2026-03-11", 3, 1, 1, {"grace_period": 1, "holding_period": 1, "whipsaw_protection": 1}, 5.0, 8.0),
        _day("2026-03-12", 2, 1, 1, {"core_asset_immunity": 1}, 13.0, 21.0),
        _day(None, 1, 0, 0, {"error": 1}, 0.5, 0.5),
    ]


def test_stats_take_the_query_filters(query_log):
    stats = query_log.stats(RecordFilter(asset="AAPL", since="2026-03-10T12:00:00Z"))
    assert (stats["count"], stats["approved"], stats["denials_by_protection"]) == (
        2,
        0,
        {"holding_period": 1, "core_asset_immunity": 1},
    )
    assert [day["day"] for day in stats["per_day"]] == ["2026-03-10", "2026-03-12"]
    empty = query_log.stats(RecordFilter(asset="TSLA"))
    assert empty == {
        "count": 0, "approved": 0, "denied": 0, "approval_rate": None, "overrides": 0, "override_rate": None,
        "denials_by_protection": {}, "decision_time_ms": {"p50": None, "p99": None}, "per_day": [],
    }  # fmt: skip


# -------------------------------------------------------------------------------------- CLI


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, ["audit", *args], env=env, catch_exceptions=False)


@pytest.mark.parametrize("kind", CONTRACT)
def test_cli_verify_exit_codes_and_messages(tmp_path, kind):
    path = log_path(tmp_path, kind)
    records = filled(path, 4)
    ok = run("verify", "--audit", str(path))
    assert ok.exit_code == 0
    assert ok.stdout == f"audit log {path}: 4 record(s), chain valid (head {records[-1]['hash']})\n"
    as_json = json.loads(run("verify", "--audit", str(path), "--format", "json").stdout)
    assert as_json == {
        "audit": str(path),
        "ok": True,
        "count": 4,
        "first_bad": None,
        "decision_id": None,
        "kind": None,
        "problem": "",
        "head": records[-1]["hash"],
        "torn_tail": None,
    }
    if kind == "sqlite":
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("UPDATE audit_records SET decision = 'deny' WHERE sequence = 2")
        conn.close()
        problem = "column `decision` holds `deny` but the record says `approve` (the row was edited)"
    elif kind == "postgres":
        postgres_sql(path, "UPDATE audit_records SET body = replace(body, '\"AAPL\"', '\"AAPX\"') WHERE sequence = 2")
        problem = "the hash does not match the record's content (the record was changed)"
    else:
        _lines(lambda ls: [ls[0], ls[1].replace('"AAPL"', '"AAPX"'), *ls[2:]])(path)
        problem = "the hash does not match the record's content (the record was changed)"
    broken = run("verify", "--audit", str(path))
    assert broken.exit_code == 1
    assert broken.stdout == f"audit log {path}: record #2 (decision d2): {problem}\n"


@pytest.mark.parametrize("command", ["verify", "query", "stats"])
def test_cli_missing_file_is_a_usage_error_and_a_foreign_one_exits_4(tmp_path, command):
    missing = tmp_path / "nope.sqlite"
    result = run(command, "--audit", str(missing))
    assert (result.exit_code, result.stdout) == (EXIT_USAGE, "")
    assert result.stderr == f"protect: {missing}: no such file\n"
    assert not missing.exists()
    foreign = _a_text_file(tmp_path, "sqlite")
    result = run(command, "--audit", str(foreign))
    assert result.exit_code == EXIT_INTERNAL
    assert result.stderr == f"protect: {foreign}: not an audit log: not a SQLite database\n"


@pytest.mark.parametrize("command", ["query", "stats"])
@pytest.mark.parametrize("option", ["--since", "--until"])
def test_cli_bad_time_is_a_usage_error(tmp_path, command, option):
    path = log_path(tmp_path, "sqlite")
    filled(path, 1)
    result = run(command, "--audit", str(path), option, "last tuesday")
    assert result.exit_code == EXIT_USAGE
    assert option in result.stderr and "`last tuesday` is not an ISO-8601 timestamp" in result.stderr


@pytest.mark.parametrize("kind", CONTRACT)
def test_cli_query_jsonl_prints_full_records_and_an_unfiltered_dump_is_a_valid_log(tmp_path, kind):
    path = log_path(tmp_path, kind)
    records = filled(path, 5)
    result = run("query", "--audit", str(path), "--decision", "deny", "--format", "jsonl")
    assert result.exit_code == 0
    assert [json.loads(line) for line in result.stdout.splitlines()] == [records[0], records[2], records[4]]
    assert result.stderr == "3 record(s)\n"
    dump = tmp_path / "copy.jsonl"
    dump.write_text(run("query", "--audit", str(path), "--format", "jsonl").stdout)
    assert verify(dump).ok and verify(dump).head == records[-1]["hash"]


def test_cli_query_text_table(tmp_path):
    path = tmp_path / "audit.sqlite"
    filled(path, 3)
    result = run("query", "--audit", str(path), "--asset", "AAPL", "--decision", "approve")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "#",
        "kind",
        "at",
        "asset",
        "action",
        "decision",
        "blocked",
        "by",
        "policy",
        "ms",
        "id",
        "or",
        "note",
    ]
    assert lines[1].split() == [
        "2",
        "decision",
        "2026-03-12T07:00:00Z",
        "AAPL",
        "close",
        "approve",
        "-",
        "default",
        "1.0.0",
        "1.25",
        "d2",
    ]
    assert len(lines) == 2


def test_cli_stats_json_matches_the_library_and_text_reads(tmp_path):
    path = tmp_path / "audit.jsonl"
    filled(path, 5)
    result = run("stats", "--audit", str(path), "--format", "json", "--decision", "deny")
    assert result.exit_code == 0
    with open_audit(path, mode="read") as log:
        assert json.loads(result.stdout) == log.stats(RecordFilter(decision="deny"))
    assert json.loads(result.stdout)["count"] == 3
    text = run("stats", "--audit", str(path)).stdout
    assert text.splitlines()[:3] == [
        "5 decision(s): 2 approved (40.0%), 3 denied, 0 by override (0.0%)",
        "decision time: p50 1.25 ms, p99 1.25 ms",
        "denials by protection: holding_period 3",
    ]


def test_cli_takes_the_audit_path_from_the_environment_and_documents_it(tmp_path):
    path = tmp_path / "env.jsonl"
    filled(path, 2)
    result = run("verify", env={"PROTECT_AUDIT": str(path)})
    assert result.exit_code == 0 and "2 record(s), chain valid" in result.stdout
    for command in ("verify", "query", "stats"):
        help_text = run(command, "--help").stdout
        assert "PROTECT_AUDIT" in help_text and "audit.sqlite" in help_text and "Example:" in help_text


@pytest.mark.parametrize("kind", CONTRACT)
def test_records_larger_than_a_read_chunk_round_trip_and_the_chain_continues(tmp_path, kind):
    path = log_path(tmp_path, kind)
    big = make_record("big1")
    big["request"]["metadata"] = {"blob": "é" * 150_000}  # > 64 KiB: the JSONL tail and head reads loop
    with open_audit(path) as log:
        log.append([big])
    with open_audit(path) as log:  # reopening reads the first and the last line
        log.append([make_record("d2")])
    records = stored(path)
    assert records[0]["request"] == big["request"]
    assert [r["sequence"] for r in records] == [1, 2] and verify(path).ok


# ------------------------------------------------------------------------- SQLite page size


def _page_size(path) -> int:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()


def test_a_new_sqlite_log_has_16_kb_pages_and_an_old_one_keeps_its_own(tmp_path):
    import sqlite3

    new = tmp_path / "new.sqlite"
    with open_audit(new) as log:
        log.append([make_record("n1")])
    assert _page_size(new) == 16384

    old = tmp_path / "old.sqlite"
    conn = sqlite3.connect(old)  # a log created by an engine that left SQLite's 4 KB pages
    conn.execute("PRAGMA page_size=4096")
    conn.execute("CREATE TABLE placeholder (x)")
    conn.execute("DROP TABLE placeholder")
    conn.close()
    with open_audit(old) as log:
        log.append([make_record("o1"), make_record("o2")])
        assert log.verify().ok and log.verify().count == 2
    assert _page_size(old) == 4096
