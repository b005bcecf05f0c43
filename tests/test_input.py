"""Input that must not sink a run (issue 7, items 1-5), through the `protect` command.

Batches stream line by line with a per-line limit, every non-blank line gets exactly one
decision carrying its line number, nothing is read past a limit plus one chunk, a file the
command must read that does not exist is a usage error, and messages speak the user's language.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from itertools import count
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from protection_rules.cli import cli
from protection_rules.engine import Engine
from protection_rules.loading import RequestDocument, SourceMap
from protection_rules.resources import schema
from protection_rules.validation import schema_issues

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "requests" / "plain_open.json"
PROTECT = Path(sys.executable).parent / "protect"
LIMIT = 1_000_000  # the documented per-request limit in bytes (README "Requests")

OPEN = {"asset": "AMZN", "action": "open", "current_date": "2026-03-12T09:00:00Z"}
HOLDING = {
    "asset": "AAPL",
    "action": "close",
    "current_date": "2026-03-12T07:00:00Z",
    "position_entry_date": "2026-03-10T09:00:00Z",
}


def run(*args: str, input: str | bytes | None = None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines()]


# ------------------------------------------------------------------ 1. batches of any size


def test_a_6000_request_jsonl_prints_6000_json_lines_in_input_order(tmp_path):
    batch = tmp_path / "batch.jsonl"
    reason = "quarterly rebalance: " + "x" * 80
    requests = [{**(HOLDING if n % 3 == 0 else OPEN), "request_id": f"r{n}", "reason": reason} for n in range(6000)]
    batch.write_text("".join(json.dumps(r) + "\n" for r in requests))
    assert batch.stat().st_size > LIMIT  # the file is over the limit, each line far below it
    audit = tmp_path / "audit.jsonl"
    result = run("evaluate", "--format", "json", "--audit", str(audit), str(batch))
    decisions = json_lines(result.stdout)
    assert len(decisions) == 6000
    assert [d["request_id"] for d in decisions] == [f"r{n}" for n in range(6000)]
    assert [d["line"] for d in decisions] == list(range(1, 6001))
    assert [d["decision"] for d in decisions[:3]] == ["deny", "approve", "approve"]
    assert result.exit_code == 1
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["decision_id"] for r in records if "decision_id" in r] == [d["decision_id"] for d in decisions]
    assert {d["trace_id"] for d in decisions} == {decisions[0]["trace_id"]}


def test_a_single_json_request_keeps_the_document_limit(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({**OPEN, "reason": "x" * LIMIT}))
    result = run("evaluate", "--format", "json", "--no-audit", str(path))
    assert result.exit_code == 3
    decision = json.loads(result.stdout)
    assert decision["errors"][0]["code"] == "file-too-large"
    assert "line" not in decision  # one document: no line numbers


class SpySink:
    """An audit sink that remembers what was appended, batch by batch."""

    path = "spy"

    def __init__(self):
        self.batches: list[list[dict]] = []

    def append(self, records):
        self.batches.append(list(records))

    def close(self):
        pass

    def recorded(self) -> int:
        return sum(len(batch) for batch in self.batches)


def test_documents_are_recorded_chunk_by_chunk_before_they_are_returned():
    sink = SpySink()
    engine = Engine.from_policy(audit=sink)
    documents = (RequestDocument(f"in:{n}", {**OPEN, "request_id": str(n)}, line=n) for n in range(1, 8))
    seen = []
    for document, decision in engine.evaluate_documents(documents, chunk_size=3):
        # nothing is handed out before its chunk is in the audit trail
        assert sink.recorded() >= document.line
        assert decision.request_id == str(document.line)
        seen.append(decision)
    assert [len(batch) for batch in sink.batches] == [3, 3, 1]
    assert {d.trace_id for d in seen} == {seen[0].trace_id}
    assert [r["decision_id"] for batch in sink.batches for r in batch] == [d.decision_id for d in seen]


def test_evaluating_documents_reads_only_one_chunk_ahead():
    def endless():
        for n in count(1):
            assert n <= 4, "read past the chunk being decided"
            yield RequestDocument(f"in:{n}", OPEN, line=n)

    decisions = Engine.from_policy(audit=None).evaluate_documents(endless(), chunk_size=2)
    assert [next(decisions)[1].approved for _ in range(4)] == [True] * 4


# ------------------------------------------------------------------ 2. bounded reading


# Runs the command in a child that reports its own peak RSS on the last line of stderr. The
# child gets a 2 GB address-space limit, so a reader that does not stop fails fast with
# MemoryError instead of eating the machine.
MEASURED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from protection_rules.cli import cli
try:
    cli.main(args=sys.argv[1:], prog_name="protect")
finally:
    # VmHWM, this process's own peak: ru_maxrss also keeps the peak of the test runner that
    # started it (Linux carries it across the vfork+exec), so it grew with the tests run before
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    sys.stderr.write(f"\\npeak-rss-kb {peak}\\n")
"""


