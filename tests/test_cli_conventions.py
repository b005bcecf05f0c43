"""What a CI pipeline expects of `protect`: JSON errors under `--format json`, `-o/--output`
written atomically, colour only where it belongs, `-q`/`-v`, every option from the environment,
and shell completion."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from protection_rules.cli import cli
from protection_rules.cli.options import ReportOutput
from protection_rules.paths import AUDIT_ENV, STATE_ENV

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "requests"
HOLDING = str(EXAMPLES / "holding_close.json")
DEFAULT = (ROOT / "policies" / "default.yaml").read_text()
ANSI = "\x1b["


def run(*args: str, env: dict[str, str] | None = None, terminal: bool = False):
    """`terminal`: click's runner then treats standard output as a terminal (colour allowed)."""
    return CliRunner().invoke(cli, list(args), env=env, color=terminal, catch_exceptions=False)


@pytest.fixture
def audit_log(tmp_path) -> Path:
    path = tmp_path / "audit.jsonl"
    for name in ("holding_close.json", "plain_open.json"):
        run("evaluate", "--audit", str(path), str(EXAMPLES / name))
    return path


# ------------------------------------------------------------------------------- JSON errors


def test_an_invalid_policy_under_json_is_a_json_error_on_stdout_and_a_line_on_stderr(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(DEFAULT.replace("days: 5", "days: 0"))  # line 38, column 11
    result = run("evaluate", "--format", "json", "--policy", str(policy), HOLDING)
    assert result.exit_code == 3
    error = json.loads(result.stdout)["error"]
    assert (error["code"], error["exit_code"]) == ("policy-invalid", 3)
    assert [(i["code"], i["path"], i["line"], i["column"]) for i in error["issues"]] == [
        ("schema-range", "$.protections.grace_period.days", 38, 11)
    ]
    assert f"{policy}:38:11: $.protections.grace_period.days:" in result.stderr


def test_the_same_error_in_text_is_only_on_stderr(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(DEFAULT.replace("days: 5", "days: 0"))
    result = run("evaluate", "--policy", str(policy), HOLDING)
    assert (result.exit_code, result.stdout) == (3, "")
    assert "$.protections.grace_period.days" in result.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["evaluate", "--format", "json", "--frobnicate", HOLDING], None),  # a bad option of the command
        (["evaluate", "--format=json", "--frobnicate", HOLDING], None),
        (["--frobnicate", "evaluate", "--format", "json", HOLDING], None),  # a bad option of protect itself
        (["evaluate", "--frobnicate", HOLDING], {"PROTECT_EVALUATE_FORMAT": "json"}),  # json from the environment
        (["nosuchcommand", "--format", "json"], None),
        (["audit", "query", "--format", "jsonl", "--kind", "note"], None),
    ],
)
def test_usage_errors_are_json_when_json_was_asked_for(args, env):
    result = run(*args, env=env)
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["code"] == "usage"
    assert "Error:" in result.stderr


def test_usage_errors_stay_text_otherwise():
    result = run("evaluate", "--frobnicate", HOLDING)
    assert (result.exit_code, result.stdout) == (2, "")
    assert "No such option" in result.stderr


# ------------------------------------------------------------------------------------ --output

OUTPUT_COMMANDS = [
    (["evaluate", "--no-audit", "--format", "json", HOLDING], 1, '"decision": "deny"'),
    (["validate", "--format", "json", str(ROOT / "policies")], 0, '"valid": true'),
    (["audit", "verify", "--format", "json", "--audit", "{audit}"], 0, '"ok": true'),
    (["audit", "query", "--format", "json", "--audit", "{audit}"], 0, '"kind":"decision"'),
    (["audit", "stats", "--format", "json", "--audit", "{audit}"], 0, '"count": 2'),
    (
        [
            "rebalance",
            "--no-audit",
            "--format",
            "json",
            "--date",
            "2026-03-12",
            str(ROOT / "examples" / "rebalance" / "targets.json"),
        ],
        1,
        '"format": "protection-rules/rebalance-report/v1"',
    ),
]


