"""Corpora of requests to decide again: a requests file, or the decisions of an audit trail.

Every corpus is read lazily (a requests file through `loading.open_requests`, an audit trail
through its `query`), so a corpus of any size is read in bounded memory. What cannot be decided
again is counted in `Corpus.skipped` by reason, never silently dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from .audit import RecordFilter, open_audit
from .cases import load_case_files
from .errors import INTERNAL_CODES
from .loading import lines_by_name, open_requests

CorpusKind = Literal["requests", "replay", "cases"]

# Why an input was not decided again (the keys of `Corpus.skipped`)
UNPARSED = "unparsed-request"  # the input was not JSON (an audit record keeps it as `unparsed`)
INVALID = "invalid-request"  # the request does not validate: it denies under every policy
OVERRIDDEN = "case-with-policy-overrides"  # a case written for a variant of the policy


@dataclass(frozen=True, slots=True)
class CorpusItem:
    """One request to decide again, as it was received, with what it was decided with.

    `snapshot` is the state recorded beside an audited request that carried none of its own:
    what the state store gave the engine. `recorded` is the audited decision and
    `policy_sha256` the policy it was made under (None for a requests file).
    """

    label: str
    corpus: int
    request: Any
    snapshot: Mapping[str, Any] | None = None
    recorded: Mapping[str, Any] | None = None
    policy_sha256: str | None = None


@dataclass
class Corpus:
    kind: CorpusKind
    source: str
    index: int
    items: Iterator[CorpusItem] = field(default_factory=lambda: iter(()))
    decided: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "decided": self.decided,
            "skipped": dict(sorted(self.skipped.items())),
        }


@contextmanager
def open_corpus(kind: CorpusKind, path: str, index: int) -> Iterator[Corpus]:
    """Open one corpus; `index` tells its items apart from those of the other corpora. An audit
    trail must exist (the caller checks: a missing one is a usage error)."""
    if kind == "requests":
        with open_requests(path, lines=lines_by_name(path)) as requests:
            corpus = Corpus(kind, requests.name, index)
            corpus.items = _request_items(corpus, requests.documents)
            yield corpus
    elif kind == "replay":
        with open_audit(path, mode="read") as log:
            corpus = Corpus(kind, path, index)
            corpus.items = audit_items(corpus, log.query(RecordFilter(kind="decision")), skip_invalid=True)
            yield corpus
    else:
        corpus = Corpus(kind, path, index)
        corpus.items = case_items(corpus, path)
        yield corpus


def _request_items(corpus: Corpus, documents: Iterator[Any]) -> Iterator[CorpusItem]:
    for document in documents:
        if document.issues:
            corpus.skipped[UNPARSED if document.data is None else INVALID] += 1
            continue
        yield CorpusItem(document.label, corpus.index, document.data)


def audit_items(corpus: Corpus, records: Iterator[Mapping[str, Any]], *, skip_invalid: bool) -> Iterator[CorpusItem]:
    """The decision records as items, labelled `log#sequence`.

    A record whose request was never parsed (`{"unparsed": ...}`) cannot be decided again. With
    `skip_invalid`, neither is one the engine rejected as an invalid request: that verdict holds
    under any policy, and the stored state it was checked against was not recorded."""
    for record in records:
        request = record.get("request")
        label = f"{corpus.source}#{record.get('sequence')}"
        if not isinstance(request, dict) or "unparsed" in request:
            corpus.skipped[UNPARSED] += 1
            continue
        if skip_invalid and _rejected(record):
            corpus.skipped[INVALID] += 1
            continue
        snapshot = record.get("state") if request.get("state") is None else None
        policy = record.get("policy") if isinstance(record.get("policy"), dict) else {}
        yield CorpusItem(label, corpus.index, request, snapshot, record.get("decision_record"), policy.get("sha256"))


def _rejected(record: Mapping[str, Any]) -> bool:
    decision = record.get("decision_record")
    errors = decision.get("errors") if isinstance(decision, dict) else None
    return bool(errors) and any(isinstance(e, dict) and e.get("code") not in INTERNAL_CODES for e in errors)


def case_items(corpus: Corpus, folder: str) -> Iterator[CorpusItem]:
    """The requests of `protect test`'s case files under `folder` (or one file), labelled
    `file:line name`. A case with `policy_overrides` was written for another policy than OLD
    and NEW, so it is counted in `skipped` rather than decided."""
    for case_file in load_case_files([folder]):
        for case in case_file.cases:
            if case.policy_overrides is not None:
                corpus.skipped[OVERRIDDEN] += 1
                continue
            yield CorpusItem(f"{case.location} {case.name}", corpus.index, case.request)
