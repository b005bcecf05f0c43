"""What every audit backend shares: the `AuditSink` protocol the engine writes to, the open
modes, the stand-in for a log that cannot be opened, the checks on what is appended (`LogFile`),
and the file-system plumbing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, Self

from ..errors import AuditError, os_reason
from ..postgres import redact
from ..probing import probe_result
from .chain import check_batch, check_event

DEFAULT_TIMEOUT = 30.0
Mode = Literal["append", "read"]


class AuditSink(Protocol):
    """Where the engine writes one record per decision, and others write events beside them."""

    path: str

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Write the decision records as one batch (all or none); raises `AuditError`."""

    def append_event(self, kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Write one record of another kind (`EVENT_KINDS`); return it as stored (with `hash`)."""

    def find(self, decision_id: str) -> dict[str, Any] | None:
        """The stored decision record with this id (with its `hash`), or None; raises
        `AuditError` if it does not link to its neighbours in the chain."""

    def close(self) -> None: ...

    # Optional: `probe() -> probing.probe_result(...)`, which `Engine.health()` calls when present.


class UnwritableAudit:
    """Stands in for an audit log that cannot be opened: every call fails, so every decision denies."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = redact(path), problem  # a URL's password goes no further

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        raise AuditError(self.problem)

    def append_event(self, kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        raise AuditError(self.problem)

    def find(self, decision_id: str) -> dict[str, Any] | None:
        raise AuditError(self.problem)

    def probe(self) -> dict[str, Any]:
        return probe_result(False, False, self.problem)

    def close(self) -> None:
        return None


def make_parent(path: str) -> None:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditError(f"{path}: cannot create the audit log's folder: {os_reason(exc)}") from exc


class LogFile:
    """What both audit logs share: checking what is appended, `with` support, a readable repr."""

    path: str

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append decision records as one batch (all or none); raises `AuditError`."""
        batch = check_batch(records, self.path)
        if batch:
            self._append(batch)

    def append_event(self, kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Append one record of another kind (`EVENT_KINDS`); return it as stored (with `hash`)."""
        (stored,) = self._append([check_event(kind, fields, self.path)])
        return stored

    def _append(self, batch: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Seal the checked batch onto the chain and write it; return the stored records."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"
