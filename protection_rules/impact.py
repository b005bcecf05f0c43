"""What a policy change does: decide a corpus under the old and the new policy and group every
decision that changes by what changed it.

A decision changes when its verdict flips (`approve-to-deny`, `deny-to-approve`), when it
stays a denial with other blocking protections (`blocking-systems`), or stays an approval that
now needs an override or no longer does (`override-applied`, `override-removed`). Changes are
grouped by that category and their cause: the protections whose trace status differs
(`holding_period: pass -> block`), shown with the static diff's changes to those protections.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Literal, NamedTuple

from . import __version__
from .corpus import INVALID, Corpus, CorpusItem, CorpusKind, open_corpus
from .errors import INTERNAL_CODES
from .models import ProtectionDecision
from .parallel import chunked, ordered_map
from .policy_diff import Change, PolicyDiff
from .policy_source import PolicySource
from .replay import CHUNK, Replayer

Category = Literal["approve-to-deny", "deny-to-approve", "blocking-systems", "override-applied", "override-removed"]
CATEGORIES: tuple[Category, ...] = (
    "approve-to-deny",
    "deny-to-approve",
    "blocking-systems",
    "override-applied",
    "override-removed",
)
FAIL_ON: dict[str, frozenset[Category]] = {
    "approve-to-deny": frozenset({"approve-to-deny"}),
    "deny-to-approve": frozenset({"deny-to-approve"}),
    "any": frozenset(CATEGORIES),
}
Transition = tuple[str, str, str]  # (protection, old status, new status)
Brief = tuple[str, tuple[str, ...], bool]  # (decision, blocking systems, override applied)
Changed = tuple[Category, tuple[Transition, ...], Brief, Brief]


@dataclass
class Group:
    """The decisions that changed the same way for the same cause."""

    category: Category
    transitions: tuple[Transition, ...]
    parameters: tuple[Change, ...]
    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "change": self.category,
            "count": self.count,
            "protections": [{"name": name, "old": old, "new": new} for name, old, new in self.transitions],
            "parameters": [change.to_dict() for change in self.parameters],
            "examples": self.examples,
        }


@dataclass
class Impact:
    corpora: list[Corpus]
    decided: int = 0
    counts: dict[Category, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    groups: dict[tuple[Category, tuple[Transition, ...]], Group] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(self.counts.values())

    def fails(self, fail_on: str | None) -> bool:
        """Whether a `--fail-on` gate (`approve-to-deny`, `deny-to-approve`, `any`) trips."""
        return fail_on is not None and any(self.counts[category] for category in FAIL_ON[fail_on])

    def ordered_groups(self) -> list[Group]:
        return sorted(self.groups.values(), key=lambda g: (CATEGORIES.index(g.category), -g.count, g.transitions))

    def to_dict(self) -> dict[str, Any]:
        return {
            "corpora": [corpus.to_dict() for corpus in self.corpora],
            "decided": self.decided,
            "changed": self.changed,
            "counts": dict(self.counts),
            "groups": [group.to_dict() for group in self.ordered_groups()],
        }


def measure_impact(
    old: PolicySource,
    new: PolicySource,
    diff: PolicyDiff,
    corpora: Sequence[tuple[CorpusKind, str]],
    *,
    workers: int = 1,
    examples: int = 3,
    progress: Callable[[int], None] | None = None,
) -> Impact:
    """Decide every request of the corpora (in order) under both policies; see the module doc.

    `diff` must be the difference of the policies `old` and `new` hold."""
    with ExitStack() as stack:
        opened = [stack.enter_context(open_corpus(kind, path, index)) for index, (kind, path) in enumerate(corpora)]
        impact = Impact(opened)
        items = _known_outcomes(chain.from_iterable(corpus.items for corpus in opened), diff.old.sha256)
        for chunk, results in ordered_map(
            _decide_chunk,
            chunked(items, CHUNK),
            setup=_pair,
            setup_args=(old, new),
            workers=workers,
            send=_sent,
            progress=progress,
        ):
            for (item, _), result in zip(chunk, results, strict=True):
                _tally(impact, diff, item, result, examples)
    return impact


def _tally(impact: Impact, diff: PolicyDiff, item: CorpusItem, result: Changed | str | None, examples: int) -> None:
    if result == INVALID:
        impact.corpora[item.corpus].skipped[INVALID] += 1
        return
    impact.decided += 1
    impact.corpora[item.corpus].decided += 1
    if result is None or isinstance(result, str):
        return
    category, transitions, old, new = result
    impact.counts[category] += 1
    group = impact.groups.get((category, transitions))
    if group is None:
        group = impact.groups[(category, transitions)] = Group(category, transitions, cause(diff, transitions))
    group.count += 1
    if len(group.examples) < examples:
        group.examples.append(_example(item, old, new))


def cause(diff: PolicyDiff, transitions: Sequence[Transition]) -> tuple[Change, ...]:
    """The static changes that explain a group: those of the protections whose status changed,
    and of `regime_override` when an override is involved; else the changes to no protection
    in particular (the hierarchy)."""
    names = {name for name, _, _ in transitions}
    if any("overridden" in (old, new) for _, old, new in transitions):
        names.add("regime_override")
    found = diff.for_protections(names)
    return tuple(
        found or [change for change in diff.changes if change.protection is None and change.kind not in ("metadata", "alerts")]
    )


def _example(item: CorpusItem, old: Brief, new: Brief) -> dict[str, Any]:
    request = item.request
    return {
        "source": item.label,
        "request_id": request.get("request_id"),
        "asset": request.get("asset"),
        "action": request.get("action"),
        "current_date": request.get("current_date"),
        "old": _brief_dict(old),
        "new": _brief_dict(new),
    }


def _brief_dict(brief: Brief) -> dict[str, Any]:
    decision, blocking, override = brief
    return {"decision": decision, "blocking_systems": list(blocking), "override_applied": override}


# ------------------------------------------------------------------------ outcomes compared


class Outcome(NamedTuple):
    """What the comparison reads of a decision: the verdict, the blockers, the override, each
    protection's trace status, and whether the request was rejected as invalid."""

    decision: str
    blocking: tuple[str, ...]
    override: bool
    statuses: tuple[tuple[str, str], ...]
    invalid: bool = False

    @classmethod
    def of(cls, decision: ProtectionDecision) -> Outcome:
        return cls(
            decision.decision,
            decision.blocking_systems,
            decision.override_applied,
            tuple((entry.system, entry.status) for entry in decision.trace),
            any(issue.code not in INTERNAL_CODES for issue in decision.errors),
        )

    @classmethod
    def recorded(cls, record: Mapping[str, Any]) -> Outcome:
        """From a recorded decision (`decision_record`, decision.v1 JSON)."""
        return cls(
            record["decision"],
            tuple(record["blocking_systems"]),
            record["override_applied"],
            tuple((entry["system"], entry["status"]) for entry in record["trace"]),
        )

    @property
    def brief(self) -> Brief:
        return self.decision, self.blocking, self.override


