"""`protect diff OLD NEW` with a corpus: exactly the decisions that change, grouped by cause.

The expected changes are found independently: each request decided under each policy by its
own plain engine (no audit, no store; an audited request gets its recorded state in its
`state` field), then compared field by field here.
"""

from __future__ import annotations

import io
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from protection_rules import Engine
from protection_rules.audit import RecordFilter, open_audit
from protection_rules.cli import cli
from protection_rules.cli.progress import progress_bar
from protection_rules.errors import EngineFailure
from protection_rules.parallel import chunked, ordered_map
from protection_rules.resources import schema
from protection_rules.state import SqliteStateStore
from protection_rules.timestamps import MICROS_PER_DAY, format_instant, parse_instant

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = ROOT / "policies" / "default.yaml"
DEFAULT = DEFAULT_PATH.read_text(encoding="utf-8")
NOW = parse_instant("2026-03-12T09:00:00Z")
ASSETS = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "INTC"]
HOLDING = {"asset": "AAPL", "action": "close", "current_date": "2026-03-12T09:00:00Z"}


def policy(tmp_path: Path, name: str, *edits: tuple[str, str]) -> Path:
    text = DEFAULT
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def ago(rng: random.Random, days: int) -> str:
    return format_instant(NOW - rng.randrange(0, days * MICROS_PER_DAY))


def requests(count: int, seed: int = 11, *, with_state: float = 0.3) -> list[dict]:
    """Closes, decreases, opens and increases around the holding and whipsaw boundaries."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        request: dict = {
            "request_id": f"r{index}",
            "asset": rng.choice(ASSETS),
            "action": rng.choice(["open", "close", "increase", "decrease"]),
            "current_date": format_instant(NOW),
        }
        if rng.random() < 0.6:
            request["position_entry_date"] = ago(rng, 8)
        if rng.random() < 0.5:
            request["current_score"] = round(rng.random(), 2)
        if rng.random() < 0.25:
            request["regime"] = {
                "changed": True,
                "severity": rng.choice(["normal", "high", "critical"]),
                "change_date": ago(rng, 9),
            }
        if rng.random() < with_state:
            stamps = sorted(NOW - rng.randrange(0, 16 * MICROS_PER_DAY) for _ in range(rng.randrange(1, 4)))
            request["state"] = {"events": [{"type": rng.choice(["open", "close"]), "at": format_instant(t)} for t in stamps]}
        out.append(request)
    return out


def category(old, new) -> str | None:
    """How a decision changed, by the issue's definition, written out here on its own."""
    if old.approved and not new.approved:
        return "approve-to-deny"
    if new.approved and not old.approved:
        return "deny-to-approve"
    if not old.approved and old.blocking_systems != new.blocking_systems:
        return "blocking-systems"
    if old.approved and not old.override_applied and new.override_applied:
        return "override-applied"
    if old.approved and old.override_applied and not new.override_applied:
        return "override-removed"
    return None


def expected_changes(old_path: Path, new_path: Path, labelled: list[tuple[str, dict]]) -> dict[str, str]:
    """label -> category, for every request whose decision changes, each policy on its own."""
    old, new = Engine.from_policy(old_path, audit=None), Engine.from_policy(new_path, audit=None)
    found = {}
    for label, request in labelled:  # one at a time: the test process stays small (see test_input)
        a, b = old.evaluate(request), new.evaluate(request)
        assert not a.errors and not b.errors
        if (kind := category(a, b)) is not None:
            found[label] = kind
    return found


def reported_changes(report: dict) -> dict[str, str]:
    return {example["source"]: group["change"] for group in report["impact"]["groups"] for example in group["examples"]}


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# ----------------------------------------------------------------- done when: a requests corpus


@pytest.fixture(scope="module")
def holding_change(tmp_path_factory):
    """A 5,000-request corpus (plus one invalid and one unparsable line), min_days 3 and 5."""
    folder = tmp_path_factory.mktemp("holding")
    corpus = requests(5000)
    lines = [json.dumps(r) for r in corpus]
    lines.insert(100, json.dumps({**HOLDING, "action": "sell"}))  # invalid: denies under any policy
    lines.insert(200, "{not json")
    path = folder / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    new = policy(folder, "new.yaml", ("min_days: 3", "min_days: 5"))
    valid = [(f"{path}:{number}", json.loads(line)) for number, line in enumerate(lines, start=1) if number not in (101, 201)]
    assert len(valid) == 5000
    return path, new, expected_changes(DEFAULT_PATH, new, valid)


def every_change(new: Path, *corpus: str) -> dict:
    """The JSON report, every changed decision an example, checked against its schema; under
    `--fail-on any` the command exits 1."""
    args = ["diff", str(DEFAULT_PATH), str(new), *corpus, "--fail-on", "any", "--format", "json", "--examples", "100000"]
    result = run(*args, "--workers", "2")
    assert result.exit_code == 1
    report = json.loads(result.output)
    jsonschema.validate(report, schema("diff-report"))
    return report


