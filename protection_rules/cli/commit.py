"""`protect commit`: apply the state changes of decisions the audit trail holds."""

from __future__ import annotations

import click

from ..audit import open_audit
from ..commit import AuditedDecisions, Committer, decision_document
from ..errors import InputInvalid
from ..loading import open_requests
from ..reporting import to_json_line
from .options import audit_path_option, audit_target, existing_audit, open_store, state_option


@click.command()
@click.argument("decision", type=click.Path(allow_dash=True))
@state_option
@audit_path_option
def commit(decision: str, state_path: str | None, audit_path: str | None) -> None:
    """Apply the state changes of DECISION (a decision JSON, JSON Lines, or - for stdin).

    Run it after the order executed. Each decision is looked up in the audit trail by its
    decision_id and applied as recorded there; a decision that is not in the trail, or that
    differs from the record, is refused (exit 3) and nothing is stored. Committing the same
    decision twice changes nothing.

    \b
    Example:
      protect evaluate --format json request.json > decision.json
      protect commit decision.json
    """
    with open_requests(decision, lines=None) as found:
        documents = list(found.documents)
    bad = [issue for doc in documents for issue in doc.issues]
    if bad:
        raise InputInvalid(bad)
    for document in documents:  # the documents themselves first, before any store is opened
        decision_document(document.data, source=document.label)
    with open_audit(existing_audit(audit_target(audit_path)), mode="read") as trail:
        store = open_store(state_path, for_writing=True)
        try:
            committer = Committer(store, AuditedDecisions(trail))
            # every decision is checked before any is applied
            checked = [committer.check(document.data, source=document.label) for document in documents]
            for document, decision_ in zip(documents, checked, strict=True):
                applied = committer.apply(decision_)
                click.echo(to_json_line({"decision_id": document.data.get("decision_id"), "applied": applied}))
        finally:
            store.close()
