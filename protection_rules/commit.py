"""Committing a decision: apply the state changes the engine decided, and nothing else.

A decision is a document a caller hands back, so it could have been edited: a `grace_started`
moved to another asset, a year-2999 instant, an invented decision id. So the decision is looked
up by `decision_id` where the engine put it, and the state changes applied are the ones found
there, after checking that the document handed in is exactly that decision:

- `AuditedDecisions`: the audit trail (the engine records every decision before returning it);
  the document must be exactly the recorded decision;
- `IssuedDecisions`: for an engine without an audit trail (`audit=None`), the state changes of
  the decisions it issued itself, the most recent `capacity` that change state, kept in memory
  (only the changes: whole decisions would cost megabytes); the document's `decision_id` and
  `state_changes` must be exactly those.

A decision that cannot be found, or that differs from what was recorded, is refused with
`DecisionInvalid` (exit 3) and nothing is stored.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from .errors import DecisionInvalid, Issue
from .loading import SourceMap
from .models import ProtectionDecision, StateChange
from .validation import schema_issues

if TYPE_CHECKING:
    from .state import StateStore

# Added by renderers (the input line of a batch), not part of the decision itself.
PRESENTATION_KEYS = frozenset({"line"})
MAX_DIFFERENCES = 10


class DecisionSource(Protocol):
    """Where the decisions an engine issued can be found again by id."""

    where: str  # named in the refusal of a decision that is not found
    partial: bool  # keeps only part of each decision (`decision_id` and `state_changes`)

    def find(self, decision_id: str) -> Mapping[str, Any] | None:
        """The decision as issued (`ProtectionDecision.to_dict()` shape, or the part of it the
        source keeps: at least `decision_id` and `state_changes`), or None."""


class AuditedDecisions:
    """Decisions as recorded in an audit trail."""

    partial = False

    def __init__(self, audit: Any):
        self.audit = audit
        self.where = f"the audit trail {audit.path}"

    def find(self, decision_id: str) -> Mapping[str, Any] | None:
        record = self.audit.find(decision_id)
        return None if record is None else record.get("decision_record")


class IssuedDecisions:
    """The decisions with state changes an engine issued, newest `capacity` kept (thread-safe)."""

    partial = True

    def __init__(self, capacity: int = 10_000):
        self.capacity = capacity
        self.where = f"the decisions this engine issued (the last {capacity:,} that change state)"
        self._kept: OrderedDict[str, tuple[StateChange, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, decision: ProtectionDecision) -> None:
        if not decision.state_changes:
            return
        with self._lock:
            self._kept[decision.decision_id] = decision.state_changes
            if len(self._kept) > self.capacity:
                self._kept.popitem(last=False)

    def find(self, decision_id: str) -> Mapping[str, Any] | None:
        with self._lock:
            kept = self._kept.get(decision_id)
        if kept is None:
            return None
        return {"decision_id": decision_id, "state_changes": [change.to_dict() for change in kept]}


@dataclasses.dataclass(frozen=True, slots=True)
class Checked:
    """What committing a checked decision applies: its recorded state changes, under its id."""

    decision_id: str
    state_changes: tuple[StateChange, ...]


class Committer:
    """Applies decisions found in `source` to `store`, once per decision id."""

    def __init__(self, store: StateStore, source: DecisionSource):
        self.store = store
        self.source = source

    def commit(self, decision: ProtectionDecision | Mapping[str, Any], *, source: str | None = None) -> bool:
        """Apply the recorded state changes of `decision`; False when it was already committed.

        Raises `DecisionInvalid` for a document that is not a decision, that is not found in the
        source, or that differs from the decision found there; then nothing is stored."""
        return self.apply(self.check(decision, source=source))

    def check(self, decision: ProtectionDecision | Mapping[str, Any] | str, *, source: str | None = None) -> Checked | None:
        """The state changes as recorded, once `decision` is shown to be that decision (None:
        nothing to apply). A decision id (text) names the recorded decision itself: there is no
        document to compare, and what is applied is still only what the source holds.

        `source` names where the document came from (a file, `file:line`) in the issues."""
        with _named(source):
            if isinstance(decision, str):
                return self._recorded(decision)
            return self._check(decision_document(decision))

    def _recorded(self, decision_id: str) -> Checked:
        recorded = self.source.find(decision_id)
        if recorded is None:
            raise self._not_recorded(decision_id)
        return Checked(decision_id, tuple(StateChange.from_dict(change) for change in recorded["state_changes"]))

    def _not_recorded(self, decision_id: str) -> DecisionInvalid:
        return DecisionInvalid(
            [
                Issue(
                    "decision-not-recorded",
                    "$.decision_id",
                    f"`{decision_id}` is not in {self.source.where}; only a decision the engine issued can be committed",
                )
            ]
        )

    def _check(self, given: dict[str, Any]) -> Checked | None:
        decision_id = given["decision_id"]
        recorded = self.source.find(decision_id)
        if recorded is None:
            if not given["state_changes"] and self.source.partial:
                return None  # it changes nothing, and was not kept to check it against
            raise self._not_recorded(decision_id)
        # a source that keeps part of each decision is compared on that part
        compared = {key: given[key] for key in recorded if key in given} if self.source.partial else given
        differences = list(_differences(_plain(recorded), compared, "$"))
        if differences:
            raise DecisionInvalid(differences[:MAX_DIFFERENCES])
        return Checked(decision_id, tuple(StateChange.from_dict(change) for change in recorded["state_changes"]))

    def apply(self, checked: Checked | None) -> bool:
        """Apply a checked decision's state changes once per decision id."""
        if checked is None:
            return False
        return self.store.apply(checked.state_changes, checked.decision_id)


