"""How a postmortem review looks in the review notebook, and as a postmortem document.

A review notebook cell computes with :mod:`exportnb.review.model` and then calls::

    show("timeline", review)      # or "records", "impact", "actions", "times", "summary"
    show("portfolio", portfolio)

:func:`show` makes one display call with a bundle of mimetypes, like
:func:`~exportnb.notebook.display.show` does for the runbook's steps: ``text/html``
(``text/markdown``
for the summary) for people, ``text/plain`` for consoles and logs, and — for the summary
and the portfolio, which hold everything — :data:`REVIEW_MIMETYPE`, the review as JSON
(``{"schema", "kind", "type", "result"}``: ``incident-review/v1`` or ``portfolio/v1``, and
the class name older readers know), so that an executed review notebook can be read back by
a program as its record is (:func:`review_data`).

:func:`summary_markdown` is the Markdown for a postmortem document: status, timeline,
times, findings, mitigations, affected tenants and files, corrective actions, follow-ups.
Times are UTC; durations read ``25m``, ``1h2m5s``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any

from exportnb.core import codec
from exportnb.core.findings import SEVERITIES
from exportnb.core.quantities import format_duration
from exportnb.notebook import views
from exportnb.notebook.display import json_safe
from exportnb.notebook.views import MARKERS, cell, facts, findings_markdown
from exportnb.record.model import TYPE_NAMES, kind_of

if TYPE_CHECKING:
    from exportnb.review.model import IncidentReview, Portfolio

REVIEW_MIMETYPE = "application/vnd.exportnb.review.v1+json"
MAX_LISTED = 100
"""Tenants, files or actions listed in full; the rest are counted (the records hold all)."""
MAX_TEXT = 200
"""Characters of one corrective action shown; the record holds it whole."""


# The display call -----------------------------------------------------------------------------
def bundle(part: str, value: Any) -> dict[str, Any]:
    """The mimetype bundle :func:`show` displays for one part of a review (or a portfolio)."""
    view = PARTS.get(part)
    if view is None:
        raise ValueError(f"unknown review part {part!r} (known: {', '.join(PARTS)})")
    data = view(value)
    if part in ("summary", "portfolio"):
        data[REVIEW_MIMETYPE] = json_safe(review_record(value))
    return data


def review_record(value: IncidentReview | Portfolio) -> dict[str, Any]:
    """The JSON of a review (or a portfolio) under :data:`REVIEW_MIMETYPE`: its kind, and
    the class name readers older than kinds know it by."""
    return {
        "schema": value.schema,
        "kind": value.KIND,
        "type": TYPE_NAMES[value.KIND],
        "result": codec.encode(value),
    }


def show(part: str, value: Any) -> None:
    """Display one part of a review (or the portfolio) for people and for programs."""
    from IPython.display import display  # deferred: IPython is heavy, and only kernels have it

    display(bundle(part, value), raw=True)


def review_data(nb: Any) -> dict[str, Any]:
    """``{kind: result}`` of the review JSON an executed review notebook displayed
    (``incident-review/v1``, ``portfolio/v1``; by the kind of their ``type`` in notebooks
    from before kinds)."""
    found = {}
    for cell_ in nb.get("cells", []):
        for output in cell_.get("outputs", []):
            payload = output.get("data", {}).get(REVIEW_MIMETYPE)
            if isinstance(payload, dict) and kind_of(payload):
                found[kind_of(payload)] = payload.get("result")
    return found


# The parts ------------------------------------------------------------------------------------
def records_view(review: IncidentReview) -> dict[str, Any]:
    rows = [
        [
            r.version,
            r.record_id,
            r.status,
            r.started_at,
            _duration(r.ended_at, r.started_at),
            r.operator,
            _severities(r.findings),
            (r.verdict or "—").replace("_", " "),
            r.error or "—",
        ]
        for r in review.records
    ]
    columns = [
        "version",
        "record",
        "status",
        "started",
        "ran for",
        "operator",
        "findings",
        "recovery verdict",
        "error",
    ]
    title = f"Records of {review.incident_id} ({len(rows)}), oldest first"
    text = "\n".join(
        f"  v{r.version} {r.record_id} {r.status} {cell(r.started_at)}" for r in review.records
    )
    return _html(title, table(columns, rows) + _journal_note(review), text)


def timeline_view(review: IncidentReview) -> dict[str, Any]:
    rows = [[e.at, e.kind, e.who or "—", e.summary] for e in review.timeline]
    text = "\n".join(f"  {cell(e.at)} {e.kind:<10} {e.summary}" for e in review.timeline)
    return _html(
        f"Timeline of {review.incident_id} (UTC)",
        table(["time", "event", "who", "what"], rows),
        text,
    )


def impact_view(review: IncidentReview) -> dict[str, Any]:
    body = _list_html(f"Affected tenants ({len(review.tenants)})", review.tenants) + _list_html(
        f"Affected files ({len(review.files)})", review.files
    )
    text = f"  {len(review.tenants)} tenants, {len(review.files)} files"
    return _html("Affected tenants and files", body, text)


def actions_view(review: IncidentReview) -> dict[str, Any]:
    mitigations = [
        f"{cell(m.at)} {m.operator or 'unknown'}: {m.label} ({m.source})"
        for m in review.mitigations
    ]
    body = (
        _list_html(f"Mitigations applied ({len(mitigations)})", mitigations)
        + _list_html(
            f"Corrective actions in the audit log ({len(review.corrective_actions)})",
            [_cut(a) for a in review.corrective_actions],
        )
        + _list_html(
            f"Follow-ups the latest assessment recommends, not applied ({len(review.follow_ups)})",
            review.follow_ups,
        )
    )
    text = (
        f"  {len(mitigations)} mitigations, {len(review.corrective_actions)} corrective "
        f"actions, {len(review.follow_ups)} follow-ups"
    )
    return _html("Corrective actions", body, text)


def times_view(review: IncidentReview) -> dict[str, Any]:
    rows = [[what, at, after] for what, at, after in time_rows(review)]
    text = "\n".join(f"  {what}: {cell(at)} ({after})" for what, at, after in time_rows(review))
    body = table(["", "at", "after the failures began"], rows)
    return _html("Times to detect, mitigate and recover", body, text)


def summary_view(review: IncidentReview) -> dict[str, Any]:
    return {
        "text/markdown": summary_markdown(review),
        "text/plain": f"Postmortem summary of {review.incident_id}",
    }


def portfolio_view(p: Portfolio) -> dict[str, Any]:
    pairs = [
        ("Window", f"{cell(p.since)} → {cell(p.until)}"),
        ("Incidents", len(p.incidents)),
        ("Records", p.records),
        ("Resolved / open", f"{p.resolved} / {p.open}"),
        ("Mean time to detect (MTTD)", _seconds(p.mttd)),
        ("Mean time to mitigate", _seconds(p.mttm)),
        ("Mean time to recover (MTTR)", _seconds(p.mttr)),
    ]
    common = [
        [MARKERS.get(f.severity, "•") + " " + f.severity, f.code, f.incidents, f.example]
        for f in p.findings
    ]
    rows = [
        [
            i.incident_id,
            i.started_at,
            i.records,
            i.verdict or "—",
            i.mitigations,
            _seconds(i.to_detect),
            _seconds(i.to_mitigate),
            _seconds(i.to_recover),
        ]
        for i in p.incidents
    ]
    columns = [
        "incident",
        "failures began",
        "records",
        "latest verdict",
        "mitigations",
        "to detect",
        "to mitigate",
        "to recover",
    ]
    body = (
        facts(pairs)
        + table(
            ["severity", "finding", "incidents", "for example"],
            common,
            caption="Most common findings",
        )
        + table(columns, rows, caption="Incidents")
    )
    text = f"  {len(p.incidents)} incidents ({p.resolved} resolved), MTTR {_seconds(p.mttr)}"
    return _html("Across incidents", body, text)


PARTS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "records": records_view,
    "timeline": timeline_view,
    "impact": impact_view,
    "actions": actions_view,
    "times": times_view,
    "summary": summary_view,
    "portfolio": portfolio_view,
}


# The postmortem document -----------------------------------------------------------------------
def summary_markdown(review: IncidentReview) -> str:
    """The review as Markdown for a postmortem document."""
    sections = [
        f"# Postmortem: export incident {review.incident_id}",
        _status_markdown(review),
        "## Timeline (UTC)\n\n"
        + _md_table(
            ["Time", "Event", "Who", "What"],
            [[_clock(e.at), e.kind, e.who, e.summary] for e in review.timeline],
        ),
        "## Times\n\n"
        + _md_table(
            ["", "At", "After the failures began"],
            [[what, _clock(at), after] for what, at, after in time_rows(review)],
        ),
        "## Findings\n\n" + findings_markdown(review.findings),
        "## Mitigations applied\n\n"
        + _md_list(
            [
                f"{_clock(m.at)} — {m.label}, by {m.operator or 'unknown'} ({m.source})"
                for m in review.mitigations
            ]
        ),
        f"## Affected tenants ({len(review.tenants)})\n\n" + (", ".join(review.tenants) or "None."),
        f"## Affected files ({len(review.files)})\n\n" + _md_list(review.files),
        "## Corrective actions\n\n" + _md_list([_cut(a) for a in review.corrective_actions]),
        "## Follow-ups\n\n" + _md_list(review.follow_ups),
    ]
    return "\n\n".join(sections) + "\n"


def _status_markdown(review: IncidentReview) -> str:
    t, records = review.times, review.records
    if t.recovered_at is not None:
        status = f"**Resolved** at {_clock(t.recovered_at)}."
    else:
        verdict = (records[-1].verdict or "no verdict").replace("_", " ")
        status = f"**Open**: not recovered as of the latest record (recovery verdict: {verdict})."
    lines = [
        status,
        f"**Alert:** {review.alert}",
        f"**Records:** {len(records)}, from {_clock(records[0].started_at)} to "
        f"{_clock(records[-1].started_at)}, in `{review.archive or 'the archive'}`.",
        f"**Impact:** {len(review.tenants)} tenants and {len(review.files)} files affected.",
    ]
    if review.journal_ok is False:
        lines.append("**Warning:** a record found the mitigation journal's hash chain broken.")
    return "  \n".join(lines)


def time_rows(review: IncidentReview) -> list[tuple[str, datetime | None, str]]:
    """``(what, at, after the failures began)`` for each time of :class:`Times`."""
    t = review.times
    return [
        ("Failures began", t.started_at, "—"),
        ("Detected", t.detected_at, _seconds(t.to_detect)),
        ("Mitigated (first mitigation)", t.mitigated_at, _seconds(t.to_mitigate)),
        ("Recovered", t.recovered_at, _seconds(t.to_recover)),
    ]


# Pieces ---------------------------------------------------------------------------------------
def table(columns: list[str], rows: list[list[Any]], *, caption: str = "") -> str:
    """An HTML table of every row (up to :data:`MAX_LISTED`), or a line saying there is none."""
    if not rows:
        return f"<p><em>{escape(caption or 'Nothing to show')}: none.</em></p>\n"
    return views.table(columns, rows, caption=caption, limit=MAX_LISTED, kept="")


def _html(title: str, body: str, text: str) -> dict[str, Any]:
    return {"text/html": f"<h4>{escape(title)}</h4>\n{body}", "text/plain": f"{title}\n{text}"}


def _list_html(title: str, items: list[str]) -> str:
    if not items:
        return f"<p><strong>{escape(title)}</strong>: none.</p>\n"
    shown = "".join(f"<li>{escape(i)}</li>" for i in items[:MAX_LISTED])
    more = len(items) - MAX_LISTED
    note = f"<li><em>… and {more} more (the records hold them all)</em></li>" if more > 0 else ""
    return f"<p><strong>{escape(title)}</strong></p>\n<ul>{shown}{note}</ul>\n"


def _journal_note(review: IncidentReview) -> str:
    if review.journal_ok is None:
        return (
            "<p><em>No record carries the mitigation journal: mitigations are read from "
            "the platform state the recovery step saw.</em></p>\n"
        )
    if review.journal_ok:
        return "<p>✅ The mitigation journal's hash chain was intact in every record.</p>\n"
    return "<p>🔴 A record found the mitigation journal's hash chain broken.</p>\n"


def _md_table(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_cell(value: Any) -> str:
    return (str(value) if value not in (None, "") else "—").replace("|", "\\|").replace("\n", " ")


def _md_list(items: list[str]) -> str:
    if not items:
        return "None."
    more = len(items) - MAX_LISTED
    return "\n".join(f"- {i}" for i in items[:MAX_LISTED]) + (
        f"\n- … and {more} more (the records hold them all)" if more > 0 else ""
    )


def _clock(at: datetime | None) -> str:
    return "—" if at is None else codec.readable_time(at)


def _seconds(value: float | None) -> str:
    if value is None:
        return "not yet"
    return ("-" + format_duration(-value)) if value < 0 else format_duration(value)


def _duration(end: datetime, start: datetime) -> str:
    return _seconds((end - start).total_seconds())


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _severities(counts: dict[str, int]) -> str:
    """``2 critical, 1 warning``, or ``none``."""
    return ", ".join(f"{counts[s]} {s}" for s in SEVERITIES if counts.get(s)) or "none"
