"""The decision service as an ASGI application (Starlette): `create_app(engine, tokens)`.

Every endpoint but `GET /v1/health` needs `Authorization: Bearer TOKEN`; a call without an
accepted token is answered 401 before its body is read, so nothing is evaluated or recorded.
The engine is synchronous, so each call's work runs in the thread pool and the event loop
never waits on a decision, a probe or a store. Every refusal is an error.v1 document with the
status of its error class (`status_for`), and an unexpected failure is a 500 whose body says
nothing of the code: the traceback goes to the log, never into a response.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import (
    AccessDenied,
    AuditError,
    EngineFailure,
    InputInvalid,
    Issue,
    PolicyInvalid,
    ProtectionRulesError,
    Refused,
    StateError,
    TooLarge,
    UsageError,
    error_report,
)
from ..loading import SourceMap
from ..timestamps import format_instant
from ..validation import schema_issues
from .access import Tokens
from .bodies import BODY, BodyMalformed, Limits, batch_requests, parse_body, read_body
from .exposition import CONTENT_TYPE, exposition, exposition_registry
from .openapi import openapi_document

logger = logging.getLogger("protection_rules.server")

PUBLIC_PATHS = frozenset({"/v1/health"})


def status_for(exc: ProtectionRulesError) -> int:
    """The HTTP status of an error class: the one place the service maps them."""
    for cls, status in (
        (AccessDenied, 401),
        (TooLarge, 413),
        (BodyMalformed, 400),
        (InputInvalid, 422),
        (UsageError, 400),
        (Refused, 409),
        (StateError, 503),
        (AuditError, 503),
        (EngineFailure, 503),
    ):
        if isinstance(exc, cls):
            return status
    return 500


def _refusal(exc: ProtectionRulesError) -> JSONResponse:
    return JSONResponse(error_report(exc), status_code=status_for(exc))


class _Guard:
    """Token check and the last line of defence, outside every route.

    Checking here, before routing, means an unauthenticated caller learns nothing (not even
    which paths exist) and no route's code runs. Any exception that escapes a route becomes a
    bare error.v1 500; its traceback goes to the log only.
    """

    def __init__(self, app: ASGIApp, tokens: Tokens):
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] not in PUBLIC_PATHS:
            authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not self.tokens.accepts(authorization.decode("latin-1")):
                denied = AccessDenied("a valid `Authorization: Bearer TOKEN` header is required")
                await _send_refusal(denied, scope, receive, send, headers={"WWW-Authenticate": "Bearer"})
                return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                await _send_refusal(ProtectionRulesError("internal error: the server logged the details"), scope, receive, send)


async def _send_refusal(
    exc: ProtectionRulesError, scope: Scope, receive: Receive, send: Send, headers: dict[str, str] | None = None
) -> None:
    response = JSONResponse(error_report(exc), status_code=status_for(exc), headers=headers)
    await response(scope, receive, send)


class _Service:
    """The endpoints, over one engine."""

    def __init__(self, engine: Any, limits: Limits, policy_path: str | Path | None, reload_allowed: bool):
        self.engine = engine
        self.limits = limits
        self.policy_path = policy_path
        self.reload_allowed = reload_allowed
        self.registry = exposition_registry(engine)

    async def body(self, request: Request) -> Any:
        # parsing up to `max_body` bytes of JSON takes a while: off the event loop, like deciding
        return await run_in_threadpool(parse_body, await read_body(request, self.limits), self.limits)

    async def evaluate(self, request: Request) -> Response:
        return await run_in_threadpool(self._decided, await self.body(request))

    def _decided(self, data: Any) -> Response:
        """Decide and render (a batch's JSON is megabytes), in a worker thread."""
        batch = batch_requests(data, self.limits)
        if batch is None:
            return JSONResponse(self.engine.evaluate(data).to_dict())
        return JSONResponse({"decisions": [decision.to_dict() for decision in self.engine.evaluate_many(batch)]})

    async def commit(self, request: Request) -> Response:
        data = _checked("commit-request", await self.body(request))
        target = data.get("decision_id", data.get("decision"))
        applied = await run_in_threadpool(self.engine.commit, target)
        decision_id = target if isinstance(target, str) else target.get("decision_id")
        return JSONResponse({"decision_id": decision_id, "applied": applied})

    async def executions(self, request: Request) -> Response:
        data = _checked("execution", await self.body(request))
        at = await run_in_threadpool(self.engine.record_execution, data["asset"], data["type"], data["at"], data.get("size"))
        return JSONResponse({"asset": data["asset"], "recorded": data["type"], "at": format_instant(at)}, status_code=201)

    async def health(self, request: Request) -> Response:
        report = await run_in_threadpool(self.engine.health)
        return JSONResponse(report, status_code=503 if report["status"] == "failing" else 200)

    async def metrics(self, request: Request) -> Response:
        return Response(await run_in_threadpool(exposition, self.registry), media_type=CONTENT_TYPE)

    async def policy(self, request: Request) -> Response:
        policy = self.engine.policy
        return JSONResponse(
            {
                "policy": self.engine.compiled.ref.to_dict(),
                "source": policy.source,
                "reloads": self.engine.reloads,
                "document": policy.document,
            }
        )

    async def reload(self, request: Request) -> Response:
        await read_body(request, self.limits)  # bounded, and not used: the policy is the server's file
        if not self.reload_allowed:
            raise Refused("hot reload is refused with several workers (each holds its own engine): restart the service")
        path = self.policy_path or self.engine.policy.source
        try:
            policy = await run_in_threadpool(self.engine.reload, path)
        except UsageError as exc:  # the file went away: the policy in force stays, and says why
            raise PolicyInvalid([Issue("file-missing", "$", str(exc), str(path))]) from None
        ref = {"name": policy.name, "version": policy.version, "sha256": policy.sha256}
        return JSONResponse({"policy": ref, "reloads": self.engine.reloads})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())


