"""Decide recorded requests again, exactly: the request as received, the state the store gave
the engine then (recorded beside it), its own `current_date`, a policy rebuilt from its text.

`protect audit replay` re-decides each audit record under the policy it names and reports every
record whose decision differs from the one recorded; `impact.py` decides a corpus under two
policies with the same `Replayer`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .audit import RecordFilter, open_audit
from .compiler import compile_policy
from .corpus import Corpus, CorpusItem, audit_items
from .engine import Engine
from .errors import RequestInvalid, StateError
from .models import AssetState, CoreDesignation, GraceState, PositionEvent, ProtectionDecision, StateChange
from .parallel import chunked, ordered_map
from .policy_source import PolicySource

CHUNK = 250
# Per run, not per decision: ids drawn at random, the time taken, the engine that ran, and where
# the request was read from (`errors[].file`: a file name, a `file:line`, the state store's path).
VOLATILE = ("decision_id", "trace_id", "decision_time_ms", "engine_version", "errors[].file")
POLICY_NOT_GIVEN = "policy-not-given"
_STATE_KEYS = frozenset({"core", "grace", "events", "last_override_at"})


class SnapshotStore:
    """The state store of a replay: it answers with the state recorded beside the request being
    decided (`hold`), as the real store answered then; it is never written."""

    path = "recorded state snapshot"

    def __init__(self) -> None:
        self._state: AssetState | None = None
        self._problem: str | None = None

    def hold(self, snapshot: Mapping[str, Any] | None) -> None:
        self._state, self._problem = None, None
        if snapshot is not None:
            try:
                self._state = snapshot_state(snapshot)
            except (RequestInvalid, TypeError, ValueError, AttributeError) as exc:
                self._problem = str(exc)

    def load(self, asset: str) -> AssetState | None:
        if self._problem is not None:
            raise StateError(f"the state recorded beside the request is not a state: {self._problem}")
        return self._state

    def apply(self, changes: Sequence[StateChange], decision_id: str) -> bool:
        raise StateError("a replay never changes state")


def snapshot_state(snapshot: Mapping[str, Any]) -> AssetState:
    """A recorded `state` (`AssetState.to_dict()`) as the store gave it: same events, same order."""
    unknown = set(snapshot) - _STATE_KEYS
    if unknown:
        raise ValueError(f"unknown field `{sorted(unknown)[0]}`")
    core, grace = snapshot.get("core"), snapshot.get("grace")
    return AssetState(
        core=CoreDesignation(**core) if core else None,
        grace=GraceState(**grace) if grace else None,
        events=tuple(PositionEvent(**event) for event in snapshot.get("events") or ()),
        last_override_at=snapshot.get("last_override_at"),
    )


class Replayer:
    """An engine for one policy text, with no audit trail and the recorded state as its store."""

    def __init__(self, source: PolicySource):
        self.store = SnapshotStore()
        self.engine = Engine(compile_policy(source.load()), state=self.store, audit=None)

    def decide(self, request: Any, snapshot: Mapping[str, Any] | None) -> ProtectionDecision:
        self.store.hold(snapshot)
        return self.engine.evaluate(request)


# ------------------------------------------------------------------------------ audit replay


@dataclass(frozen=True, slots=True)
class Difference:
    """A record whose replayed decision differs: each differing field, recorded vs replayed."""

    label: str
    decision_id: Any
    asset: Any
    action: Any
    fields: tuple[tuple[str, Any, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "record": self.label,
            "decision_id": self.decision_id,
            "asset": self.asset,
            "action": self.action,
            "fields": [{"path": path, "recorded": old, "replayed": new} for path, old, new in self.fields],
        }


@dataclass
class ReplayReport:
    audit: str
    records: int = 0
    replayed: int = 0
    differences: list[Difference] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    missing_policies: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "audit": self.audit,
            "records": self.records,
            "replayed": self.replayed,
            "differ": len(self.differences),
            "ignored_fields": list(VOLATILE),
            "skipped": dict(sorted(self.skipped.items())),
            "policies_not_given": dict(sorted(self.missing_policies.items())),
            "differences": [d.to_dict() for d in self.differences],
        }


def replay_audit(
    audit_path: str,
    policies: Sequence[PolicySource],
    *,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Re-decide every decision record of the audit trail under the policy it names (by sha256
    among `policies`) and collect each record whose decision differs from the one recorded,
    ignoring the `VOLATILE` fields. Records under a policy not given, and requests that were
    never parsed, are counted in `skipped`."""
    by_hash = {source.load().sha256: source for source in policies}
    with open_audit(audit_path, mode="read") as log:
        report = ReplayReport(log.path)  # a URL's password stays out of the report
        corpus = Corpus("replay", log.path, 0)
        items = audit_items(corpus, _counted(report, log.query(RecordFilter(kind="decision"))), skip_invalid=False)
        given = _with_policy(report, items, by_hash)
        for chunk, results in ordered_map(
            _replay_chunk,
            chunked(given, CHUNK),
            setup=_LazyReplayers,
            setup_args=(by_hash,),
            workers=workers,
            send=_sent,
            progress=progress,
        ):
            report.replayed += len(chunk)
            report.differences += [
                Difference(
                    item.label, _get(item.recorded, "decision_id"), item.request.get("asset"), item.request.get("action"), diff
                )
                for item, diff in zip(chunk, results, strict=True)
                if diff
            ]
    report.skipped.update(corpus.skipped)
    return report


