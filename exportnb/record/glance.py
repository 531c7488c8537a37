"""At a glance: the summary at the top of a record's page.

A record's HTML is long: every runbook step with its tables and charts. The engineer paged
at night, and the reviewer opening an archived record, first want the verdict. So the
page (not the executed ``.ipynb``, which stays as the kernel left it) opens with a box
made from the results the notebook recorded:

- the run: succeeded, or failed at which cell with which error;
- the recovery verdict and its reason (Recovery Verification);
- the findings by severity, the critical ones and the first warnings named;
- the recommended mitigations with their runbook commands (Assessment);
- the mitigations applied so far, by whom and when (the audit trail).

It is built only from the recorded results (:func:`exportnb.record.model.results_of`), so it
says what the sections below it say, and every text in it is escaped. It finds the
results by their kind (``recovery/v1``, ``assessment/v1``, ``audit-trail/v1``): each
bundle given has its ``kind`` filled in (:func:`exportnb.record.model.with_kinds`). The box
goes in before the page is hashed: the record's sha256 covers it like any other byte.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

from exportnb.core.codec import readable_time
from exportnb.core.findings import SEVERITIES

MAX_NAMED = 5
"""How many findings of a severity, recommendations or mitigations the box names."""
NAMED_SEVERITIES = ("critical", "warning")
VERDICTS = {
    "recovered": "Recovered",
    "not_yet": "Not yet recovered",
    "insufficient_data": "Not enough data to judge recovery",
}
RECOVERY, ASSESSMENT, AUDIT_TRAIL = "recovery/v1", "assessment/v1", "audit-trail/v1"
"""The kinds of result the box reads, besides every result's findings."""
_BOX = (
    "border:2px solid #1f77b4;border-radius:6px;padding:0.6em 1em;margin:1em 0 1.5em;"
    "background:#f5f9fd;font-size:0.95em"
)


def glance_html(
    *, incident_id: str, failed_at: str | None, results: Sequence[Mapping[str, Any]]
) -> str:
    """The box for a record of ``incident_id`` (``failed_at``: where the run failed), from
    its result bundles, each with its ``kind``."""
    by_kind = _latest_by_kind(results)
    run = f"run failed at {failed_at}" if failed_at else "run succeeded"
    parts = [f"<strong>At a glance — {escape(incident_id)}</strong> · {escape(run)}"]
    recovery = by_kind.get(RECOVERY)
    if recovery is not None:
        verdict = str(recovery.get("verdict", ""))
        label = VERDICTS.get(verdict, verdict or "no verdict")
        parts.append(
            f"<p><strong>Recovery:</strong> {escape(label)} — "
            f"{escape(str(recovery.get('reason', '')))}</p>"
        )
    parts.append(_findings(results))
    parts.append(_recommended(by_kind.get(ASSESSMENT)))
    parts.append(_applied(by_kind.get(AUDIT_TRAIL)))
    body = "\n".join(p for p in parts if p)
    return f'<section class="exportnb-glance" style="{_BOX}">\n{body}\n</section>\n'


def with_glance(page: bytes, box: str) -> bytes:
    """``page`` with ``box`` first in its main content (after ``<main>``, else ``<body>``)."""
    text = page.decode()
    for opening in ("<main>", "<body"):
        at = text.find(opening)
        if at < 0:
            continue
        end = text.find(">", at) + 1
        return (text[:end] + "\n" + box + text[end:]).encode()
    return (box + text).encode()


def _latest_by_kind(results: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The last recorded result body of each kind (a re-run cell records again)."""
    found: dict[str, Mapping[str, Any]] = {}
    for item in results:
        body = item.get("result")
        if isinstance(body, Mapping) and isinstance(item.get("kind"), str):
            found[item["kind"]] = body
    return found


def _findings(results: Sequence[Mapping[str, Any]]) -> str:
    seen: dict[str, list[str]] = {s: [] for s in SEVERITIES}
    for item in results:
        body = item.get("result")
        for finding in body.get("findings", []) if isinstance(body, Mapping) else []:
            severity = finding.get("severity") if isinstance(finding, Mapping) else None
            summary = str(finding.get("summary", "")) if isinstance(finding, Mapping) else ""
            if severity in seen and summary not in seen[severity]:
                seen[severity].append(summary)
    counts = ", ".join(f"{len(seen[s])} {s}" for s in SEVERITIES)
    named = [
        f"<li><strong>{s}</strong> {escape(text)}</li>"
        for s in NAMED_SEVERITIES
        for text in seen[s][:MAX_NAMED]
    ]
    more = sum(max(0, len(seen[s]) - MAX_NAMED) for s in NAMED_SEVERITIES)
    if more:
        named.append(f"<li>… and {more} more below</li>")
    listed = f"<ul>{''.join(named)}</ul>" if named else ""
    return f"<p><strong>Findings:</strong> {counts}</p>{listed}"


def _recommended(assessment: Mapping[str, Any] | None) -> str:
    items = assessment.get("recommendations", []) if assessment else []
    rows = [
        f"<li>{escape(str(r.get('action', '')))}: <code>{escape(str(r.get('command', '')))}"
        "</code></li>"
        for r in items[:MAX_NAMED]
        if isinstance(r, Mapping)
    ]
    if not rows:
        return "<p><strong>Recommended:</strong> nothing</p>" if assessment else ""
    return f"<p><strong>Recommended:</strong></p><ul>{''.join(rows)}</ul>"


def _applied(trail: Mapping[str, Any] | None) -> str:
    if trail is None:
        return ""
    done = [a for a in trail.get("applied", []) if isinstance(a, Mapping)]
    if not done:
        return "<p><strong>Mitigations applied:</strong> none yet</p>"
    rows = [
        f"<li>{escape(str(a.get('action', '')))} by {escape(str(a.get('operator', '')))} "
        f"at {escape(_when(a.get('at')))}</li>"
        for a in done[:MAX_NAMED]
    ]
    return f"<p><strong>Mitigations applied:</strong></p><ul>{''.join(rows)}</ul>"


def _when(value: Any) -> str:
    """A recorded time (ISO 8601) as the tables show times."""
    try:
        return readable_time(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return str(value)