def measured(args: list[str], *, stdin) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run `protect ARGS` in a child: its result, wall seconds and peak RSS in MB."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", MEASURED, *args], stdin=stdin, capture_output=True, timeout=120, check=False)
    elapsed = time.monotonic() - started
    *rest, last = done.stderr.decode().rstrip("\n").split("\n")
    assert last.startswith("peak-rss-kb "), done.stderr.decode()[-2000:]
    done.stderr = "\n".join(rest).encode()
    return done, elapsed, int(last.split()[1]) / 1024


@pytest.mark.parametrize(
    "args",
    [["evaluate", "--no-audit", "--format", "json", "-"], ["validate", "/dev/zero"], ["evaluate", "--no-audit", "/dev/zero"]],
    ids=["evaluate-stdin", "validate-file", "evaluate-file"],
)
def test_endless_zeros_end_in_seconds_with_one_clear_error(args):
    with open("/dev/zero", "rb") as zeros:
        done, elapsed, peak_mb = measured(args, stdin=zeros)
    assert elapsed < 20
    assert peak_mb < 300
    assert b"Traceback" not in done.stderr
    out = done.stdout.decode()
    assert "more than 1000000 bytes" in out
    assert done.returncode == (1 if args[0] == "validate" else 3)


def test_garbage_after_a_good_line_is_one_error_and_the_stream_stops(tmp_path):
    # JSON Lines on stdin: a good request, then a line of zeros that never ends
    script = (
        "import sys; sys.stdout.buffer.write(" + repr(json.dumps(OPEN).encode() + b"\n") + ")\n"
        "chunk = bytes(1 << 20)\n"
        "try:\n"
        "    while True: sys.stdout.buffer.write(chunk)\n"
        "except BrokenPipeError: pass\n"
    )
    feeder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        done, elapsed, peak_mb = measured(["evaluate", "--no-audit", "--format", "json", "-"], stdin=feeder.stdout)
    finally:
        feeder.stdout.close()
        feeder.kill()
        feeder.wait()
    first, second = json_lines(done.stdout.decode())
    assert (first["line"], first["decision"]) == (1, "approve")
    assert (second["line"], second["errors"][0]["code"]) == (2, "input-truncated")
    assert done.returncode == 3
    assert elapsed < 20 and peak_mb < 300


# ------------------------------------------------------------------ 3. every bad line gets its own decision

GOOD = json.dumps(OPEN).encode()

BAD_LINES = [
    # (line bytes, expected error code, expected column or None)
    (b'{"asset": "AM\x00ZN", "action": "open"}', "file-encoding", 14),
    (b"\x00\x00\x00", "file-encoding", 1),
    (b'{"asset": "caf\xe9", "action": "open"}', "file-encoding", 15),
    (b'{"asset": "AMZN", "reason": "' + b"x" * LIMIT + b'"}', "line-too-large", None),
    (b"{not json", "json-syntax", 2),
    (b"[1, 2]", "schema-type", None),
    (b'"a string"', "schema-type", None),
    (b'{"asset": "AMZN"}', "schema-required", None),
    (b'{"asset": "AMZN", "action": "open", "current_date": "2026-03-12", "current_size": 1e400}', "number-too-large", None),
]


