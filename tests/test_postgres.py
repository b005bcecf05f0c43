"""PostgreSQL as the shared state store and audit trail (README, "PostgreSQL"): what the contract
tests in test_state.py and test_audit.py do not cover -- recognising the URL, hiding its password,
failing closed when the server is down or refuses, the schema and its versions, several writers
on one chain, a decision committed from two connections at once, and a server restart.

The server is the tests' own (tests/postgres_server.py, the `postgres_server` fixture)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from postgres_server import SECURED_PASSWORD, SECURED_ROLE
from test_audit import CORRECTION, make_record, postgres_sql

from protection_rules import Engine
from protection_rules.audit import RecordFilter, open_audit
from protection_rules.cli import cli
from protection_rules.errors import EXIT_INTERNAL, AuditError, StateError, UsageError
from protection_rules.models import StateChange
from protection_rules.postgres import database_url, migrate, redact
from protection_rules.state import open_state
from protection_rules.timestamps import parse_instant as at

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "requests"
NOW = "2026-03-12T09:00:00Z"
FAILING = {"asset": "INTC", "action": "close", "current_date": NOW, "current_score": 0.4, "current_size": 0.05}
# Nothing listens on port 1: the connection is refused at once.
DOWN = "postgresql://rebalancer:Down-Pa55word@127.0.0.1:1/protect"


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def together(work: Callable[..., object], arguments: list[tuple]) -> list[BaseException]:
    """Run `work(*args)` in one thread per `args`, released at once; what the threads raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(arguments))

    def run_one(*args: Any) -> None:
        try:
            barrier.wait()
            work(*args)
        except BaseException as exc:  # surfaced by the caller: a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=run_one, args=args) for args in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


# ------------------------------------------------------------------------------ the URL


@pytest.mark.parametrize(
    "target, expected",
    [
        ("postgresql://u:p@db.example:5432/protect", "postgresql://u:p@db.example:5432/protect"),
        ("postgres://u@/protect?host=/run/pg", "postgres://u@/protect?host=/run/pg"),
        ("POSTGRESQL://u@db/protect", "POSTGRESQL://u@db/protect"),
        ("audit.sqlite", None),
        ("/var/lib/protect/postgresql.sqlite", None),
        ("relative/dir:with:colons.jsonl", None),
        (Path("postgresql:/looks/like/a/url"), None),  # a Path is always a file
    ],
)
def test_database_url_recognises_postgresql_urls_and_nothing_else(target, expected):
    assert database_url(target) == expected


@pytest.mark.parametrize("target", ["mysql://u@db/x", "sqlite:///tmp/x.db", "https://example.com/audit"])
def test_another_url_scheme_is_a_usage_error_not_a_file_name(target):
    with pytest.raises(UsageError, match=r"unsupported URL scheme"):
        database_url(target)


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://u:hunter22@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("postgresql://u:p%40ss@db/x?sslmode=require", "postgresql://u:***@db/x?sslmode=require"),
        ("postgresql://db/x?user=u&password=hunter22&sslmode=require", "postgresql://db/x?user=u&password=***&sslmode=require"),
        ("postgresql://u@db/x", "postgresql://u@db/x"),
    ],
)
def test_redact_hides_the_password_wherever_the_url_carries_it(url, shown):
    assert redact(url) == shown


# ---------------------------------------------------------------------------- fail closed


def _refusing(server: Any) -> str:
    """A role that needs a password, given the wrong one."""
    return server.url(user=SECURED_ROLE, password="Wr0ng-pa55word")


@pytest.mark.parametrize("where", ["down", "refusing"])
@pytest.mark.parametrize("opener, error", [(open_state, StateError), (open_audit, AuditError)], ids=["state", "audit"])
def test_a_server_that_is_down_or_refuses_is_a_typed_error_naming_the_url_without_its_password(
    postgres_server, where, opener, error
):
    url = DOWN if where == "down" else _refusing(postgres_server)
    with pytest.raises(error) as caught:
        opener(url)
    message = str(caught.value)
    assert redact(url) in message and "cannot open" in message
    assert "pa55word" not in message.lower() and "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:Secr3t-pw@[unclosed/db",  # libpq quotes the whole URL back
        "postgresql://u:Secr3t-pw@127.0.0.1:notaport/db",
        "postgresql://u@127.0.0.1:1/db?password=Secr3t-pw&sslmode=nonsense",
    ],
)
def test_a_malformed_url_is_a_state_error_that_never_shows_its_password(url):
    with pytest.raises(StateError) as caught:
        open_state(url)
    assert "Secr3t" not in str(caught.value) and str(caught.value).startswith("state store postgresql://")