def test_diff_reports_exactly_the_decisions_that_change(holding_change):
    corpus, new, expected = holding_change
    report = every_change(new, "--requests", str(corpus))
    impact = report["impact"]
    assert impact["decided"] == 5000
    assert impact["corpora"][0]["skipped"] == {"invalid-request": 1, "unparsed-request": 1}
    assert reported_changes(report) == expected
    assert impact["counts"] == {
        kind: Counter(expected.values())[kind]
        for kind in ("approve-to-deny", "deny-to-approve", "blocking-systems", "override-applied", "override-removed")
    }
    assert impact["changed"] == len(expected)
    # a longer minimum holds more back: some approvals flip, none the other way
    assert impact["counts"]["approve-to-deny"] > 100 and impact["counts"]["deny-to-approve"] == 0
    assert {(p["name"], p["old"], p["new"]) for g in impact["groups"] for p in g["protections"]} <= {
        ("holding_period", "pass", "block"),
        ("holding_period", "pass", "overridden"),
    }
    assert all([p["text"] for p in g["parameters"]] == ["protections.holding_period.min_days: 3 -> 5"] for g in impact["groups"])


def test_diff_text_names_the_parameter_and_a_few_examples(holding_change):
    corpus, new, expected = holding_change
    result = run("diff", str(DEFAULT_PATH), str(new), "--requests", str(corpus), "--fail-on", "any", "--workers", "1")
    assert result.exit_code == 1
    flips = Counter(expected.values())["approve-to-deny"]
    assert f"\napprove-to-deny: {flips}  (holding_period pass -> block)\n" in result.output
    assert "  because protections.holding_period.min_days: 3 -> 5\n" in result.output
    section = result.output.split("\napprove-to-deny:", 1)[1].split("\n\n", 1)[0]
    shown = [line for line in section.splitlines() if line.startswith(f"  {corpus}:")]
    assert len(shown) == 3  # examples per group, by default
    assert all(line.split()[0] in expected and "approve -> deny (holding_period)" in line for line in shown)
    assert result.output.rstrip().endswith("failed: --fail-on any")


# ------------------------------------------------------------------- done when: an audit replay


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """An audit trail written by the engine with a state store: events recorded, grace periods
    started and committed, overrides used, requests with and without their own state."""
    folder = tmp_path_factory.mktemp("audited")
    store = SqliteStateStore(folder / "state.sqlite")
    sink = open_audit(folder / "audit.sqlite")
    engine = Engine.from_policy(DEFAULT_PATH, state=store, audit=sink, clock=lambda: NOW)
    rng = random.Random(5)
    for asset in ASSETS:
        for _ in range(rng.randrange(1, 4)):
            engine.record_execution(asset, rng.choice(["open", "close"]), NOW - rng.randrange(0, 10 * MICROS_PER_DAY))
    corpus = requests(5000, seed=12, with_state=0.2)
    for start in range(0, len(corpus), 500):
        for decision in engine.evaluate_many(corpus[start : start + 500]):
            if decision.state_changes and rng.random() < 0.5:
                engine.commit(decision)  # grace starts and override cooldowns reach the store
    engine.evaluate({**HOLDING, "action": "sell"})  # an invalid request is recorded too
    sink.close()
    store.close()
    return folder / "audit.sqlite"


def recorded_requests(audit_path: Path) -> list[tuple[str, dict]]:
    """Each valid recorded request with the state it was decided with put in its `state`."""
    out = []
    for record in _records(audit_path):
        if record["decision_record"].get("errors"):
            continue
        request = dict(record["request"])
        if "state" not in request and record["state"] is not None:
            request["state"] = record["state"]
        out.append((f"{audit_path}#{record['sequence']}", request))
    return out


def test_replay_diff_reproduces_deciding_the_recorded_requests(audited, tmp_path):
    labelled = recorded_requests(audited)
    assert len(labelled) == 5000
    sources = Counter(r["decision_record"]["state_source"] for r in _records(audited))
    assert sources["store"] > 1000 and sources["request"] > 500  # both kinds of state are replayed
    new = policy(tmp_path, "new.yaml", ("min_days: 3", "min_days: 5"))
    expected = expected_changes(DEFAULT_PATH, new, labelled)
    report = every_change(new, "--replay", str(audited))
    assert report["impact"]["decided"] == 5000
    assert report["impact"]["corpora"][0]["skipped"] == {"invalid-request": 1}
    assert reported_changes(report) == expected
    assert report["impact"]["changed"] == len(expected) > 50


def _records(audit_path: Path) -> Iterator[dict]:
    with open_audit(audit_path, mode="read") as log:
        yield from log.query(RecordFilter(kind="decision"))


