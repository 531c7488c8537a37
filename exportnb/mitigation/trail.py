"""The audit trail of an incident: its mitigation journal, as a result the record keeps.

The widget panel shows what it does while the engineer works, but widget output lives in
widget state, which an archived notebook hides. So the template's audit cell shows the
journal as ordinary cell output, through :func:`exportnb.notebook.display.show`::

    show("mitigations", trail(incident.id))

:class:`Trail` is a result like the diagnostics' results, of kind ``audit-trail/v1``:
rendered as a table for people (:func:`exportnb.notebook.views.trail_view`) and stored
under the result mimetype for the archive index and the postmortem review, which read back
who did what, when, with which parameters and what happened, without executing anything.
A journal whose hash chain is broken is not an exception here: the trail says so, as a
critical finding, and lists nothing from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from exportnb.core.errors import PreconditionFailed
from exportnb.core.findings import Finding
from exportnb.core.ids import check_incident_id
from exportnb.mitigation.journal import Journal, JournalEntry

JOURNAL_BROKEN = "journal_broken"
STEP = "mitigations"
SUMMARY_WIDTH = 160


@dataclass(frozen=True)
class Action:
    """One mitigation the incident applied: a successful result in the journal."""

    seq: int
    at: datetime
    operator: str
    action: str
    params: dict[str, Any]
    summary: str


@dataclass(frozen=True)
class Trail:
    """Every journal entry of an incident, the chain verified, and what was applied."""

    KIND: ClassVar[str] = "audit-trail/v1"
    incident: str
    entries: list[JournalEntry]
    chain_ok: bool
    applied: list[Action]
    head: str  # sha256 of the last entry ("" when there is none)
    findings: list[Finding] = field(default_factory=list)

    def frame(self) -> Any:
        import pandas as pd  # deferred: pandas is heavy

        rows = [
            {
                "seq": e.seq,
                "at": e.at,
                "operator": e.operator,
                "kind": e.kind,
                "action": e.action,
                "outcome": e.outcome,
                "summary": summary_of(e),
                "key": e.key[:12],
            }
            for e in self.entries
        ]
        return pd.DataFrame(rows)


def trail(incident: str, *, home: Path | None = None) -> Trail:
    """The incident's journal now; a broken chain makes a trail with a critical finding."""
    incident = check_incident_id(incident)
    try:
        entries = Journal(incident, home=home).entries()
    except PreconditionFailed as exc:
        evidence = {"incident": incident}
        broken = Finding(JOURNAL_BROKEN, "critical", exc.message, STEP, evidence)
        return Trail(incident, [], False, [], "", [broken])
    applied = [
        Action(e.seq, e.at, e.operator, e.action, dict(e.params), summary_of(e))
        for e in entries
        if e.ok
    ]
    return Trail(incident, entries, True, applied, entries[-1].sha256 if entries else "")


def summary_of(entry: JournalEntry) -> str:
    """One line for people: the plan's summary, the error, or why it was skipped."""
    detail = entry.detail
    for name in ("error", "summary", "why"):
        if detail.get(name):
            return str(detail[name])
    if "reverts" in detail:
        return f"{detail.get('kind', '')} {detail.get('target', '')}".strip()
    if entry.kind == "skip":
        return entry.outcome.replace("_", " ")
    response = detail.get("response")
    text = json.dumps(response, default=str) if response else ""
    return text if len(text) <= SUMMARY_WIDTH else text[: SUMMARY_WIDTH - 1] + "…"