def _checked(name: str, data: Any) -> dict[str, Any]:
    issues = schema_issues(name, data, SourceMap(BODY))
    if issues:
        raise InputInvalid(issues)
    return data


def _refused(request: Request, exc: Exception) -> Response:
    return _refusal(exc)  # type: ignore[arg-type]


def _http_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    message = {404: f"no such endpoint `{request.url.path}`", 405: f"`{request.method}` is not allowed on `{request.url.path}`"}
    report = {"error": {"code": "usage", "message": message.get(status, str(exc.detail).lower()), "exit_code": 2, "issues": []}}
    return JSONResponse(report, status_code=status, headers=exc.headers)


def create_app(
    engine: Any,
    tokens: Tokens,
    *,
    limits: Limits | None = None,
    policy_path: str | Path | None = None,
    reload_allowed: bool = True,
) -> Starlette:
    """The service over `engine` (an `Engine`), answering callers holding one of `tokens`.

    `policy_path` is what `POST /v1/policy/reload` reads (default: the file the policy in force
    came from); `reload_allowed=False` refuses reloads (several worker processes)."""
    service = _Service(engine, limits or Limits(), policy_path, reload_allowed)
    routes = [
        Route("/v1/evaluate", service.evaluate, methods=["POST"]),
        Route("/v1/commit", service.commit, methods=["POST"]),
        Route("/v1/executions", service.executions, methods=["POST"]),
        Route("/v1/health", service.health, methods=["GET"]),
        Route("/v1/policy", service.policy, methods=["GET"]),
        Route("/v1/policy/reload", service.reload, methods=["POST"]),
        Route("/metrics", service.metrics, methods=["GET"]),
        Route("/openapi.json", service.openapi, methods=["GET"]),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Response | Awaitable[Response]]] = {
        ProtectionRulesError: _refused,
        HTTPException: _http_refused,
    }
    return Starlette(routes=routes, middleware=[Middleware(_Guard, tokens=tokens)], exception_handlers=handlers)