def test_several_corpora_at_once_add_up(tmp_path):
    new = policy(tmp_path, "new.yaml", ("min_days: 3", "min_days: 5"))
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in requests(200, seed=1)))
    second.write_text("".join(json.dumps(r) + "\n" for r in requests(300, seed=2)))
    log = tmp_path / "audit.jsonl"
    with open_audit(log) as sink:
        Engine.from_policy(DEFAULT_PATH, audit=sink).evaluate_many(requests(100, seed=3))

    def impact(*corpora: str) -> dict:
        args = ["diff", str(DEFAULT_PATH), str(new), *corpora, "--format", "json", "--workers", "1"]
        return json.loads(run(*args).output)["impact"]

    alone = [impact("--requests", str(first)), impact("--requests", str(second)), impact("--replay", str(log))]
    together = impact("--requests", str(first), "--replay", str(log), "--requests", str(second))
    assert [(c["kind"], c["decided"]) for c in together["corpora"]] == [("requests", 200), ("requests", 300), ("replay", 100)]
    assert together["changed"] == sum(a["changed"] for a in alone) > 0
    assert together["counts"] == {k: sum(a["counts"][k] for a in alone) for k in together["counts"]}


@pytest.mark.parametrize(("engine_version", "changed"), [(None, 1), ("0.0.1", 0)])
def test_a_record_made_under_old_by_this_engine_is_not_decided_again(tmp_path, engine_version, changed):
    """Its recorded decision is OLD's: shown here by a record edited to approve a denial, which
    the report takes as it is, unless the record comes from another engine version."""
    log = tmp_path / "audit.jsonl"
    with open_audit(log) as sink:
        Engine.from_policy(DEFAULT_PATH, audit=sink).evaluate({**HOLDING, "position_entry_date": "2026-03-11T09:00:00Z"})
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["decision_record"]["blocking_systems"] == ["holding_period"]
    record["decision_record"].update(approved=True, decision="approve", blocking_systems=[])
    record["decision_record"]["trace"][3]["status"] = "pass"
    if engine_version:
        record["decision_record"]["engine_version"] = engine_version
    log.write_text(json.dumps(record) + "\n")
    report = json.loads(run("diff", str(DEFAULT_PATH), str(DEFAULT_PATH), "--replay", str(log), "--format", "json").output)
    assert report["impact"]["changed"] == changed


# ------------------------------------------------------------------------------- gates and forms


@pytest.mark.parametrize(
    ("edits", "fail_on", "exit_code"),
    [
        ([("min_days: 3", "min_days: 5")], "any", 1),
        ([("min_days: 3", "min_days: 5")], "approve-to-deny", 1),
        ([("min_days: 3", "min_days: 5")], "deny-to-approve", 0),
        ([("min_days: 3", "min_days: 1")], "deny-to-approve", 1),
        ([("min_days: 3", "min_days: 1")], "approve-to-deny", 0),
        ([("# Priority is position", "# Priority: position")], "any", 0),  # same content
    ],
)
def test_fail_on_gates_on_the_changes_found(tmp_path, edits, fail_on, exit_code):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in requests(300)))
    new = policy(tmp_path, "new.yaml", *edits)
    result = run("diff", str(DEFAULT_PATH), str(new), "--requests", str(corpus), "--fail-on", fail_on, "--workers", "1")
    assert result.exit_code == exit_code
    # without a gate, changes never fail the command
    assert run("diff", str(DEFAULT_PATH), str(new), "--requests", str(corpus), "--workers", "1").exit_code == 0


def test_override_changes_are_caused_by_the_bypass_list(tmp_path):
    close = {
        **HOLDING,
        "position_entry_date": "2026-03-11T09:00:00Z",
        "regime": {"changed": True, "severity": "high", "change_date": "2026-03-11T09:00:00Z"},
    }
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps(close) + "\n")
    new = policy(tmp_path, "new.yaml", ("high: [grace_period, holding_period]", "high: [grace_period]"))
    report = json.loads(run("diff", str(DEFAULT_PATH), str(new), "--requests", str(corpus), "--format", "json").output)
    (group,) = report["impact"]["groups"]
    assert group["change"] == "approve-to-deny"
    assert group["protections"] == [{"name": "holding_period", "old": "overridden", "new": "block"}]
    assert [p["text"] for p in group["parameters"]] == [
        'protections.regime_override.bypass.high: ["grace_period", "holding_period"] -> ["grace_period"]'
    ]