@pytest.mark.parametrize(("args", "exit_code", "expected"), OUTPUT_COMMANDS, ids=lambda v: v[0] if isinstance(v, list) else "")
@pytest.mark.parametrize("flag", ["-o", "--output"])
def test_output_writes_the_report_to_the_file_instead_of_stdout(tmp_path, audit_log, args, exit_code, expected, flag):
    target = tmp_path / "report.json"
    target.write_text("the previous report\n")
    result = run(*[a.format(audit=audit_log) for a in args], flag, str(target))
    assert result.exit_code == exit_code
    assert result.stdout == ""
    assert expected in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".report")) == []  # no temporary left


def test_output_under_json_holds_the_error_report_and_in_text_stays_as_it_was(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("the previous report\n")
    missing = str(tmp_path / "missing.json")
    assert run("evaluate", "-o", str(target), missing).exit_code == 2
    assert target.read_text() == "the previous report\n"
    result = run("evaluate", "--format", "json", "-o", str(target), missing)
    assert (result.exit_code, result.stdout) == (2, "")
    assert json.loads(target.read_text())["error"]["code"] == "usage"


def test_output_in_a_folder_that_does_not_exist_is_a_usage_error(tmp_path):
    result = run("validate", "-o", str(tmp_path / "nope" / "report.json"))
    assert result.exit_code == 2
    assert f"{tmp_path / 'nope'}: no such folder" in result.stderr


def test_output_gets_a_report_files_mode_not_a_temporary_files(tmp_path):
    target = tmp_path / "report.txt"
    old = os.umask(0o022)
    try:
        assert run("validate", "-o", str(target)).exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_report_output_replaces_the_file_only_when_finished(tmp_path):
    target = tmp_path / "report.txt"
    target.write_text("old\n")
    output = ReportOutput(str(target))
    output.file.write("new, half")
    assert target.read_text() == "old\n"  # a reader meanwhile sees the whole old report
    output.file.write(" and whole\n")
    output.finish(keep=True)
    assert target.read_text() == "new, half and whole\n"
    dropped = ReportOutput(str(target))
    dropped.file.write("never seen\n")
    dropped.finish(keep=False)
    assert target.read_text() == "new, half and whole\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.txt"]


# ------------------------------------------------------------------------------------- colour


@pytest.mark.parametrize(
    ("args", "env", "terminal", "coloured"),
    [
        ([], None, True, True),  # auto, on a terminal
        ([], None, False, False),  # auto, piped
        ([], {"NO_COLOR": "1"}, True, False),
        ([], {"NO_COLOR": ""}, True, True),  # set but empty does not count (no-color.org)
        (["--color", "never"], None, True, False),
        (["--color", "always"], None, False, True),
        (["--color", "always"], {"NO_COLOR": "1"}, False, True),  # the command line wins
        ([], {"PROTECT_COLOR": "never"}, True, False),
    ],
)
def test_colour_only_on_a_terminal_never_under_no_color(args, env, terminal, coloured):
    result = run(*args, "evaluate", "--no-audit", HOLDING, env=env, terminal=terminal)
    assert result.exit_code == 1
    assert (ANSI in result.stdout) is coloured


# ------------------------------------------------------------------------------------ -q / -v


def test_evaluate_quiet_is_the_verdict_line_and_verbose_adds_what_was_used():
    normal = run("evaluate", "--no-audit", HOLDING)
    quiet = run("evaluate", "--no-audit", "-q", HOLDING)
    verbose = run("evaluate", "--no-audit", "-v", HOLDING)
    assert quiet.stdout == normal.stdout.splitlines()[0] + "\n"
    assert quiet.stdout.startswith("DENIED  close AAPL")
    assert verbose.stdout.rsplit("trace", 1)[0] == normal.stdout.rsplit("trace", 1)[0]  # trace ids differ per run
    assert f"policy {ROOT / 'policies' / 'default.yaml'} (default 1.0.0, sha256 0183b968" in verbose.stderr
    assert "audit none" in verbose.stderr
    assert "1 decision(s): 0 approved, 1 denied" in verbose.stderr
    assert normal.stderr == quiet.stderr == ""


