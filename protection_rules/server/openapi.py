"""`GET /openapi.json`: the service's OpenAPI 3.1 document, built from the shipped JSON Schemas.

The bodies are the schemas in schemas/ themselves (OpenAPI 3.1 speaks JSON Schema 2020-12):
each becomes a component, its `$defs` components of their own, and every `$ref` (inside a
file, or to another file) is pointed at the component, so the document holds no second copy
of any schema to drift from the CLI's.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from .. import __version__
from ..resources import schema

# component name -> shipped schema
SCHEMAS = {
    "request": "request",
    "decision": "decision",
    "error": "error",
    "evaluate_batch": "evaluate-batch",
    "commit_request": "commit-request",
    "execution": "execution",
    "policy": "policy",
}
_FILES = {f"{name}.v1.schema.json": component for component, name in SCHEMAS.items()}


def _ref(component: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{component}"}


def _json(body: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": body}}}


def _answer(description: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, **(_json(body) if body is not None else {})}


_REFUSED = {
    "400": _answer("The body is not JSON (the issues say where).", _ref("error")),
    "401": _answer("No bearer token, or a wrong one: nothing was done.", _ref("error")),
    "413": _answer("The body is over a bound: its size, its nesting or the batch's length.", _ref("error")),
    "422": _answer("The body is JSON of the wrong shape (every issue listed).", _ref("error")),
    "500": _answer("An unexpected failure; no details leave the server.", _ref("error")),
}
_OBJECT: dict[str, Any] = {"type": "object"}
_POLICY_REF = {
    "type": "object",
    "required": ["name", "version", "sha256"],
    "properties": {"name": {"type": "string"}, "version": {"type": "string"}, "sha256": {"type": "string"}},
}


def _operation(
    summary: str, answers: dict[str, Any], *, body: dict[str, Any] | None = None, public: bool = False
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": answers}
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(body)}
    if public:
        operation["security"] = []
    return operation


def _paths() -> dict[str, Any]:
    decisions = {
        "type": "object",
        "required": ["decisions"],
        "properties": {"decisions": {"type": "array", "items": _ref("decision")}},
    }
    return {
        "/v1/evaluate": {
            "post": _operation(
                'Decide one request (a decision) or a batch (`{"decisions": [...]}` in order); every decision is recorded first',
                {
                    "200": _answer(
                        "The decision(s); a failure inside a decision is a deny with `error`.",
                        {"oneOf": [_ref("decision"), decisions]},
                    ),
                    **_REFUSED,
                },
                body={"oneOf": [_ref("request"), _ref("evaluate_batch")]},
            )
        },
        "/v1/commit": {
            "post": _operation(
                "Apply a recorded decision's state changes once (idempotent by decision id)",
                {
                    "200": _answer(
                        "Applied, or committed before (`applied: false`).",
                        {
                            "type": "object",
                            "required": ["decision_id", "applied"],
                            "properties": {"decision_id": {"type": "string"}, "applied": {"type": "boolean"}},
                        },
                    ),
                    "503": _answer("The state store or the audit trail cannot be used now; retry.", _ref("error")),
                    **_REFUSED,
                },
                body=_ref("commit_request"),
            )
        },
        "/v1/executions": {
            "post": _operation(
                "Record an executed open or close",
                {
                    "201": _answer(
                        "Recorded.",
                        {
                            "type": "object",
                            "required": ["asset", "recorded", "at"],
                            "properties": {
                                "asset": {"type": "string"},
                                "recorded": {"enum": ["open", "close"]},
                                "at": {"type": "string"},
                            },
                        },
                    ),
                    "503": _answer("The state store cannot be written now.", _ref("error")),
                    **_REFUSED,
                },
                body=_ref("execution"),
            )
        },
        "/v1/health": {
            "get": _operation(
                "The engine's health (no token needed)",
                {
                    "200": _answer("`ok` or `degraded`.", _OBJECT),
                    "503": _answer("`failing`: decisions would be denials by error.", _OBJECT),
                },
                public=True,
            )
        },
        "/v1/policy": {
            "get": _operation(
                "The policy in force",
                {
                    "200": _answer(
                        "Its name, version and sha256, where it was read from, the reloads so far and the document.",
                        {
                            "type": "object",
                            "required": ["policy", "source", "reloads", "document"],
                            "properties": {
                                "policy": _POLICY_REF,
                                "source": {"type": "string"},
                                "reloads": {"type": "integer"},
                                "document": _ref("policy"),
                            },
                        },
                    ),
                    "401": _REFUSED["401"],
                },
            )
        },
        "/v1/policy/reload": {
            "post": _operation(
                "Read the policy file again and put it in force; an invalid one leaves the policy in force",
                {
                    "200": _answer(
                        "In force.",
                        {
                            "type": "object",
                            "required": ["policy", "reloads"],
                            "properties": {"policy": _POLICY_REF, "reloads": {"type": "integer"}},
                        },
                    ),
                    "409": _answer("Reload is refused under several workers (restart the service).", _ref("error")),
                    **_REFUSED,
                },
            )
        },
        "/metrics": {
            "get": _operation(
                "The engine's metrics in the Prometheus text format",
                {
                    "200": {"description": "Prometheus exposition.", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "401": _REFUSED["401"],
                },
            )
        },
        "/openapi.json": {"get": _operation("This document", {"200": _answer("OpenAPI 3.1.", _OBJECT), "401": _REFUSED["401"]})},
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The whole document (built once; callers must not change it)."""
    components: dict[str, Any] = {}
    for component, name in SCHEMAS.items():
        body = copy.deepcopy(schema(name))
        for key in ("$schema", "$id"):
            body.pop(key, None)
        for definition, value in body.pop("$defs", {}).items():
            components[f"{component}.{definition}"] = _repointed(value, component)
        components[component] = _repointed(body, component)
    return {
        "openapi": "3.1.0",
        "info": {"title": "protection-rules decision service", "version": __version__},
        "paths": _paths(),
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _repointed(value: Any, component: str) -> Any:
    if isinstance(value, dict):
        out = {key: _repointed(item, component) for key, item in value.items()}
        ref = out.get("$ref")
        if isinstance(ref, str):
            if ref.startswith("#/$defs/"):
                out["$ref"] = f"#/components/schemas/{component}.{ref.removeprefix('#/$defs/')}"
            elif ref in _FILES:
                out["$ref"] = f"#/components/schemas/{_FILES[ref]}"
        return out
    if isinstance(value, list):
        return [_repointed(item, component) for item in value]
    return value
