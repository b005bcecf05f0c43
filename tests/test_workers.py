"""Deciding on several cores (`workers=N`, workers.py): the same decisions, in input order, one
audit chain written by the engine's process, and a dead worker denies, never approves.

Spawning worker processes takes about a second: the module's engine keeps them, and other
engines with the same state store borrow them (`_workers`) rather than start their own.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from protection_rules import Engine
from protection_rules.audit import open_audit
from protection_rules.cli import cli
from protection_rules.errors import UsageError
from protection_rules.loading import RequestDocument
from protection_rules.state import MemoryStateStore, open_state
from protection_rules.timestamps import MICROS_PER_DAY, format_instant, parse_instant
from protection_rules.workers import MIN_BATCH

NOW = parse_instant("2026-03-12T09:00:00Z")
ASSETS = ["AAPL", "MSFT", "NVDA", "TSLA"]
STORED = "STORED"  # its state is in the state store only: the requests for it carry none
PER_CALL = ("decision_id", "evaluated_at", "decision_time_ms", "trace_id")  # differ between calls


class Dies:
    """A request whose unpickling ends the process that unpickles it: a worker, mid-call."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os._exit, (3,))


def mix(count: int, seed: int) -> list[Any]:
    """Valid requests around the default policy's boundaries, requests for the stored asset, and
    invalid ones of every kind (missing and unknown fields, bad values, not an object, a
    datetime handed in by a Python caller, one that cannot be pickled)."""
    rng = random.Random(seed)
    out: list[Any] = []
    for index in range(count):
        ago = lambda days: format_instant(NOW - rng.randrange(0, days * MICROS_PER_DAY))  # noqa: E731
        request: dict[str, Any] = {
            "request_id": f"r{index}",
            "asset": rng.choice(ASSETS),
            "action": rng.choice(["open", "close", "increase", "decrease"]),
            "current_date": format_instant(NOW),
            "current_size": round(rng.uniform(0, 0.1), 4),
            "target_size": round(rng.uniform(0, 0.1), 4),
        }
        if rng.random() < 0.8:
            request["current_score"] = round(rng.random(), 3)
        if rng.random() < 0.5:
            request["position_entry_date"] = ago(10)
        state: dict[str, Any] = {}
        if rng.random() < 0.15:
            state["core"] = {"designated_at": ago(100)}
        if rng.random() < 0.3:
            state["grace"] = {"started_at": ago(8), "original_size": 0.05}
        if rng.random() < 0.5:
            stamps = sorted(NOW - rng.randrange(0, 20 * MICROS_PER_DAY) for _ in range(rng.randrange(1, 5)))
            state["events"] = [{"type": rng.choice(["open", "close"]), "at": format_instant(t)} for t in stamps]
        if state:
            request["state"] = state
        if rng.random() < 0.3:
            request["regime"] = {"changed": True, "severity": rng.choice(["normal", "high", "critical"]), "change_date": ago(9)}
        roll = rng.random()
        if roll < 0.1:
            request = {k: v for k, v in request.items() if k != "state"} | {"asset": STORED}
        elif roll < 0.13:
            del request["action"]
        elif roll < 0.15:
            request["colour"] = "red"
        elif roll < 0.17:
            request["current_score"] = math.nan
        elif roll < 0.18:
            request["current_date"] = "2026-02-30T00:00:00Z"
        elif roll < 0.19:
            request = rng.choice(["not a request", 42, None, ["AAPL"]])
        elif roll < 0.2:
            request["current_date"] = datetime(2026, 3, 12, 9, tzinfo=UTC)
        elif roll < 0.21:
            request["tag"] = lambda: None  # cannot cross to a worker: decided in the engine's process
        out.append(request)
    return out


def as_json(request: Any) -> str | None:
    try:
        return json.dumps(request)
    except TypeError:
        return None


