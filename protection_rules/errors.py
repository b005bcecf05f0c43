"""Errors as values (`Issue`) and the one exception tree, with exit codes on the classes."""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

EXIT_APPROVED = 0
EXIT_DENIED = 1
EXIT_USAGE = 2
EXIT_INVALID_INPUT = 3
EXIT_INTERNAL = 4

# Issue codes of a failure of the engine or its environment, not of the input (exit code 4)
INTERNAL_CODES = frozenset({"engine-failure", "internal-error", "state-error", "audit-error"})


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in an input document.

    `code` is stable (tests and scripts match on it); `path` is a JSON path such as
    `$.protections.holding_period.min_days`; `line` and `column` are 1-based and known
    for YAML documents and JSON syntax errors.
    """

    code: str
    path: str
    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None

    def location(self) -> str:
        """`file:line:col`, as much of it as is known; empty for input that is no file."""
        parts = [self.file or ""]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        where = self.location()
        return f"{where}: {self.path}: {self.message}" if where else f"{self.path}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "path": self.path,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
        }


class ProtectionRulesError(Exception):
    """Root of every error this package raises on purpose; the CLI maps `exit_code` in one place.

    `code` names the class in machine-readable error reports (`schemas/error.v1.schema.json`).
    """

    exit_code = EXIT_INTERNAL
    code = "internal-error"


class UsageError(ProtectionRulesError):
    """The command was called wrongly: a file that does not exist, a closed standard input."""

    exit_code = EXIT_USAGE
    code = "usage"


class InputInvalid(ProtectionRulesError):
    """A document (policy or request) that does not validate; carries every issue found."""

    exit_code = EXIT_INVALID_INPUT
    code = "input-invalid"
    kind = "input"

    def __init__(self, issues: Iterable[Issue]):
        # one message per problem, however many checks found it
        self.issues = tuple(dict.fromkeys(issues))
        count = len(self.issues)
        head = str(self.issues[0]) if self.issues else "no details"
        more = f" (and {count - 1} more)" if count > 1 else ""
        super().__init__(f"invalid {self.kind}: {head}{more}")


class PolicyInvalid(InputInvalid):
    code = "policy-invalid"
    kind = "policy"


class RequestInvalid(InputInvalid):
    code = "request-invalid"
    kind = "request"


class CasesInvalid(InputInvalid):
    """A case file of `protect test` that does not validate (or whose overrides make its policy invalid)."""

    kind = "case file"


class TargetInvalid(InputInvalid):
    """A rebalancing target (or a file of them) that does not validate; nothing was decided."""

    code = "target-invalid"
    kind = "rebalancing target"


class DecisionInvalid(InputInvalid):
    """A decision handed to `commit` that does not validate or is not the one the engine issued."""

    code = "decision-invalid"
    kind = "decision"


class AccessDenied(UsageError):
    """The decision service refused the caller: no `Authorization: Bearer` token, or a wrong one."""

    code = "unauthorized"


class TooLarge(InputInvalid):
    """A request body over a bound of the decision service: its size, a batch's length, its nesting."""

    code = "too-large"
    kind = "request body"


class Refused(ProtectionRulesError):
    """A well-formed operation the policy or the store's rules do not allow (a core limit)."""

    exit_code = EXIT_INVALID_INPUT
    code = "refused"


class EngineFailure(ProtectionRulesError):
    """The rule network failed or disagreed with its mirror; the decision must deny."""

    code = "engine-failure"


class StateError(ProtectionRulesError):
    """The state store cannot be read or written."""

    code = "state-error"


class AuditError(ProtectionRulesError):
    """The audit trail cannot be written or read."""

    code = "audit-error"


class OutputError(ProtectionRulesError):
    """A report cannot be written to the file named with `--output`."""

    code = "output-error"


class WriteError(ProtectionRulesError):
    """A file the command rewrites (`protect fmt --write`) cannot be written; it is left as it was."""

    code = "write-error"


class ServiceUnavailable(ProtectionRulesError):
    """The decision service could not be reached or did not answer (connection, timeout, HTTP 5xx).

    Nothing is known about the call: never read it as an approval."""

    code = "service-unavailable"


def error_report(exc: ProtectionRulesError) -> dict[str, Any]:
    """The error as schemas/error.v1.schema.json describes it (the CLI's `--format json` and the service)."""
    issues = [issue.to_dict() for issue in getattr(exc, "issues", ())]
    return {"error": {"code": exc.code, "message": str(exc), "exit_code": exc.exit_code, "issues": issues}}


def error_from_report(report: Any) -> ProtectionRulesError | None:
    """The error an error.v1 document describes, as the class of its `code` (None: not one)."""
    error = report.get("error") if isinstance(report, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        return None
    cls = _BY_CODE.get(error["code"], ProtectionRulesError)
    if issubclass(cls, InputInvalid):
        issues = [Issue(**issue) for issue in error.get("issues") or () if isinstance(issue, dict)]
        return cls(issues)
    return cls(str(error.get("message") or error["code"]))


def _classes(root: type[ProtectionRulesError]) -> list[type[ProtectionRulesError]]:
    return [root, *(found for sub in root.__subclasses__() for found in _classes(sub))]


def os_reason(exc: BaseException) -> str:
    """Why an operation on a file failed, in words (for an OSError; any other error's text)."""
    code = getattr(exc, "errno", None) or 0
    return {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EISDIR: "it is a folder",
        errno.ENOTDIR: "a parent of it is a file, not a folder",
        errno.EEXIST: "a parent of it is a file, not a folder",
        errno.ENOENT: "no such file or folder",
    }.get(code, (getattr(exc, "strerror", None) or str(exc)).lower())


# error.v1 `code` -> class; the root keeps `internal-error`, a subclass sharing a code does not replace it
_BY_CODE: dict[str, type[ProtectionRulesError]] = {}
for _cls in _classes(ProtectionRulesError):
    _BY_CODE.setdefault(_cls.code, _cls)
