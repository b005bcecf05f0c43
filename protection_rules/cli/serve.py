"""`protect serve`: the decision service (protection_rules.server) on uvicorn."""

from __future__ import annotations

import json
import os
import signal
import socket
from dataclasses import asdict, dataclass
from typing import Any

import click

from ..audit import UnwritableAudit
from ..errors import AuditError, UsageError, os_reason
from .options import audit_path_option, build_engine, open_sink, open_store, policy_option, state_option

# What each worker process builds its app from, when there are several (they are spawned)
WORKER_ENV = "PROTECT_SERVE_WORKER"
TOKENS_ENV = "PROTECT_TOKENS_FILE"  # also protection_rules.server.TOKENS_ENV; repeated so --help needs no extra


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to build the same service as every other worker."""

    policy_path: str | None
    state_path: str | None
    audit_path: str | None
    tokens_path: str | None
    max_body: int
    max_batch: int
    max_depth: int
    reload_allowed: bool

    def build(self) -> tuple[Any, list[Any]]:
        """The app, and what to close when it stops. The state store and audit sink are opened
        as every command opens them (`open_store`, `open_sink`), so any URL they take works here."""
        try:
            from ..server import Limits, create_app, load_tokens
        except ImportError as exc:
            raise UsageError(f"protect serve needs the `serve` extra: pip install 'protection-rules[serve]' ({exc})") from None

        tokens = load_tokens(self.tokens_path)
        store = open_store(self.state_path, for_writing=True)  # commits and executions write state
        sink = open_sink(self.audit_path, no_audit=False)
        try:
            if isinstance(sink, UnwritableAudit):
                # a command would deny every decision; a service that would is refused at start,
                # so its supervisor sees it and restarts it once the trail is back
                raise AuditError(sink.problem)
            engine = build_engine(self.policy_path, state=store, audit=sink)
        except BaseException:
            _close([store, sink])
            raise
        limits = Limits(max_body=self.max_body, max_depth=self.max_depth, max_batch=self.max_batch)
        app = create_app(engine, tokens, limits=limits, reload_allowed=self.reload_allowed)
        return app, [store, sink]


def worker_app() -> Any:
    """The app of one worker process (uvicorn's factory under `--workers N`)."""
    app, _resources = Settings(**json.loads(os.environ[WORKER_ENV])).build()  # closed when the process ends
    return app


def _close(resources: list[Any]) -> None:
    for resource in resources:
        if resource is not None:
            resource.close()


class _Stopped(Exception):
    """SIGINT or SIGTERM, as uvicorn passes it on once it has stopped serving."""


def _stop(signum: int, frame: Any) -> None:
    raise _Stopped


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: any free one), or `UsageError` saying why not."""
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.set_inheritable(True)
    except OSError as exc:
        if sock is not None:
            sock.close()
        reason = exc.strerror.lower() if isinstance(exc, socket.gaierror) and exc.strerror else os_reason(exc)
        raise UsageError(f"cannot listen on `{host}:{port}`: {reason}") from None
    return sock


@click.command()
@policy_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback unless told otherwise).")
@click.option("--port", type=click.IntRange(0, 65535), default=8181, show_default=True, help="Port (0: any free one, printed).")
@click.option(
    "--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Worker processes (hot reload needs 1)."
)
@state_option
@audit_path_option
@click.option(
    "--tokens",
    "tokens_path",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"Access tokens, one a line (`sha256:HEX` for a hashed one). Required. [default: ${TOKENS_ENV}]",
)
@click.option(
    "--max-body",
    type=click.IntRange(1),
    default=16 * 1024 * 1024,
    show_default=True,
    metavar="BYTES",
    help="Largest request body (413 over it).",
)
@click.option(
    "--max-batch", type=click.IntRange(1), default=10_000, show_default=True, help="Most requests in one batch (413 over it)."
)
@click.option(
    "--max-depth",
    type=click.IntRange(8, 1000),
    default=32,
    show_default=True,
    help="Deepest JSON nesting of a body (413 over it).",
)
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="Log every call (uvicorn's access log).")
def serve(
    policy_path, host, port, workers, state_path, audit_path, tokens_path, max_body, max_batch, max_depth, access_log
) -> None:
    """Serve decisions over HTTP (README, "Decision service"); runs until stopped (SIGINT, SIGTERM).

    Every endpoint but GET /v1/health needs `Authorization: Bearer TOKEN`, a token of the
    file PROTECT_TOKENS_FILE (or --tokens). The policy, the tokens, the state store and the
    audit trail are checked before the port is opened: a problem exits as any command does
    (2 usage, 3 invalid policy or tokens file, 4 store or trail unusable).

    \b
    Example:
      PROTECT_TOKENS_FILE=tokens.txt protect serve --policy policies/default.yaml --state state.sqlite --audit audit.sqlite
      curl -H "Authorization: Bearer $TOKEN" -d @request.json http://127.0.0.1:8181/v1/evaluate
    """
    settings = Settings(
        policy_path, state_path, audit_path, tokens_path, max_body, max_batch, max_depth, reload_allowed=workers == 1
    )
    app, resources = settings.build()  # fails here, before listening, on any bad setting
    import uvicorn  # the `serve` extra: build() said so if it is missing
    from uvicorn.supervisors import Multiprocess

    try:
        sock = listen(host, port)
    except BaseException:
        _close(resources)  # an unknown host or a taken port: nothing was served
        raise
    stopping = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        click.echo(f"protect serve: listening on http://{host}:{sock.getsockname()[1]} ({workers} worker(s))", err=True)
        options: dict[str, Any] = {"lifespan": "off", "access_log": access_log, "server_header": False, "log_level": "info"}
        if workers == 1:
            uvicorn.Server(uvicorn.Config(app, **options)).run(sockets=[sock])
        else:
            _close(resources)  # each worker opens its own
            resources = []
            os.environ[WORKER_ENV] = json.dumps(asdict(settings))
            Multiprocess(uvicorn.Config(f"{__name__}:worker_app", factory=True, workers=workers, **options), sockets=[sock]).run()
    except _Stopped:
        pass  # uvicorn shut down gracefully, then passed the signal on: a normal end
    finally:
        for sig, handler in stopping.items():
            signal.signal(sig, handler)
        sock.close()
        _close(resources)