def stripped(decision: Any) -> dict[str, Any]:
    out = decision.to_dict()
    for key in PER_CALL:
        out.pop(key)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("workers")
    store = open_state(path / "state.sqlite")
    try:
        store.record_execution(STORED, "open", NOW - 2 * MICROS_PER_DAY, 0.05)
        store.record_execution(STORED, "close", NOW - MICROS_PER_DAY, None)
        store.record_execution(STORED, "open", NOW - MICROS_PER_DAY // 2, 0.05)
    finally:
        store.close()
    return path


@pytest.fixture(scope="module")
def engine(folder: Path) -> Any:
    """An engine with a state store given by path and an SQLite audit trail, kept with its workers."""
    with Engine.from_policy(state=str(folder / "state.sqlite"), audit=str(folder / "audit.sqlite")) as built:
        yield built


def test_two_workers_decide_exactly_as_one_process_in_order_on_one_chain(engine: Engine) -> None:
    requests = mix(1200, seed=11)
    one = engine.evaluate_many(requests)
    two = engine.evaluate_many(requests, workers=2)
    assert [stripped(d) for d in two] == [stripped(d) for d in one]
    assert len({d.trace_id for d in two}) == 1 and two[0].trace_id != one[0].trace_id
    # the mix holds every kind: approvals, denials, invalid requests, stored state
    assert {d.approved for d in two} == {True, False}
    assert sum(bool(d.errors) for d in two) > 100
    assert sum(d.state_source == "store" for d in two) > 50
    assert engine.audit.verify().ok
    recorded = [r for r in engine.audit.records() if r.get("trace_id") == two[0].trace_id]
    assert [r["decision_record"] for r in recorded] == [d.to_dict() for d in two]


def test_traces_are_complete_and_exact_when_read_after_the_call(folder: Path) -> None:
    # audit off: the workers send no record, so each trace is written again here when read
    requests = mix(MIN_BATCH + 100, seed=12)
    with Engine.from_policy(state=str(folder / "state.sqlite"), audit=None) as unaudited:
        labels = [f"batch.jsonl:{n}" for n in range(1, len(requests) + 1)]
        one = unaudited.evaluate_many(requests, explain=True, sources=labels)
        two = unaudited.evaluate_many(requests, explain=True, sources=labels, workers=2)
        for request in requests:  # what the caller does with its requests afterwards does not matter
            if isinstance(request, dict):
                request["asset"] = "CHANGED"
        assert [tuple(d.trace) for d in two] == [tuple(d.trace) for d in one]
        assert [stripped(d) for d in two] == [stripped(d) for d in one]
        assert any("checks" in entry.facts for d in two for entry in d.trace)
        assert {e.file for d in two for e in d.errors} == {e.file for d in one for e in d.errors} != {None}


def test_metrics_count_as_in_one_process(folder: Path, engine: Engine) -> None:
    requests = mix(MIN_BATCH, seed=13)
    counted = []
    for workers in (1, 2):
        with Engine.from_policy(state=str(folder / "state.sqlite"), audit=None) as fresh:
            if workers == 2:
                fresh._workers = engine._workers  # the module's workers: no second start-up
            fresh.evaluate_many(requests, workers=workers)
            snapshot = fresh.metrics()
            fresh._workers = None
        del snapshot["latency_ms"]
        counted.append(snapshot)
    assert counted[0] == counted[1]
    assert counted[1]["decisions"] == MIN_BATCH and counted[1]["invalid"] > 0


class Appends:
    """An audit sink that counts its writes."""

    def __init__(self, sink: Any):
        self.sink, self.batches = sink, []

    def append(self, records: Any) -> None:
        self.batches.append(len(records))
        self.sink.append(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)


def test_a_batch_is_one_audit_write_and_documents_one_per_chunk(tmp_path: Path, folder: Path, engine: Engine) -> None:
    requests = mix(1100, seed=14)
    with open_audit(tmp_path / "audit.sqlite") as sink:
        counting = Appends(sink)
        with Engine.from_policy(state=str(folder / "state.sqlite"), audit=counting) as fresh:
            fresh._workers = engine._workers
            fresh.evaluate_many(requests, workers=2)
            documents = [RequestDocument(data=r, label=f"in.jsonl:{n}", line=n) for n, r in enumerate(requests, 1)]
            docs = list(fresh.evaluate_documents(documents, chunk_size=400, workers=2))
            fresh._workers = None
        assert counting.batches == [len(requests), 400, 400, len(requests) - 800]
        assert [doc.label for doc, _ in docs] == [doc.label for doc in documents]
        assert sink.verify().ok and sink.verify().count == 2 * len(requests)


def test_a_small_batch_is_decided_in_this_process(tmp_path: Path) -> None:
    with Engine.from_policy(audit=None) as fresh:
        decisions = fresh.evaluate_many(mix(MIN_BATCH - 1, seed=15), workers=2)
        assert len(decisions) == MIN_BATCH - 1
        assert fresh._workers is None or fresh._workers._pool is None


def test_a_call_decides_wholly_under_the_policy_in_force_when_it_starts(tmp_path: Path, folder: Path, engine: Engine) -> None:
    stricter = tmp_path / "stricter.yaml"
    text = (Path(engine.policy.source)).read_text()
    stricter.write_text(text.replace("min_days: 3", "min_days: 5"), encoding="utf-8")
    requests = [r for r in mix(1000, seed=16) if isinstance(r, dict)]
    documents = [RequestDocument(data=r, label=str(n), line=n) for n, r in enumerate(requests, 1)]
    with Engine.from_policy(state=str(folder / "state.sqlite"), audit=None) as fresh:
        fresh._workers = engine._workers
        first = fresh.compiled.ref
        decided = fresh.evaluate_documents(documents, chunk_size=100, workers=2)
        before = [next(decided) for _ in range(10)]
        fresh.reload(stricter)
        after = list(decided)
        assert {d.policy for _, d in before + after} == {first}
        again = fresh.evaluate_many(requests, workers=2)  # the next call: the new policy, in the workers too
        fresh._workers = None
        assert {d.policy for d in again} == {fresh.compiled.ref} != {first}
        assert [stripped(d) for d in again] == [stripped(d) for d in fresh.evaluate_many(requests)]


def test_a_worker_dying_mid_call_denies_the_whole_batch_and_the_next_call_starts_afresh(tmp_path: Path) -> None:
    requests: list[Any] = mix(1000, seed=17)
    requests[700] = Dies()
    with Engine.from_policy(audit=str(tmp_path / "audit.sqlite")) as fresh:
        decisions = fresh.evaluate_many(requests, workers=2)
        assert len(decisions) == len(requests)
        assert not any(d.approved for d in decisions)
        assert {issue.code for d in decisions for issue in d.errors} == {"engine-failure"}
        assert "worker processes: a worker process died" in decisions[0].reason
        assert fresh.audit.verify().count == len(requests)
        assert fresh.metrics()["errors"] == len(requests)
        requests[700] = mix(1, seed=1)[0]
        healthy = fresh.evaluate_many(requests, workers=2)
        assert [stripped(d) for d in healthy] == [stripped(d) for d in fresh.evaluate_many(requests)]


def test_a_worker_killed_between_calls_denies_not_approves(tmp_path: Path) -> None:
    requests = [r for r in mix(1000, seed=18) if isinstance(r, dict)]
    with Engine.from_policy(audit=None) as fresh:
        assert any(d.approved for d in fresh.evaluate_many(requests, workers=2))
        for pid in fresh._workers._pool.pids():
            os.kill(pid, signal.SIGKILL)
        decisions = fresh.evaluate_many(requests, workers=2)
        assert not any(d.approved for d in decisions)
        assert {issue.code for d in decisions for issue in d.errors} == {"engine-failure"}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"state": MemoryStateStore()}, "the state store `MemoryStateStore` cannot be opened again in a worker process"),
        ({}, "`workers` must be a whole number of at least 1, got `0`"),
    ],
)
def test_what_workers_cannot_do_is_refused_before_deciding(options: dict[str, Any], message: str) -> None:
    with Engine.from_policy(audit=None, **options) as fresh:
        with pytest.raises(UsageError, match=message):
            fresh.evaluate_many(mix(5, seed=19), workers=0 if not options else 2)
        assert fresh.metrics()["decisions"] == 0