def test_evaluate_verbose_ends_with_the_engines_metrics(tmp_path):
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        '{"asset": "NVDA", "action": "open", "current_date": "2026-03-20T12:00:00Z"}\n'
        '{"asset": "AAPL", "action": "close", "current_date": "2026-03-20T12:00:00Z",'
        ' "position_entry_date": "2026-03-19T12:00:00Z",'
        ' "regime": {"changed": true, "severity": "high", "change_date": "2026-03-19T00:00:00Z"}}\n'
        '{"asset": "AAPL", "action": "close", "current_date": "2026-03-20T12:00:00Z",'
        ' "position_entry_date": "2026-03-19T12:00:00Z"}\n'
        "not json\n",
        encoding="utf-8",
    )
    last = run("evaluate", "--no-audit", "--no-state", "-v", str(batch)).stderr.splitlines()[-1]
    # an open, an override of the holding period, a close held one day, a line that is no JSON
    head, times = last.split("; ")
    assert head == "4 decision(s): 2 approved, 2 denied (1 approved by override, 1 invalid, 0 error(s))"
    assert times.startswith("p50 ") and times.endswith(" ms")


def test_quiet_and_verbose_leave_json_alone():
    outputs = {flag: run("evaluate", "--no-audit", "--format", "json", flag, HOLDING).stdout for flag in ("-q", "-v")}
    decisions = [json.loads(text) for text in outputs.values()]
    assert [d["blocking_systems"] for d in decisions] == [["holding_period"], ["holding_period"]]


def test_validate_quiet_prints_only_errors_and_verbose_the_whole_hash(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT.replace("max_cycles: 1", "max_cycles: -1"))
    good = str(ROOT / "policies" / "default.yaml")
    quiet = run("validate", "-q", good, str(bad))
    assert quiet.exit_code == 1
    assert quiet.stdout.splitlines() == [line for line in quiet.stdout.splitlines() if line.startswith(str(bad))] != []
    assert quiet.stderr == ""
    verbose = run("validate", "-v", good)
    assert "sha256 0183b96819be093b73ad049a8a6e5bdb1178615b1fde83b92fad3b955f2c0d3b)" in verbose.stdout
    assert "1 file(s) checked" in verbose.stderr


def test_audit_quiet_and_verbose(audit_log):
    log = str(audit_log)
    assert run("audit", "verify", "-q", "--audit", log).stdout == ""
    stats = run("audit", "stats", "-q", "--audit", log)
    assert stats.stdout == "2 decision(s): 1 approved (50.0%), 1 denied, 0 by override (0.0%)\n"
    quiet = run("audit", "query", "-q", "--audit", log)
    assert quiet.stderr == "" and len(quiet.stdout.splitlines()) == 3  # header and two records
    verbose = run("audit", "query", "-v", "--asset", "AAPL", "--audit", log)
    assert f"audit log {log}; filter: asset=AAPL" in verbose.stderr
    assert "1 record(s)" in verbose.stderr


@pytest.mark.parametrize("args", [["validate", "-q", "-v"], ["audit", "verify", "-v", "-q", "--format", "json", "--audit", "x"]])
def test_quiet_and_verbose_together_are_a_usage_error(args):
    result = run(*args)
    assert result.exit_code == 2
    assert "--quiet and --verbose exclude each other" in result.stderr


# ---------------------------------------------------------------------------- --format json


