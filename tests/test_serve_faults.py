"""Faults under load: two `protect serve` processes on one PostgreSQL (state and audit), client
threads sending singles and batches with retries, and one fault mid-load: `kill -9` of a
server, or a PostgreSQL restart. Afterwards: every decision a client received is in the audit
trail exactly once (an approval always; a deny unless it says the trail could not record it),
nothing in the trail twice, `protect audit verify` passes, every failed call raised a typed
error, and service resumed without anyone restarting anything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from service_helpers import HELD, NOW, TOKEN

from protection_rules.audit import open_audit
from protection_rules.client import Client
from protection_rules.errors import ProtectionRulesError
from protection_rules.models import ProtectionDecision

PROTECT = Path(sys.executable).with_name("protect")
THREADS = 4
BATCH = 5
RESTARTS = 5
UNRECORDED = "audit-error"  # a deny saying the trail could not record it (so it is not there)


def _request(n: int) -> dict:
    if n % 3 == 0:
        return dict(HELD)  # a deny: held 1 day of 3
    return {"asset": f"A{n % 50}", "action": "open", "current_date": NOW}  # an approval


def _start(tmp_path: Path, index: int, url: str) -> tuple[subprocess.Popen, str]:
    (tmp_path / "tokens").write_text(f"{TOKEN}\n")
    log_path = tmp_path / f"server-{index}.log"
    with open(log_path, "w") as log:
        args = ["serve", "--port", "0", "--state", url, "--audit", url, "--no-access-log"]
        env = {**os.environ, "PROTECT_TOKENS_FILE": str(tmp_path / "tokens")}
        process = subprocess.Popen([str(PROTECT), *args], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://[\d.]+:\d+)", log_path.read_text())
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise AssertionError(f"server {index} did not start: {log_path.read_text()}")


@pytest.fixture
def servers(tmp_path, postgres_url):
    started = [_start(tmp_path, index, postgres_url) for index in range(2)]
    yield [url for _, url in started], [process for process, _ in started]
    for process, _ in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process, _ in started:
        process.wait(30)


@dataclass
class Load:
    """Client threads, each on its own server first, moving to the next one when a call fails."""

    urls: list[str]
    received: list[ProtectionDecision] = field(default_factory=list)
    failures: list[tuple[float, BaseException]] = field(default_factory=list)
    successes: list[tuple[int, float, bool]] = field(default_factory=list)  # (thread, started, no error in it)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, index: int) -> None:
        url = index % len(self.urls)
        n = index * 1_000_000
        clients = [Client(u, TOKEN, retries=2, backoff=0.05, timeout=10) for u in self.urls]
        try:
            while not self.stop.is_set():
                n += 1
                started = time.monotonic()
                try:
                    if n % 2:
                        decisions = [clients[url].evaluate(_request(n))]
                    else:
                        decisions = clients[url].evaluate_many([_request(n + k) for k in range(BATCH)])
                except Exception as exc:  # checked afterwards: typed, never an approval
                    with self.lock:
                        self.failures.append((started, exc))
                    url = (url + 1) % len(self.urls)
                    continue
                with self.lock:
                    self.received.extend(decisions)
                    clean = not any(d.errors for d in decisions)
                    self.successes.append((index, started, clean))
        finally:
            for client in clients:
                client.close()

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(THREADS)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 60
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"only {len(self.received)} decisions in 60 s; failures: {self.failures[:3]}"
            time.sleep(0.02)

    def firsts_after(self, fault: float) -> list[float | None]:
        """Per thread: the start of its first call after the fault answered with no error at all."""
        with self.lock:
            return [
                min(
                    (started for thread, started, ok in self.successes if thread == index and ok and started >= fault),
                    default=None,
                )
                for index in range(THREADS)
            ]

    def resumed_after(self, fault: float, limit: float) -> float:
        """Waits until every thread had a call after the fault answered with no error at all
        (a thread on a killed server moves to the other one); the seconds that took."""
        deadline = time.monotonic() + limit
        while None in (firsts := self.firsts_after(fault)):
            assert time.monotonic() < deadline, f"a thread did not resume within {limit} s: {firsts}"
            time.sleep(0.05)
        return max(firsts) - fault  # type: ignore[type-var,operator]


def _check_trail(url: str, load: Load) -> None:
    """What a client received is recorded exactly once; the chain verifies; failures were typed."""
    assert all(isinstance(exc, ProtectionRulesError) for _, exc in load.failures), load.failures
    ids = [d.decision_id for d in load.received]
    assert len(ids) == len(set(ids)), "a decision id was received twice"
    with open_audit(url, mode="read") as trail:
        stored = Counter(record["decision_id"] for record in trail.records())
        assert max(stored.values()) == 1, "a decision recorded twice"
        for decision in load.received:
            codes = {issue.code for issue in decision.errors}
            record = trail.find(decision.decision_id)
            if UNRECORDED in codes:
                assert not decision.approved and record is None, decision
                continue
            assert record is not None, f"received but not recorded: {decision.decision} {decision.decision_id}"
            assert record["decision"] == decision.decision
    verify = subprocess.run([str(PROTECT), "audit", "verify", "--audit", url], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _report(name: str, load: Load, resumed: float) -> str:
    errors = Counter(issue.code for d in load.received for issue in d.errors[:1])
    failed = Counter(type(exc).__name__ for _, exc in load.failures)
    return (
        f"{name}: {len(load.received)} decisions received; failed calls: {dict(failed)}; "
        f"denies with an error: {dict(errors)}; every thread served again {resumed:.2f} s later"
    )


def test_kill_9_of_one_server_mid_load(servers, postgres_url, capsys):
    urls, processes = servers
    with Load(urls) as load:
        load.wait_for(300)
        fault = time.monotonic()
        processes[0].send_signal(signal.SIGKILL)
        resumed = load.resumed_after(fault, 30)
        load.wait_for(len(load.received) + 200)
    assert processes[0].wait(10) == -signal.SIGKILL
    # the threads on the killed server felt it: a typed error (checked below), then the other server
    assert load.failures
    with Client(urls[1], TOKEN, retries=0) as survivor:
        decision = survivor.evaluate({"asset": "Z", "action": "open", "current_date": NOW})
        assert decision.approved and not decision.errors
        load.received.append(decision)
    _check_trail(postgres_url, load)
    with capsys.disabled():
        print("\n" + _report("kill -9 (from the kill)", load, resumed))


def test_postgresql_restarts_mid_load(servers, postgres_server, postgres_url, capsys):
    """Immediate restarts (as after a crash), 0.3 s apart, so that some transactions are cut."""
    urls, _ = servers
    with Load(urls) as load:
        load.wait_for(300)
        for _ in range(RESTARTS):
            time.sleep(0.3)
            postgres_server.restart()
        up = time.monotonic()
        resumed = load.resumed_after(up, 40)
        load.wait_for(len(load.received) + 200)
    # the pools test each connection before handing it out: none the restart cut is used again
    assert not [started for _, started, ok in load.successes if started > up and not ok]
    for url in urls:  # both servers serve again, neither restarted
        with Client(url, TOKEN, retries=0) as client:
            decision = client.evaluate({"asset": "Z", "action": "open", "current_date": NOW})
            assert decision.approved and not decision.errors
            load.received.append(decision)
    _check_trail(postgres_url, load)
    with capsys.disabled():
        print("\n" + _report(f"{RESTARTS} postgresql restarts (the last one up)", load, resumed))