def test_the_right_password_opens_and_the_store_shows_the_url_without_it(postgres_server):
    url = postgres_server.url(user=SECURED_ROLE, password=SECURED_PASSWORD)
    postgres_server.execute(f"GRANT CREATE ON SCHEMA public TO {SECURED_ROLE}")
    store = open_state(url)
    try:
        assert store.path == postgres_server.url(user=SECURED_ROLE, password="***")
        assert SECURED_PASSWORD not in repr(store)
    finally:
        store.close()


@pytest.mark.parametrize(
    "args",
    [
        ["evaluate", "--state", DOWN, str(EXAMPLES / "plain_open.json")],
        ["evaluate", "--format", "json", "--audit", DOWN, str(EXAMPLES / "plain_open.json")],
        ["commit", "--audit", DOWN, "-"],
        ["audit", "verify", "--audit", DOWN],
        ["audit", "query", "--audit", DOWN],
        ["state", "show", "AAPL", "--state", DOWN],
    ],
    ids=["evaluate-state", "evaluate-audit", "commit", "verify", "query", "state-show"],
)
def test_cli_exits_4_and_never_approves_or_prints_the_password_when_the_database_is_down(args):
    decision = json.dumps(Engine.from_policy(audit=None).evaluate(FAILING).to_dict())
    result = CliRunner().invoke(cli, args, input=decision)
    assert result.exit_code == EXIT_INTERNAL, result.output
    assert "Down-Pa55word" not in result.output and "Down-Pa55word" not in result.stderr
    assert redact(DOWN) in result.stderr or redact(DOWN) in result.stdout
    if "--format" in args:  # the decision printed is a deny for the audit error
        printed = json.loads(result.stdout)
        assert (printed["approved"], printed["errors"][0]["code"]) == (False, "audit-error")


# ----------------------------------------------------------------------------- the schema