def test_one_worker_and_two_give_the_same_report(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in requests(1200, seed=3)))  # 5 chunks
    new = policy(tmp_path, "new.yaml", ("max_cycles: 1", "max_cycles: 2"), ("min_days: 3", "min_days: 2"))
    args = ["diff", str(DEFAULT_PATH), str(new), "--requests", str(corpus), "--format", "json", "--examples", "100000"]
    one, two = run(*args, "--workers", "1"), run(*args, "--workers", "2")
    assert one.exit_code == two.exit_code == 0
    assert json.loads(one.output) == json.loads(two.output)
    assert json.loads(one.output)["impact"]["changed"] > 0


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "shown"), [(io.StringIO, False), (Terminal, True)])
def test_a_progress_bar_only_on_a_terminal(monkeypatch, stream, shown):
    err = stream()
    monkeypatch.setattr(sys, "stderr", err)
    with progress_bar("deciding") as advance:
        assert (advance is not None) is shown
        if advance is not None:
            advance(250)
    assert ("deciding" in err.getvalue() and "250" in err.getvalue()) is shown


def test_the_report_alone_reaches_stdout_and_nothing_stderr_off_a_terminal(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in requests(20)))
    result = run("diff", str(DEFAULT_PATH), str(DEFAULT_PATH), "--requests", str(corpus), "--format", "json")
    assert json.loads(result.stdout)["impact"]["decided"] == 20
    assert result.stderr == ""


def test_requests_may_come_from_standard_input(tmp_path):
    new = policy(tmp_path, "new.yaml", ("min_days: 3", "min_days: 5"))
    closing = {**HOLDING, "position_entry_date": "2026-03-08T09:00:00Z"}  # held 4 days: 3 pass, 5 block
    lines = json.dumps(closing) + "\n" + json.dumps({**closing, "action": "open"}) + "\n"
    result = CliRunner().invoke(cli, ["diff", str(DEFAULT_PATH), str(new), "--requests", "-", "--format", "json"], input=lines)
    impact = json.loads(result.stdout)["impact"]
    assert (impact["decided"], impact["counts"]["approve-to-deny"], impact["changed"]) == (2, 1, 1)
    assert impact["groups"][0]["examples"][0]["source"] == "<stdin>:1"


def test_the_requests_of_case_files_are_a_corpus(tmp_path):
    from protection_rules.cases import load_case_files

    new = policy(tmp_path, "new.yaml", ("min_days: 3", "min_days: 5"))
    cases = [case for file in load_case_files([ROOT / "tests" / "cases"]) for case in file.cases]
    plain = [(f"{case.location} {case.name}", case.request) for case in cases if case.policy_overrides is None]
    checker = Engine.from_policy(audit=None)  # requests a case expects to be invalid change nothing
    expected = expected_changes(DEFAULT_PATH, new, [(label, r) for label, r in plain if not checker.evaluate(r).errors])
    assert expected  # the shipped cases hold closes within 3..5 days of entry
    report = every_change(new, "--cases", str(ROOT / "tests" / "cases"))
    assert reported_changes(report) == expected
    (corpus,) = report["impact"]["corpora"]
    assert corpus["skipped"]["case-with-policy-overrides"] == len(cases) - len(plain)


@pytest.mark.parametrize("option", ["--requests", "--replay"])
def test_a_missing_corpus_is_a_usage_error(tmp_path, option):
    result = run("diff", str(DEFAULT_PATH), str(DEFAULT_PATH), option, str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2
    assert "nope.jsonl: no such file" in result.output


def test_a_broken_audit_trail_is_exit_4(tmp_path):
    broken = tmp_path / "audit.sqlite"
    broken.write_bytes(b"not a database at all" * 100)
    assert run("diff", str(DEFAULT_PATH), str(DEFAULT_PATH), "--replay", str(broken)).exit_code == 4


# ------------------------------------------------------------------------------- the worker pool


def doubled_with_pid(state, chunk):
    return [(item * 2, os.getpid()) for item in chunk]


def dies(state, chunk):
    os._exit(3)


def nothing():
    return None


def test_workers_keep_input_order_and_run_in_other_processes():
    results = list(ordered_map(doubled_with_pid, chunked(range(2000), 50), setup=nothing, workers=2))
    values = [value for _, out in results for value, _ in out]
    assert values == [2 * n for n in range(2000)]
    assert os.getpid() not in {pid for _, out in results for _, pid in out}


def test_a_dead_worker_fails_closed_never_a_partial_result():
    with pytest.raises(EngineFailure, match="a worker process died") as raised:
        list(ordered_map(dies, chunked(range(100), 10), setup=nothing, workers=2))
    assert raised.value.exit_code == 4


def test_one_chunk_runs_in_this_process():
    ((_, out),) = ordered_map(doubled_with_pid, [[1, 2]], setup=nothing, workers=4)
    assert out == [(2, os.getpid()), (4, os.getpid())]


def test_progress_hears_of_every_item():
    seen = []
    list(ordered_map(doubled_with_pid, chunked(range(10), 4), setup=nothing, workers=1, progress=seen.append))
    assert seen == [4, 4, 2]
