"""The audit trail of an incident: its mitigation journal, as a result the record keeps.

The widget panel shows what it does while the engineer works, but widget output lives in
widget state, which an archived notebook hides. So the template's audit cell shows the
journal as ordinary cell output, through :func:`exportnb.notebook.display.show`::

    show("mitigations", trail(incident.id))

:class:`Trail` is a result like the diagnostics' results: rendered as a table for people
and stored under the result mimetype (type ``Trail``) for the archive index and the
postmortem review, which read back who did what, when, with which parameters and what
happened, without executing anything. A journal whose hash chain is broken is not an
exception here: the trail says so, as a critical finding, and lists nothing from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from exportnb.core.errors import PreconditionFailed
from exportnb.core.findings import Finding
from exportnb.core.ids import check_incident_id
from exportnb.mitigation.journal import Journal, JournalEntry
from exportnb.notebook.views import Body, cell, paragraph, renders

JOURNAL_BROKEN = "journal_broken"
STEP = "mitigations"
SUMMARY_WIDTH = 160
COLUMNS = ("seq", "at", "operator", "kind", "action", "outcome", "summary", "key")


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

    incident: str
    entries: list[JournalEntry]
    chain_ok: bool
    applied: list[Action]
    head: str  # sha256 of the last entry ("" when there is none)
    findings: list[Finding] = field(default_factory=list)

    def frame(self) -> Any:
        import pandas as pd

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


@renders("Trail")
def render_trail(result: Trail) -> Body:
    label = "Audit trail: the mitigation journal"
    if not result.chain_ok:
        return Body(paragraph("The journal could not be read: see the finding."), "", None, label)
    if not result.entries:
        text = f"No mitigation has been planned or applied for {result.incident}."
        return Body(paragraph(text), text, None, label)
    rows = [_row(e) for e in result.entries]
    done = ", ".join(f"{a.action} by {a.operator} at {cell(a.at)}" for a in result.applied)
    lead = f"Applied: {done}." if done else "Nothing applied yet."
    chain = f"{len(result.entries)} entries, hash chain verified (head {result.head[:16]})."
    text = "\n".join([lead, *("  ".join(row) for row in rows), chain])
    return Body(paragraph(lead) + _table(rows) + paragraph(chain), text, None, label)


def _row(entry: JournalEntry) -> list[str]:
    return [
        str(entry.seq),
        cell(entry.at),
        entry.operator,
        entry.kind,
        entry.action,
        entry.outcome,
        summary_of(entry),
        entry.key[:12],
    ]


def _table(rows: list[list[str]]) -> str:
    """Every entry (no row limit: this is the audit record)."""
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    caption = "<caption>Journal</caption>"
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"
