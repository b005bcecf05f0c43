"""Load on the decision service: N `protect serve` processes sharing one state store and one
audit trail, M concurrent clients, a fixed number of evaluations in batches and singly.

Run:  .venv/bin/python benchmarks/bench_serve.py [--servers 2] [--clients 8] [--evaluations 20000]
          [--batch 50] [--single-share 0.5] [--state URL] [--audit URL] [--workers 1]

Without --state/--audit it uses SQLite files in a temporary folder (kept with --keep DIR).
It prints decisions/s and p50/p99 latency per call (singles and batches apart), then checks
that the audit trail gained exactly as many decision records as the clients received
(`protect audit stats`), all of them distinct, and that `protect audit verify` passes. Exit 1
when a check fails. The clients never retry (retries=0), so nothing can be recorded twice.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_evaluate import make_requests  # noqa: E402

from protection_rules.client import Client  # noqa: E402
from protection_rules.metrics import nearest_rank  # noqa: E402

PROTECT = Path(sys.executable).with_name("protect")
TOKEN = "bench-token-0123456789abcdef"


def start_servers(count: int, workers: int, state: str, audit: str, folder: Path) -> list[tuple[subprocess.Popen, str]]:
    tokens = folder / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    env = {**os.environ, "PROTECT_TOKENS_FILE": str(tokens)}
    servers = []
    for index in range(count):
        log = open(folder / f"server-{index}.log", "w+")  # noqa: SIM115 (closed with the server)
        args = [
            str(PROTECT),
            "serve",
            "--port",
            "0",
            "--workers",
            str(workers),
            "--state",
            state,
            "--audit",
            audit,
            "--no-access-log",
        ]
        process = subprocess.Popen(args, env=env, stderr=log, stdout=log, text=True)
        process.log = log  # type: ignore[attr-defined]
        servers.append((process, _url(process, log)))
    return servers


def _url(process: subprocess.Popen, log) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log.seek(0)
        found = re.search(r"listening on (http://[\d.]+:\d+)", log.read())
        if found:
            return found.group(1)
        if process.poll() is not None:
            log.seek(0)
            raise SystemExit(f"a server did not start:\n{log.read()}")
        time.sleep(0.05)
    raise SystemExit("a server did not start within 60 s")


def ready(url: str) -> None:
    with Client(url, TOKEN, retries=0, timeout=5) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                client.health()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def plan(evaluations: int, batch: int, single_share: float, seed: int) -> list[list[dict]]:
    """The calls: each a list of requests (length 1: a single evaluate), shuffled."""
    requests = make_requests(evaluations, seed)
    singles = round(evaluations * single_share)
    calls = [[r] for r in requests[:singles]]
    rest = requests[singles:]
    calls += [rest[i : i + batch] for i in range(0, len(rest), batch)]
    random.Random(seed).shuffle(calls)
    return calls


def run_clients(
    urls: list[str], clients: int, calls: list[list[dict]]
) -> tuple[float, dict[str, list[float]], list[str], list[str]]:
    pending = iter(enumerate(calls))
    lock = threading.Lock()
    latencies: dict[str, list[float]] = {"single": [], "batch": []}
    received: list[str] = []
    failures: list[str] = []

    def work(index: int) -> None:
        with Client(urls[index % len(urls)], TOKEN, retries=0, timeout=120) as client:
            while True:
                with lock:
                    item = next(pending, None)
                if item is None:
                    return
                _, requests = item
                started = time.perf_counter()
                try:
                    if len(requests) == 1:
                        decisions = [client.evaluate(requests[0])]
                    else:
                        decisions = client.evaluate_many(requests)
                except Exception as exc:
                    with lock:
                        failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies["single" if len(requests) == 1 else "batch"].append(elapsed)
                    received.extend(d.decision_id for d in decisions)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, received, failures


def decision_count(audit: str) -> int:
    done = subprocess.run([str(PROTECT), "audit", "stats", "--audit", audit, "--format", "json"], capture_output=True, text=True)
    if done.returncode != 0:
        return 0  # no trail yet
    return json.loads(done.stdout)["count"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="worker processes per server")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--evaluations", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--single-share", type=float, default=0.5, help="share of evaluations sent one per call")
    parser.add_argument("--state", default=None, help="state store URL or path (default: SQLite in a temporary folder)")
    parser.add_argument("--audit", default=None, help="audit trail URL or path (default: SQLite in a temporary folder)")
    parser.add_argument("--keep", default=None, metavar="DIR", help="keep the SQLite files and server logs in DIR")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    folder = Path(args.keep or tempfile.mkdtemp(prefix="bench-serve-"))
    folder.mkdir(parents=True, exist_ok=True)
    state = args.state or str(folder / "state.sqlite")
    audit = args.audit or str(folder / "audit.sqlite")
    before = decision_count(audit)
    calls = plan(args.evaluations, args.batch, args.single_share, args.seed)
    servers = start_servers(args.servers, args.workers, state, audit, folder)
    ok = True
    try:
        for _, url in servers:
            ready(url)
        print(f"{args.servers} server(s) x {args.workers} worker(s), {args.clients} clients, state {state}, audit {audit}")
        print(
            f"{args.evaluations} evaluations in {len(calls)} calls: batches of {args.batch} and singles ({args.single_share:.0%})"
        )
        wall, latencies, received, failures = run_clients([url for _, url in servers], args.clients, calls)
    finally:
        for process, _ in servers:
            process.send_signal(signal.SIGTERM)
        for process, _ in servers:
            if process.wait(60) != 0:
                ok = False
                print(f"a server exited with {process.returncode}; see {process.log.name}")  # type: ignore[attr-defined]
            process.log.close()  # type: ignore[attr-defined]

    print(f"{len(received)} decisions in {wall:.1f} s: {len(received) / wall:,.0f} decisions/s")
    for kind, values in latencies.items():
        if values:
            ordered = sorted(values)
            print(
                f"  {kind:6} calls {len(values):6}  p50 {nearest_rank(ordered, 50):8.1f} ms  p99 {nearest_rank(ordered, 99):8.1f} ms"
            )
    if failures:
        ok = False
        print(f"{len(failures)} call(s) failed, first: {failures[0]}")
    recorded = decision_count(audit) - before
    distinct = len(set(received))
    print(f"audit trail: {recorded} new decision records; clients received {len(received)} ({distinct} distinct)")
    if not (recorded == len(received) == distinct == args.evaluations):
        ok = False
        print("CHECK FAILED: the records do not match the decisions received")
    verify = subprocess.run([str(PROTECT), "audit", "verify", "--audit", audit], capture_output=True, text=True)
    print(f"protect audit verify: exit {verify.returncode}: {(verify.stdout or verify.stderr).strip().splitlines()[0]}")
    ok = ok and verify.returncode == 0
    if not args.keep and not args.audit and not args.state:
        shutil.rmtree(folder, ignore_errors=True)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