def test_protect_evaluate_workers_prints_and_records_as_one_process(tmp_path: Path, folder: Path) -> None:
    lines = [line for r in mix(700, seed=20) if (line := as_json(r))]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join([*lines[:300], "{not json", *lines[300:]]) + "\n", encoding="utf-8")
    outputs = []
    for workers in ("1", "2"):
        audit = tmp_path / f"audit-{workers}.sqlite"
        state = str(folder / "state.sqlite")
        args = ["evaluate", "--format", "json", "--audit", str(audit), "--state", state, "--workers", workers, str(batch)]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 3  # the bad line
        outputs.append([json.loads(line) for line in result.output.splitlines()])
        verified = CliRunner().invoke(cli, ["audit", "verify", "--audit", str(audit)], catch_exceptions=False)
        assert verified.exit_code == 0
    for decisions in outputs:
        for decision in decisions:
            for key in PER_CALL:
                decision.pop(key)
    assert outputs[0] == outputs[1] and len(outputs[1]) == len(lines) + 1
    assert outputs[1][300]["line"] == 301 and outputs[1][300]["errors"]


def counter() -> Any:
    numbers = itertools.count()
    return lambda: f"id{next(numbers)}"


def test_ids_come_from_the_engines_new_id_in_input_order(folder: Path, engine: Engine) -> None:
    requests = [r for r in mix(MIN_BATCH + 50, seed=21) if as_json(r)]
    decided = []
    for workers in (1, 2):
        with Engine.from_policy(state=str(folder / "state.sqlite"), audit=None, new_id=counter()) as fresh:
            fresh._workers = engine._workers
            decided.append([d.to_dict() for d in fresh.evaluate_many(requests, workers=workers)])
            fresh._workers = None
    for decisions in decided:
        for decision in decisions:
            decision.pop("decision_time_ms")
    assert decided[0] == decided[1]
    assert [d["decision_id"] for d in decided[1]] == [f"id{n}" for n in range(1, len(requests) + 1)]
    assert {d["trace_id"] for d in decided[1]} == {"id0"}


def test_the_workers_stay_between_calls_until_close() -> None:
    requests = mix(MIN_BATCH, seed=22)
    with Engine.from_policy(audit=None) as fresh:
        fresh.evaluate_many(requests, workers=2)
        pool = fresh._workers._pool
        pids = pool.pids()
        fresh.evaluate_many(requests, workers=2)
        assert fresh._workers._pool is pool and pool.pids() == pids and len(pids) == 1  # and this process
    for pid in pids:  # stopped and reaped by close()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