@pytest.mark.parametrize(("line", "code", "column"), BAD_LINES, ids=lambda v: v if isinstance(v, str) else None)
def test_a_bad_line_gets_its_own_decision_and_the_batch_goes_on(tmp_path, line, code, column):
    path = tmp_path / "batch.jsonl"
    # a good line, a blank one, the bad one (line 3), a whitespace-only one, a good CRLF one
    path.write_bytes(GOOD + b"\n\n" + line + b"\n \t \n" + GOOD + b"\r\n")
    result = run("evaluate", "--format", "json", "--no-audit", str(path))
    decisions = json_lines(result.stdout)
    assert [d["line"] for d in decisions] == [1, 3, 5]
    assert [d["decision"] for d in decisions] == ["approve", "deny", "approve"]
    errors = decisions[1]["errors"]
    assert {error["code"] for error in errors} == {code}
    # a reading or parsing error names the file and line; request validation names `file:line`
    assert {(error["file"], error["line"]) for error in errors} <= {(str(path), 3), (f"{path}:3", None)}
    if column is not None:
        assert errors[0]["column"] == column
    assert decisions[1]["blocking_systems"] == ["error"]
    assert result.exit_code == 3


def test_text_output_labels_every_decision_with_its_line(tmp_path):
    path = tmp_path / "batch.jsonl"
    path.write_bytes(b"\n" + GOOD + b"\n\x00\n")
    result = run("evaluate", "--no-audit", str(path))
    verdicts = [line for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert [v.split(": ")[0] for v in verdicts] == [f"{path}:2", f"{path}:3"]


def test_line_numbers_are_in_the_decision_schema(tmp_path):
    path = tmp_path / "batch.jsonl"
    path.write_bytes(GOOD + b"\n{bad\n")
    validator = jsonschema.Draft202012Validator(schema("decision"))
    decisions = json_lines(run("evaluate", "--format", "json", "--no-audit", str(path)).stdout)
    assert [d["line"] for d in decisions] == [1, 2]
    for decision in decisions:
        validator.validate(decision)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**decision, "line": 0})


def test_decisions_with_line_numbers_can_be_committed(tmp_path):
    path = tmp_path / "batch.jsonl"
    path.write_text(json.dumps({**OPEN, "current_score": 0.1, "action": "close"}) + "\n")
    decisions = tmp_path / "decisions.jsonl"
    trail = str(tmp_path / "audit.sqlite")
    decisions.write_text(run("evaluate", "--format", "json", "--audit", trail, str(path)).stdout)
    assert json.loads(decisions.read_text())["line"] == 1
    result = run("commit", "--state", str(tmp_path / "state.sqlite"), "--audit", trail, str(decisions))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["applied"] is True


# ------------------------------------------------------------------ 4. closed stdin, missing files


CLOSED_STDIN = [
    # started with standard input closed: Python has no sys.stdin at all
    ["sh", "-c", f'exec "{PROTECT}" "$@" <&-', "sh"],
    # standard input closed after start: sys.stdin is there, reading it fails (EBADF)
    [sys.executable, "-c", "import os; os.close(0); from protection_rules.cli import main; main()"],
]


