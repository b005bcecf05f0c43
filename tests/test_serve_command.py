"""`protect serve`: refuses to start on a bad setting (before it listens), and end to end in a
subprocess on a free loopback port, used through the client."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from service_helpers import FAILING, HELD, OPEN, TOKEN

from protection_rules.audit import open_audit
from protection_rules.cli import cli
from protection_rules.client import Client

PROTECT = Path(sys.executable).with_name("protect")


@pytest.fixture
def tokens(tmp_path) -> str:
    (tmp_path / "tokens").write_text(f"{TOKEN}\n")
    return str(tmp_path / "tokens")


def _refusals(tmp_path, tokens):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    (tmp_path / "bad.yaml").write_text("apiVersion: nope\n")
    (tmp_path / "short").write_text("short\n")
    return taken, {
        "no tokens file": ([], {}, 2, "PROTECT_TOKENS_FILE is not set"),
        "tokens file missing": (["--tokens", str(tmp_path / "none")], {}, 2, "no such file"),
        "bad tokens file": (["--tokens", str(tmp_path / "short")], {}, 3, "at least 16 characters"),
        "policy missing": (["--policy", str(tmp_path / "none.yaml")], {"PROTECT_TOKENS_FILE": tokens}, 2, "no such file"),
        "policy invalid": (["--policy", str(tmp_path / "bad.yaml")], {"PROTECT_TOKENS_FILE": tokens}, 3, "`apiVersion` must be"),
        "port taken": ([], {"PROTECT_TOKENS_FILE": tokens}, 2, "cannot listen on"),
        "host unknown": (["--host", "no-such-host.invalid"], {"PROTECT_TOKENS_FILE": tokens}, 2, "cannot listen on"),
        "audit trail unusable": (["--audit", str(tmp_path / "bad.yaml")], {"PROTECT_TOKENS_FILE": tokens}, 4, "bad.yaml"),
        "tokens option": (["--tokens", str(tmp_path / "short")], {"PROTECT_TOKENS_FILE": tokens}, 3, "at least 16"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "no tokens file",
        "tokens file missing",
        "bad tokens file",
        "policy missing",
        "policy invalid",
        "port taken",
        "host unknown",
        "audit trail unusable",
        "tokens option",
    ],
)
def test_a_bad_setting_exits_before_serving(tmp_path, tokens, case):
    taken, cases = _refusals(tmp_path, tokens)
    args, env, code, message = cases[case]
    with taken:
        # on a port already taken: a check that let a case through fails at listening, never serves
        base = [
            "serve",
            "--state",
            str(tmp_path / "s.sqlite"),
            "--audit",
            str(tmp_path / "a.sqlite"),
            "--port",
            str(taken.getsockname()[1]),
        ]
        result = CliRunner().invoke(cli, [*base, *args], env=env)
    assert result.exit_code == code, result.output
    assert message in result.output


def _start(tmp_path, tokens, *extra: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PROTECT_TOKENS_FILE": tokens}
    args = [
        str(PROTECT),
        "serve",
        "--port",
        "0",
        "--state",
        str(tmp_path / "state.sqlite"),
        "--audit",
        str(tmp_path / "audit.sqlite"),
    ]
    process = subprocess.Popen([*args, "--no-access-log", *extra], env=env, stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()
    found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", first)
    if not found:
        process.kill()
        raise AssertionError(f"not serving: {first}{process.stderr.read()}")
    return process, found.group(1)


def _wait_healthy(client: Client) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            client.health()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("workers", [1, 2])
def test_end_to_end_through_the_client(tmp_path, tokens, workers):
    process, url = _start(tmp_path, tokens, "--workers", str(workers))
    try:
        with Client(url, TOKEN, retries=0) as client:
            _wait_healthy(client)
            held = client.evaluate(HELD)
            batch = client.evaluate_many([OPEN, FAILING])
            assert (held.decision, [d.decision for d in batch]) == ("deny", ["approve", "deny"])
            assert client.commit(batch[1]) is True
            client.record_execution("NVDA", "open", "2026-03-12T09:05:00Z", 0.05)
            reload = httpx.post(f"{url}/v1/policy/reload", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
            assert reload.status_code == (409 if workers > 1 else 200), reload.text
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        process.stderr.close()
    verify = subprocess.run(
        [str(PROTECT), "audit", "verify", "--audit", str(tmp_path / "audit.sqlite")], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    with open_audit(tmp_path / "audit.sqlite", mode="read") as trail:
        assert [r["decision_id"] for r in trail.records()] == [held.decision_id, *(d.decision_id for d in batch)]
    shown = subprocess.run(
        [str(PROTECT), "state", "show", "INTC", "--state", str(tmp_path / "state.sqlite")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"started_at": "2026-03-12T09:00:00Z"' in shown.stdout