def _counted(report: ReplayReport, records: Iterator[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for record in records:
        report.records += 1
        yield record


def _with_policy(report: ReplayReport, items: Iterator[CorpusItem], by_hash: Mapping[str, PolicySource]) -> Iterator[CorpusItem]:
    for item in items:
        if item.policy_sha256 in by_hash:
            yield item
        else:
            report.skipped[POLICY_NOT_GIVEN] += 1
            report.missing_policies[str(item.policy_sha256)] += 1


class _LazyReplayers(dict[str, Replayer]):
    """One replayer per policy, built when a record first needs it."""

    def __init__(self, sources: Mapping[str, PolicySource]):
        super().__init__()
        self.sources = sources

    def __missing__(self, sha256: str) -> Replayer:
        self[sha256] = replayer = Replayer(self.sources[sha256])
        return replayer


def _sent(chunk: Sequence[CorpusItem]) -> list[tuple[Any, ...]]:
    # plain tuples pickle twice as fast as the dataclass
    return [(item.policy_sha256, item.request, item.snapshot, item.recorded) for item in chunk]


def _replay_chunk(replayers: _LazyReplayers, chunk: Sequence[tuple[Any, ...]]) -> list[tuple[tuple[str, Any, Any], ...]]:
    return [
        tuple(differences(recorded, replayers[sha256].decide(request, snapshot).to_dict()))
        for sha256, request, snapshot, recorded in chunk
    ]


def differences(recorded: Any, replayed: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """Each leaf where the recorded decision and the replayed one differ, as (path, recorded,
    replayed), the `VOLATILE` fields left out. Values compare as JSON (so `1` is not `1.0`)."""
    if not isinstance(recorded, Mapping):
        return [("$", recorded, "(a decision)")]
    old, new = _stable(recorded), _stable(replayed)
    if _json(old) == _json(new):  # the usual case, in C: walk only a decision that differs
        return []
    return list(_leaves_differing(old, new, "$"))


def _stable(decision: Mapping[str, Any]) -> dict[str, Any]:
    out = {key: value for key, value in decision.items() if key not in VOLATILE}
    if isinstance(out.get("errors"), list):
        out["errors"] = [
            {k: v for k, v in error.items() if k != "file"} if isinstance(error, dict) else error for error in out["errors"]
        ]
    return out


def _leaves_differing(old: Any, new: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in dict.fromkeys([*old, *new]):
            yield from _leaves_differing(old.get(key, _MISSING), new.get(key, _MISSING), f"{path}.{key}")
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new) and not _scalars(old, new):
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            yield from _leaves_differing(a, b, f"{path}[{index}]")
    elif _json(old) != _json(new):
        yield path, _shown(old), _shown(new)


_MISSING: Any = object()


def _scalars(*lists: list[Any]) -> bool:
    # a list of names (`blocking_systems`, `rules`) reads best whole
    return all(not isinstance(item, (dict, list)) for values in lists for item in values)


def _json(value: Any) -> str:
    return "(absent)" if value is _MISSING else json.dumps(value, sort_keys=True)


def _shown(value: Any) -> Any:
    return "(absent)" if value is _MISSING else value


def _get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, Mapping) else None