def test_audit_query_takes_json_and_still_jsonl(audit_log):
    as_json = run("audit", "query", "--format", "json", "--audit", str(audit_log))
    as_jsonl = run("audit", "query", "--format", "jsonl", "--audit", str(audit_log))
    assert as_json.stdout == as_jsonl.stdout
    assert [json.loads(line)["decision"] for line in as_json.stdout.splitlines()] == ["deny", "approve"]
    assert "[text|json]" in run("audit", "query", "--help").stdout


# ------------------------------------------------------------------------------- environment


def walk(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, (*path, name))


def options():
    for path, command in walk(cli):
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "version":
                yield path, param


def test_every_option_reads_protect_command_option_from_the_environment():
    names = []
    for path, option in options():
        flag = max(option.opts, key=len).lstrip("-")
        if flag in ("state", "audit"):
            assert option.envvar in (STATE_ENV, AUDIT_ENV), (path, flag)  # kept as they were
        else:
            expected = "_".join(["PROTECT", *path, flag]).upper().replace("-", "_")
            assert option.envvar == expected, (path, flag)
        names.append((path, option.envvar))
    assert len(names) >= 60
    assert len(set(names)) == len(names)  # no two options of one command share a variable
    generated = {name for _, name in names if name not in (STATE_ENV, AUDIT_ENV)}
    assert STATE_ENV not in generated and AUDIT_ENV not in generated
    assert {"PROTECT_EVALUATE_FORMAT", "PROTECT_AUDIT_QUERY_ASSET", "PROTECT_COLOR", "PROTECT_VALIDATE_OUTPUT"} <= generated


def test_options_from_the_environment_change_what_commands_do(tmp_path, audit_log):
    decision = run("evaluate", "--no-audit", HOLDING, env={"PROTECT_EVALUATE_FORMAT": "json"})
    assert json.loads(decision.stdout)["blocking_systems"] == ["holding_period"]
    query = run("audit", "query", "--format", "json", env={AUDIT_ENV: str(audit_log), "PROTECT_AUDIT_QUERY_ASSET": "AMZN"})
    assert [json.loads(line)["asset"] for line in query.stdout.splitlines()] == ["AMZN"]
    target = tmp_path / "report.txt"
    assert run("validate", env={"PROTECT_VALIDATE_OUTPUT": str(target)}).stdout == ""
    assert "default.yaml: ok" in target.read_text()
    # the command line wins over the environment
    assert run("evaluate", "--no-audit", "--format", "text", HOLDING, env={"PROTECT_EVALUATE_FORMAT": "json"}).stdout.startswith(
        "DENIED"
    )


def test_the_environment_cannot_ask_for_the_version_or_help():
    # click's auto_envvar_prefix would read --version from PROTECT_VERSION
    result = run("validate", env={"PROTECT_VERSION": "1", "PROTECT_HELP": "1", "PROTECT_VALIDATE_HELP": "1"})
    assert result.exit_code == 0 and "default.yaml: ok" in result.stdout


def test_help_names_the_environment_variable():
    assert "PROTECT_EVALUATE_FORMAT" in run("evaluate", "--help").stdout


# -------------------------------------------------------------------------------- completion


def test_shell_completion_script_comes_from_the_environment_variable():
    result = CliRunner().invoke(cli, [], prog_name="protect", env={"_PROTECT_COMPLETE": "bash_source"})
    assert result.exit_code == 0
    assert "_protect_completion()" in result.stdout and "complete -o nosort -F _protect_completion protect" in result.stdout


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("protect ev", ["evaluate"]),
        ("protect audit query --form", ["--format"]),
        ("protect audit query --format ", ["text", "json"]),  # the jsonl alias is not offered
        ("protect --color ", ["auto", "always", "never"]),
    ],
)
def test_shell_completion_completes(words, expected):
    env = {"_PROTECT_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
    result = CliRunner().invoke(cli, [], prog_name="protect", env=env)
    assert result.exit_code == 0
    assert [line.split(",", 1)[1] for line in result.stdout.splitlines()] == expected
