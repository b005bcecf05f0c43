"""Shared helpers for the decision service tests: a token, requests, and the service running
for real (uvicorn in a thread, on a free loopback port), for the client's tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from protection_rules.cli.serve import listen

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = "2026-03-12T09:00:00Z"
# held 1 day of 3: holding_period blocks the close
HELD = {"asset": "AAPL", "action": "close", "current_date": NOW, "position_entry_date": "2026-03-11T09:00:00Z"}
OPEN = {"asset": "NVDA", "action": "open", "current_date": NOW}
# score 0.4 < 0.6: a grace period starts (`grace_started`) and the close is blocked
FAILING = {"asset": "INTC", "action": "close", "current_date": NOW, "current_score": 0.4, "current_size": 0.05}


@contextmanager
def running(app: Any) -> Iterator[str]:
    """The app served by uvicorn in a thread; yields its base URL."""
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
