"""Who may call the decision service: bearer tokens from the file `$PROTECT_TOKENS_FILE`.

One token a line; blank lines and lines starting with `#` are skipped. A line
`sha256:<64 hex digits>` is a token kept hashed at rest (`printf %s TOKEN | sha256sum`); any
other line is the token itself. Every token is held as its sha256 digest and a presented token
is compared with each of them in constant time, so neither a match's position nor its prefix
shows in the answer's timing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputInvalid, Issue, UsageError
from ..loading import read_text

TOKENS_ENV = "PROTECT_TOKENS_FILE"
HASHED_PREFIX = "sha256:"
MIN_TOKEN_LENGTH = 16  # a guessable token is no access control
_HEX_DIGEST = re.compile(r"^[0-9a-fA-F]{64}$")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII without spaces: what a header carries unchanged


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Tokens:
    """The accepted tokens, as sha256 digests; `accepts(authorization_header)`."""

    def __init__(self, digests: Iterable[bytes]):
        self._digests = tuple(digests)
        if not self._digests:
            raise UsageError("no access tokens: the service would refuse every call")

    @classmethod
    def of(cls, tokens: Iterable[str]) -> Tokens:
        """From tokens in plain text (tests, embedding)."""
        return cls(token_digest(token) for token in tokens)

    @classmethod
    def parse(cls, text: str, source: str) -> Tokens:
        """From a tokens file's text; every bad line is reported (`InputInvalid`), none half-read."""
        digests, issues = [], []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith(HASHED_PREFIX):
                hashed = line.removeprefix(HASHED_PREFIX)
                if _HEX_DIGEST.match(hashed):
                    digests.append(bytes.fromhex(hashed))
                    continue
                problem = "a hashed token is `sha256:` and 64 hexadecimal digits"
            elif not _TOKEN.match(line):
                problem = "a token is printable ASCII without spaces"
            elif len(line) < MIN_TOKEN_LENGTH:
                problem = f"a token has at least {MIN_TOKEN_LENGTH} characters"
            else:
                digests.append(token_digest(line))
                continue
            # the line itself is a secret: never echo it
            issues.append(Issue("token-invalid", f"$[{number - 1}]", problem, source, number))
        if issues:
            raise InputInvalid(issues)
        if not digests:
            raise UsageError(f"{source}: no access tokens in the file: the service would refuse every call")
        return cls(digests)

    def accepts(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header value is `Bearer <an accepted token>`."""
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        presented = token_digest(token)
        found = False
        for digest in self._digests:  # every one, without stopping at a match
            found |= hmac.compare_digest(digest, presented)
        return found


def load_tokens(path: str | Path | None = None) -> Tokens:
    """The tokens of `path`, else of `$PROTECT_TOKENS_FILE`; neither given, or no such file: `UsageError`."""
    target = path or os.environ.get(TOKENS_ENV)
    if not target:
        raise UsageError(f"{TOKENS_ENV} is not set: name a file of access tokens, one a line")
    if not Path(target).exists():
        raise UsageError(f"{target}: no such file")
    return Tokens.parse(read_text(target), str(target))