def _known_outcomes(items: Iterator[CorpusItem], old_sha256: str) -> Iterator[tuple[CorpusItem, Outcome | None]]:
    """Each item with OLD's outcome when its record already holds it: decided under OLD by this
    engine version without error, the recorded decision is the one OLD gives again (`protect
    audit replay` checks exactly that), so it is not decided twice."""
    for item in items:
        record = item.recorded
        known = None
        if (
            isinstance(record, Mapping)
            and item.policy_sha256 == old_sha256
            and record.get("engine_version") == __version__
            and not record.get("errors")
        ):
            known = Outcome.recorded(record)
        yield item, known


def compare(old: Outcome, new: Outcome) -> Changed | str | None:
    """How the decision changed (None: it did not), or `INVALID` for a request that does not
    validate (it denies under any policy)."""
    if old.invalid:
        return INVALID
    category = _category(old, new)
    if category is None:
        return None
    before, after = dict(old.statuses), dict(new.statuses)
    transitions = tuple(
        (name, before.get(name, "absent"), after.get(name, "absent"))
        for name in dict.fromkeys([*after, *before])
        if before.get(name) != after.get(name)
    )
    return category, transitions, old.brief, new.brief


def _category(old: Outcome, new: Outcome) -> Category | None:
    if old.decision != new.decision:
        return "approve-to-deny" if old.decision == "approve" else "deny-to-approve"
    if old.decision == "deny":
        return "blocking-systems" if old.blocking != new.blocking else None
    if old.override != new.override:
        return "override-applied" if new.override else "override-removed"
    return None


# ------------------------------------------------------------------------ in the worker processes


def _pair(old: PolicySource, new: PolicySource) -> tuple[Replayer, Replayer]:
    return Replayer(old), Replayer(new)


def _sent(chunk: Sequence[tuple[CorpusItem, Outcome | None]]) -> list[tuple[Any, ...]]:
    # only what deciding needs, as tuples: they pickle twice as fast as the dataclass
    return [(item.request, item.snapshot, known) for item, known in chunk]


def _decide_chunk(pair: tuple[Replayer, Replayer], chunk: Sequence[tuple[Any, ...]]) -> list[Changed | str | None]:
    old, new = pair
    return [
        compare(
            known or Outcome.of(old.decide(request, snapshot)),
            Outcome.of(new.decide(request, snapshot)),
        )
        for request, snapshot, known in chunk
    ]