def test_state_and_audit_share_one_database_each_with_its_schema_version(postgres_url):
    with open_audit(postgres_url) as log:
        log.append([make_record("d1")])
    open_state(postgres_url).close()
    open_state(postgres_url).close()  # reopening migrates nothing again
    tables = {row[0] for row in _rows(postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {
        "audit_schema_version",
        "audit_records",
        "state_schema_version",
        "state_core",
        "state_grace",
        "state_events",
        "state_overrides",
        "state_applied",
    }
    assert _rows(postgres_url, "SELECT version FROM audit_schema_version") == [(1,)]
    assert _rows(postgres_url, "SELECT version FROM state_schema_version") == [(1,)]


@pytest.mark.parametrize(
    "opener, table", [(open_state, "state_schema_version"), (open_audit, "audit_schema_version")], ids=["state", "audit"]
)
def test_a_newer_schema_version_is_refused(postgres_url, opener, table):
    opener(postgres_url).close()
    postgres_sql(postgres_url, f"INSERT INTO {table} (version) VALUES (7)")
    with pytest.raises((StateError, AuditError), match="schema version 7 is newer than this protection-rules supports"):
        opener(postgres_url)


def test_migrations_run_in_order_once_when_openers_race(postgres_url):
    """Processes opening a new database together migrate it once (the advisory lock), and a
    later release's steps run after the ones already applied."""
    import psycopg

    steps = {1: ("CREATE TABLE demo (n INTEGER)",), 2: ("ALTER TABLE demo ADD COLUMN m INTEGER",)}

    def open_at(version: int) -> None:
        with psycopg.connect(postgres_url) as conn:
            known = {step: sql for step, sql in steps.items() if step <= version}
            migrate(conn, table="demo_schema_version", migrations=known, create=True, fail=AuditError)

    assert together(open_at, [(1,)] * 4) == []
    assert together(open_at, [(2,)] * 4) == []
    assert _rows(postgres_url, "SELECT version FROM demo_schema_version ORDER BY version") == [(1,), (2,)]
    assert _rows(postgres_url, "SELECT n, m FROM demo") == []  # both columns: step 2 ran


@pytest.mark.parametrize(
    "open_for_reading",
    [lambda url: open_state(url, create=False), lambda url: open_audit(url, mode="read")],
    ids=["state", "audit"],
)
def test_reading_an_empty_database_is_refused_and_creates_nothing(postgres_url, open_for_reading):
    with pytest.raises((StateError, AuditError), match="no schema here"):
        open_for_reading(postgres_url)
    assert _rows(postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == []


def test_cli_evaluate_reading_state_from_an_empty_database_exits_4(postgres_url):
    """A mistyped database read as "no state" would loosen protections (as a missing file would)."""
    result = run("evaluate", "--no-audit", "--state", postgres_url, str(EXAMPLES / "plain_open.json"))
    assert result.exit_code == EXIT_INTERNAL and "no schema here" in result.stderr


# ----------------------------------------------------------------- several writers, one chain


def test_several_sinks_on_several_connections_write_one_chain(postgres_url):
    """Four sinks (four pools, as four hosts would have), two threads each, decisions in batches
    and corrections interleaved: the chain holds exactly what was written and verifies."""
    sinks = [open_audit(postgres_url) for _ in range(4)]

    def work(sink: Any, worker: int) -> None:
        for n in range(25):
            sink.append([make_record(f"w{worker}-{n}-a"), make_record(f"w{worker}-{n}-b")])
            if n % 5 == 0:
                sink.append_event("state_correction", CORRECTION)

    errors = together(work, [(sinks[worker % 4], worker) for worker in range(8)])
    for sink in sinks:
        sink.close()
    assert errors == []
    with open_audit(postgres_url, mode="read") as log:
        records = list(log.records())
        result = log.verify()
    decisions = sorted(r["decision_id"] for r in records if r["kind"] == "decision")
    assert decisions == sorted(f"w{w}-{n}-{x}" for w in range(8) for n in range(25) for x in "ab")
    assert sum(r["kind"] == "state_correction" for r in records) == 8 * 5
    assert [r["sequence"] for r in records] == list(range(1, 8 * 55 + 1))
    for record in records:  # each batch stayed together
        if record["batch"]["size"] == 2 and record["sequence"] == record["batch"]["first"]:
            assert records[record["sequence"]]["decision_id"] == record["decision_id"][:-1] + "b"
    assert (result.ok, result.count) == (True, 440)


def test_a_second_record_chained_onto_the_same_one_is_refused_by_the_table(postgres_url):
    """The constraint behind the lock: even a writer that skipped it cannot fork the chain."""
    with open_audit(postgres_url) as log:
        log.append([make_record("d1")])
        (first,) = log.records()
    with pytest.raises(Exception, match="audit_records_prev_hash_key"):
        postgres_sql(
            postgres_url,
            "INSERT INTO audit_records (sequence, kind, recorded_at, prev_hash, hash, body)"
            f" VALUES (2, 'state_correction', 'x', '{first['prev_hash']}', 'h', '{{}}')",
        )


def test_a_writer_waiting_past_the_timeout_gives_up_with_an_audit_error(postgres_url):
    import psycopg

    from protection_rules.audit.postgres import APPEND_LOCK, PostgresAuditLog

    log = PostgresAuditLog(postgres_url, timeout=0.3)
    try:
        with psycopg.connect(postgres_url) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))  # another writer mid-append
            with pytest.raises(AuditError, match=r"locked by another writer \(gave up after 0.3 s\)"):
                log.append([make_record("d1")])
        log.append([make_record("d1")])  # the other writer is gone: this one goes on
        assert [r["decision_id"] for r in log.records()] == ["d1"]
    finally:
        log.close()


def test_a_decision_committed_from_two_connections_at_once_applies_once(postgres_url):
    stores = [open_state(postgres_url), open_state(postgres_url)]
    changes = [StateChange(type="override_used", asset="NVDA", at=at(NOW))]
    results: list[bool] = []
    errors = together(lambda store: results.append(store.apply(changes, "decision-1")), [(stores[n % 2],) for n in range(8)])
    for store in stores:
        store.close()
    assert errors == []
    assert sorted(results) == [False] * 7 + [True]
    assert _rows(postgres_url, "SELECT decision_id FROM state_applied") == [("decision-1",)]


def test_engines_on_two_hosts_share_state_and_audit_through_the_api(postgres_url):
    """Engine(state=URL, audit=URL): one engine's commit is what the other sees; each closes what it opened."""
    first = Engine.from_policy(state=postgres_url, audit=postgres_url)
    second = Engine.from_policy(state=postgres_url, audit=postgres_url)
    try:
        decision = first.evaluate(FAILING)
        assert second.commit(decision) is True  # found in the shared trail
        assert first.commit(decision) is False
        later = second.evaluate({**FAILING, "current_date": "2026-03-14T09:00:00Z"})
        assert later.state_source == "store" and later.trace[2].facts["grace_started_at"] == NOW
        health = first.health()
        assert (health["state_store"]["backend"], health["state_store"]["writable"]) == ("PostgresStateStore", True)
        assert (health["audit_sink"]["backend"], health["audit_sink"]["writable"]) == ("PostgresAuditLog", True)
    finally:
        first.close()
        second.close()
    with pytest.raises(StateError, match="closed"):
        first.state.load("INTC")
    with open_audit(postgres_url, mode="read") as log:
        assert [r["decision_id"] for r in log.query(RecordFilter(kind="decision"))] == [decision.decision_id, later.decision_id]
        assert log.verify().ok


def test_cli_evaluate_commit_and_verify_on_postgresql(postgres_url, tmp_path):
    request = tmp_path / "request.json"
    request.write_text(json.dumps(FAILING))
    open_state(postgres_url).close()  # evaluate only reads state: the schema must be there (as a file must exist)
    evaluated = run("evaluate", "--format", "json", "--state", postgres_url, "--audit", postgres_url, str(request))
    assert evaluated.exit_code == 1, evaluated.output
    decision = tmp_path / "decision.json"
    decision.write_text(evaluated.stdout)
    committed = run("commit", "--state", postgres_url, "--audit", postgres_url, str(decision))
    assert committed.exit_code == 0, committed.output
    assert json.loads(committed.stdout)["applied"] is True
    again = run("commit", "--state", postgres_url, "--audit", postgres_url, str(decision))
    assert json.loads(again.stdout)["applied"] is False
    verified = run("audit", "verify", "--audit", postgres_url)
    assert verified.exit_code == 0 and "1 record(s), chain valid" in verified.stdout


# ------------------------------------------------------------------------------- a restart


def test_after_a_server_restart_the_next_calls_succeed_without_intervention(postgres_server, postgres_url):
    """The pool checks a connection before handing it out and replaces the ones the restart cut."""
    store, log = open_state(postgres_url), open_audit(postgres_url)
    try:
        store.record_execution("AAPL", "open", at(NOW), 0.1)
        log.append([make_record("d1")])
        postgres_server.restart()
        store.record_execution("AAPL", "close", at("2026-03-12T10:00:00Z"), 0.1)
        log.append([make_record("d2")])
        assert [e.type for e in store.events("AAPL")] == ["open", "close"]
        assert [r["decision_id"] for r in log.records()] == ["d1", "d2"] and log.verify().ok
    finally:
        store.close()
        log.close()


def _rows(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_a_request_carrying_nul_characters_is_recorded_and_verifies(postgres_url):
    """PostgreSQL text cannot hold NUL; an invalid request may: it is still recorded (a deny for
    the request, not an audit error) and the chain verifies."""
    with Engine.from_policy(audit=postgres_url) as engine:
        decision = engine.evaluate({"asset": "A\x00B", "action": "close\x00", "current_date": NOW})
    assert not decision.approved and "audit-error" not in [error.code for error in decision.errors]
    with open_audit(postgres_url, mode="read") as log:
        (record,) = log.records()
        assert record["request"]["asset"] == "A\x00B" and log.verify().ok


@pytest.mark.parametrize("opener", [open_state, open_audit], ids=["state", "audit"])
def test_health_answers_soon_that_a_database_gone_after_opening_is_unreachable(postgres_server, postgres_url, opener):
    """The probe waits PROBE_TIMEOUT (1 s) for a connection, not the pool's 10-30 s, and says why."""
    backend = opener(postgres_url)
    try:
        postgres_server.execute(f"DROP DATABASE {urlsplit(postgres_url).path.lstrip('/')} WITH (FORCE)")
        started = time.monotonic()
        health = backend.probe()
        assert time.monotonic() - started < 5
        assert (health["reachable"], health["writable"]) == (False, False)
        assert health["problem"].startswith(("state store " + postgres_url, postgres_url))
    finally:
        backend.close()