@pytest.mark.parametrize("command", [["evaluate", "--no-audit", "-"], ["commit", "-"]], ids=" ".join)
@pytest.mark.parametrize("start", CLOSED_STDIN, ids=["closed-at-start", "closed-after-start"])
def test_closed_stdin_is_a_usage_error_in_one_line(start, command, tmp_path):
    env = {**os.environ, "PROTECT_STATE": str(tmp_path / "state.sqlite")}
    done = subprocess.run([*start, *command], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["protect: standard input is closed"]
    assert done.stdout == ""


MISSING_FILE_COMMANDS = [
    ["evaluate", "{missing}"],
    ["evaluate", "--no-audit", "--policy", "{missing}", str(EXAMPLE)],
    ["evaluate", "--no-audit", "--state", "{missing}", str(EXAMPLE)],
    ["validate", "{missing}"],
    ["validate", str(ROOT / "policies" / "default.yaml"), "{missing}"],
    ["commit", "{missing}"],
    ["state", "show", "AAPL", "--state", "{missing}"],
    ["state", "core", "add", "AAPL", "--policy", "{missing}", "--state", "{tmp}/state.sqlite"],
    ["audit", "verify", "--audit", "{missing}"],
    ["audit", "query", "--audit", "{missing}"],
    ["audit", "stats", "--audit", "{missing}"],
]


@pytest.mark.parametrize("args", MISSING_FILE_COMMANDS, ids=" ".join)
def test_a_file_the_command_must_read_that_does_not_exist_is_a_usage_error(tmp_path, args):
    missing = tmp_path / "nope" / "missing.file"
    result = run(*[a.format(missing=missing, tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"protect: {missing}: no such file"]
    assert not missing.parent.exists()  # nothing was created on the way


# ------------------------------------------------------------------ 5. messages in the user's terms


def request_error(request_text: str) -> dict:
    result = run("evaluate", "--format", "json", "--no-audit", "-", input=request_text)
    return json.loads(result.stdout)["errors"][0]


MESSAGES = [
    # (request JSON text, error path, the message must contain, and must not contain)
    (
        '{"asset": "A", "action": "open", "current_date": "2026-03-12", "current_size": 1e400}',
        "$.current_size",
        "`1e400` is too large: numbers must be within +/-1e15",
        "inf",
    ),
    (
        '{"asset": "A", "action": "open", "current_date": "2026-03-12", "metadata": {"x": [-1.5e+999]}}',
        "$.metadata.x[0]",
        "`-1.5e+999` is too large",
        "inf",
    ),
    (
        '{"asset": "A", "action": "open", "current_date": "2026-03-12", "active_positions": ' + "7" * 5000 + "}",
        "$.active_positions",
        "an integer of 5000 digits is too large",
        "sys.",
    ),
    (
        '{"asset": "A", "action": "open", "current_date": "2026-03-12", "regime": {"changed": true, "severity": "extreme"}}',
        "$.regime.severity",
        '`"extreme"` is not one of `"normal"`, `"high"`, `"critical"`, `null`',
        "None",
    ),
    ('{"asset": "A", "action": null, "current_date": "2026-03-12"}', "$.action", "`null`", "None"),
    ('{"asset": "A", "action": "open", "current_date": true}', "$.current_date", "got `true` (boolean)", "True"),
    (
        '{"asset": "A", "action": "open", "current_date": "yesterday"}',
        "$.current_date",
        "`yesterday` is not a valid `current_date`: write an ISO-8601 timestamp such as `2026-03-10T09:00:00Z`",
        "('now')",
    ),
]


@pytest.mark.parametrize(("text", "path", "wanted", "unwanted"), MESSAGES, ids=lambda v: v[:40] if isinstance(v, str) else None)
def test_messages_name_what_the_user_wrote(text, path, wanted, unwanted):
    error = request_error(text)
    assert error["path"] == path
    assert wanted in error["message"]
    assert unwanted not in error["message"]


def test_a_timestamp_message_names_every_accepted_form():
    message = request_error('{"asset": "A", "action": "open", "current_date": "12/03/2026"}')["message"]
    for form in ("`2026-03-10T09:00:00Z`", "`+01:00`", "`2026-03-10`"):
        assert form in message


def test_now_option_says_what_is_accepted():
    result = run("evaluate", "--no-audit", "--now", "noon", str(EXAMPLE))
    assert result.exit_code == 2
    assert "`2026-03-10T09:00:00Z`" in result.stderr and "`+01:00`" in result.stderr


def test_a_huge_integer_in_a_policy_is_too_large_not_a_python_hint(tmp_path):
    policy = tmp_path / "p.yaml"
    text = (ROOT / "policies" / "default.yaml").read_text()
    policy.write_text(text.replace("    min_days: 3\n", "    min_days: " + "9" * 5000 + "\n"))
    result = run("validate", str(policy))
    assert result.exit_code == 1
    assert "an integer of 5000 digits is too large" in result.stdout
    assert "sys." not in result.stdout


def test_an_empty_decision_reports_each_missing_field_once():
    required = schema("decision")["required"]
    issues = schema_issues("decision", {}, SourceMap("d.json"))
    assert sorted(issue.path for issue in issues) == sorted(f"$.{name}" for name in required)


def test_committing_an_empty_object_prints_one_line_per_missing_field(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("{}")
    result = run("commit", "--state", str(tmp_path / "state.sqlite"), str(path))
    assert result.exit_code == 3
    lines = result.stderr.splitlines()
    assert len(lines) == len(schema("decision")["required"]) == len(set(lines))