def decision_document(decision: ProtectionDecision | Mapping[str, Any], *, source: str | None = None) -> dict[str, Any]:
    """The decision as plain JSON data, checked against the decision schema (`DecisionInvalid`)."""
    if isinstance(decision, ProtectionDecision):
        return _plain(decision.to_dict())
    if not isinstance(decision, Mapping):
        raise DecisionInvalid([Issue("schema-type", "$", "a decision must be a JSON object", source)])
    document = {key: value for key, value in decision.items() if key not in PRESENTATION_KEYS}
    issues = schema_issues("decision", document, SourceMap(source))
    if issues:
        raise DecisionInvalid(issues)
    return _plain(document)


@contextmanager
def _named(source: str | None) -> Iterator[None]:
    """Name `source` (a file, `file:line`) in the issues of a refusal raised inside."""
    try:
        yield
    except DecisionInvalid as exc:
        if source is None:
            raise
        raise DecisionInvalid([dataclasses.replace(issue, file=issue.file or source) for issue in exc.issues]) from None


def _plain(value: Any) -> Any:
    """The JSON form, so a tuple and a list, or 1 and 1.0 written out, compare as JSON does."""
    return json.loads(json.dumps(value, allow_nan=False))


def _differences(recorded: Any, given: Any, path: str) -> Iterator[Issue]:
    if isinstance(recorded, dict) and isinstance(given, dict):
        for key in sorted(set(recorded) | set(given)):
            if key not in given:
                yield _differs(f"{path}.{key}", "is missing", recorded[key])
            elif key not in recorded:
                yield Issue("decision-differs", f"{path}.{key}", "is not in the recorded decision")
            else:
                yield from _differences(recorded[key], given[key], f"{path}.{key}")
    elif isinstance(recorded, list) and isinstance(given, list) and len(recorded) == len(given):
        for index, (want, have) in enumerate(zip(recorded, given, strict=True)):
            yield from _differences(want, have, f"{path}[{index}]")
    elif recorded != given or type(recorded) is not type(given):
        yield _differs(path, f"is `{_short(given)}`", recorded)


def _differs(path: str, what: str, recorded: Any) -> Issue:
    return Issue("decision-differs", path, f"{what} but the recorded decision has `{_short(recorded)}`")


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
