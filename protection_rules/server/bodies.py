"""Request bodies of the decision service, read within bounds and parsed like the CLI's input.

A body is read up to `max_body` bytes and no further (a declared `Content-Length` over it is
refused before anything is read); then decoded and parsed by `loading` (strict JSON: no NaN,
no duplicate keys, numbers within bounds), so an unparsable body gets the same issues
`protect evaluate` prints. Nesting deeper than `max_depth` and a batch longer than `max_batch`
are refused too: each bound is `TooLarge` (HTTP 413), a body that is not JSON `BodyMalformed`
(400).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from ..errors import InputInvalid, Issue, TooLarge
from ..loading import NestedTooDeeply, decode, load_json
from ..reading import DocumentInvalid

BODY = "<body>"  # the name issues give a request body


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds on a request body: bytes, nesting depth (a request needs 5), requests in a batch."""

    max_body: int = 16 * 1024 * 1024
    max_depth: int = 32
    max_batch: int = 10_000


class BodyMalformed(InputInvalid):
    """A body that is not JSON at all (HTTP 400); a JSON body of the wrong shape is `InputInvalid` (422)."""

    kind = "request body"


async def read_body(request: Request, limits: Limits) -> bytes:
    """The whole body, or `TooLarge` as soon as it passes `max_body` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body:
        raise _too_large(f"the body is {int(declared)} bytes, over the limit of {limits.max_body}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body:
            raise _too_large(f"the body is over the limit of {limits.max_body} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(raw: bytes, limits: Limits) -> Any:
    """The JSON document of a body, nested at most `max_depth` deep."""
    if not raw.strip():
        raise BodyMalformed([Issue("body-empty", "$", "the body is empty: a JSON document is expected", BODY)])
    try:
        data = load_json(decode(raw, BODY), BODY)
    except NestedTooDeeply:
        raise _too_large(f"the body is nested deeper than {limits.max_depth} levels") from None
    except DocumentInvalid as exc:
        raise BodyMalformed(exc.issues) from None
    if _deeper_than(data, limits.max_depth):
        raise _too_large(f"the body is nested deeper than {limits.max_depth} levels")
    return data


def batch_requests(data: Any, limits: Limits) -> list[Any] | None:
    """The requests of a batch body (`{"requests": [...]}`), None for a single request object.

    Each request is the engine's to judge (an invalid one is a deny, as in the CLI); only a body
    that is neither a request object nor a batch is refused here."""
    if not isinstance(data, dict):
        raise InputInvalid([Issue("schema-type", "$", 'the body must be a request object or {"requests": [...]}', BODY)])
    if "requests" not in data:
        return None
    requests = data["requests"]
    extra = sorted(set(data) - {"requests"})
    issues = [
        Issue("schema-unknown-field", f"$.{key}", f"`{key}` is not a field of a batch (only `requests`)", BODY) for key in extra
    ]
    if not isinstance(requests, list):
        issues.append(Issue("schema-type", "$.requests", "`requests` must be an array of request objects", BODY))
    if issues:
        raise InputInvalid(issues)
    if len(requests) > limits.max_batch:
        raise _too_large(f"the batch has {len(requests)} requests, over the limit of {limits.max_batch}")
    return requests


def _too_large(message: str) -> TooLarge:
    return TooLarge([Issue("body-too-large", "$", message, BODY)])


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether containers nest more than `limit` deep (the document itself is level 1)."""
    level, current = 1, [data]
    while current:
        nested = [
            child
            for node in current
            for child in (node.values() if isinstance(node, dict) else node if isinstance(node, list) else ())
            if isinstance(child, (dict, list))
        ]
        if nested:
            level += 1
            if level > limit:
                return True
        current = nested
    return False
