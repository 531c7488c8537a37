"""How each runbook step's result looks: the renderers, and the plain HTML they are made of.

A renderer turns a result into a :class:`Body`: HTML (or Markdown) for people and a
short plain-text summary. :data:`RENDERERS` holds them by the kind of result they render
(``detection/v1``: the ``KIND`` each result class declares), so a new result type gets a
view by registering one with :func:`renders`, and renaming a class changes nothing; a type
without one is rendered from its dataclass fields (:func:`render_fields`). A result
recorded in an archived record renders the same way (:func:`render_recorded`), records
from before kinds included. Tables show the first :data:`MAX_ROWS` rows; the record
(:mod:`exportnb.notebook.display`) keeps everything.

The HTML is plain (tables, lists, ``<code>``), with no JavaScript and no styling beyond
alignment, so it reads the same in JupyterLab and in nbconvert's HTML export.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any, ClassVar, Protocol, TypeVar

from exportnb.core import codec
from exportnb.core.errors import CommandError
from exportnb.core.findings import SEVERITIES, Finding
from exportnb.incident.model import Declaration
from exportnb.incident.steps.baseline import Baseline
from exportnb.incident.steps.checksums import ChecksumReport
from exportnb.incident.steps.comms import AuditSummary, StatusUpdate
from exportnb.incident.steps.detection import Detection
from exportnb.incident.steps.impact import DeliveryCheck, ImpactSweep
from exportnb.incident.steps.jobstate import JobState
from exportnb.incident.steps.network import NetworkPath
from exportnb.incident.steps.recovery import Recovery
from exportnb.incident.steps.storagehealth import StorageHealth
from exportnb.mitigation.assessment import Assessment
from exportnb.mitigation.journal import JournalEntry
from exportnb.mitigation.response import BulkPause, FailureCapture, MitigationPlan
from exportnb.mitigation.trail import Trail, summary_of
from exportnb.record.model import kind_of

STEP_TITLES = {
    "detection": "Detection",
    "immediate_actions": "Immediate actions",
    "job_state": "Diagnostics 1 · Job state",
    "storage_health": "Diagnostics 2 · Storage health",
    "checksums": "Diagnostics 3 · Checksum verification",
    "network_path": "Diagnostics 4 · Network path",
    "assessment": "Assessment",
    "mitigations": "Mitigations",
    "recovery": "Recovery verification",
    "communication": "Communication",
}
MARKERS = {"critical": "🔴", "warning": "🟠", "info": "🔵"}
NO_COMMAND = "no runbook command"
MAX_ROWS = 20
"""Rows shown in a table; the record keeps them all."""


@dataclass(frozen=True)
class Body:
    """What a renderer makes of a result: HTML (or Markdown) for people, a plain summary."""

    html: str = ""
    text: str = ""
    markdown: str | None = None
    label: str = ""  # what the result is, after the step's title: "Pause new bulk exports"


class Result(Protocol):
    """A runbook step's result: a class that declares its kind."""

    KIND: ClassVar[str]


R = TypeVar("R", bound=Result)
Renderer = Callable[[Any], Body]
RENDERERS: dict[str, Renderer] = {}
"""Renderers by result kind (``detection/v1``). :func:`renders` adds to it."""
RESULT_CLASSES: dict[str, type[Result]] = {}
"""The class of each kind :data:`RENDERERS` renders: a recorded result is read back into it."""


def renders(result_class: type[R]) -> Callable[[Callable[[R], Body]], Callable[[R], Body]]:
    """Register a renderer for the results of ``result_class``, under its ``KIND``."""

    def register(renderer: Callable[[R], Body]) -> Callable[[R], Body]:
        RENDERERS[result_class.KIND] = renderer
        RESULT_CLASSES[result_class.KIND] = result_class
        return renderer

    return register


def kind_of_result(result: Any) -> str | None:
    """The kind ``result``'s class declares (``KIND``); None when it declares none."""
    kind = getattr(type(result), "KIND", None)
    return kind if isinstance(kind, str) else None


def render(result: Any) -> Body:
    """The body of ``result``: its kind's renderer, or its fields when it has none."""
    renderer = RENDERERS.get(kind_of_result(result) or "", render_fields)
    return renderer(result)


def render_recorded(bundle: Mapping[str, Any]) -> Body:
    """A result as a record keeps it (a bundle of ``record.json``'s ``results``), rendered
    as the notebook showed it: read back into the class of its kind (its ``kind``, or the
    kind of its legacy ``type``). One of a kind without a renderer, or that no longer reads
    as its class, shows its fields."""
    kind, body = kind_of(bundle), bundle.get("result")
    result_class = RESULT_CLASSES.get(kind)
    if result_class is None or not isinstance(body, Mapping):
        return render_json(kind, body)
    try:
        result = codec.decode(result_class, body, path=kind)
    except CommandError:
        return render_json(kind, body)
    return RENDERERS[kind](result)


# Text pieces ----------------------------------------------------------------------------
def title_of(step: str) -> str:
    return STEP_TITLES.get(step, step.replace("_", " ").capitalize())


def heading_html(step: str, command: str | None, label: str = "") -> str:
    title = title_of(step) + (f" · {label}" if label else "")
    runbook = f" — runbook: <code>{escape(command)}</code>" if command else ""
    return f"<h4>{escape(title)}{runbook}</h4>\n"


def heading_markdown(step: str, command: str | None, label: str = "") -> str:
    title = title_of(step) + (f" · {label}" if label else "")
    runbook = f" — runbook: `{command}`" if command else ""
    return f"#### {title}{runbook}"


def ordered(findings: list[Finding]) -> list[Finding]:
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: rank.get(f.severity, len(rank)))


def findings_html(findings: list[Finding]) -> str:
    if not findings:
        return "<p>✅ No findings.</p>\n"
    items = "".join(
        f"<li>{MARKERS.get(f.severity, '•')} <strong>{escape(f.severity)}</strong> "
        f"{escape(f.summary)} <code>{escape(f.code)}</code></li>"
        for f in ordered(findings)
    )
    return f"<ul>{items}</ul>\n"


def findings_markdown(findings: list[Finding]) -> str:
    if not findings:
        return "✅ No findings."
    return "\n".join(
        f"- {MARKERS.get(f.severity, '•')} **{f.severity}** {f.summary} `{f.code}`"
        for f in ordered(findings)
    )


def plain(
    step: str, command: str | None, findings: list[Finding], summary: str, label: str = ""
) -> str:
    title = title_of(step) + (f" · {label}" if label else "")
    lines = [title + (f" — {command}" if command else "")]
    lines += [f"  [{f.severity}] {f.summary} ({f.code})" for f in ordered(findings)]
    if not findings:
        lines.append("  no findings")
    if summary:
        lines.append(summary)
    return "\n".join(lines)


# HTML building blocks -------------------------------------------------------------------
def cell(value: Any) -> str:
    """A value as table text: times in UTC, no ``None``, short lists."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return (
            value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            if value.tzinfo
            else (value.isoformat())
        )
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, (list, tuple, set)):
        items = [cell(v) for v in list(value)[:MAX_ROWS]]
        return ", ".join(items) + (" …" if len(value) > MAX_ROWS else "") if items else "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {cell(v)}" for k, v in list(value.items())[:MAX_ROWS]) or "—"
    if dataclasses.is_dataclass(value):
        return type(value).__name__
    return str(value)


def percent(value: float | None) -> str:
    return "—" if value is None or value != value else f"{value * 100:.2f}%"


def table(
    columns: list[str],
    rows: list[list[Any]],
    *,
    caption: str = "",
    limit: int = MAX_ROWS,
    kept: str = " (all are in the record)",
) -> str:
    """A small HTML table of the first ``limit`` rows, saying how many are left out (and,
    ``kept``, where they are). Text columns read from the left, numbers from the right."""
    if not rows:
        return f"<p><em>{escape(caption or 'Nothing to show')}: none.</em></p>\n" if caption else ""
    shown = rows[:limit]
    left = [not _numeric([row[i] for row in shown if i < len(row)]) for i in range(len(columns))]
    head = "".join(f"<th{LEFT if left[i] else ''}>{escape(c)}</th>" for i, c in enumerate(columns))
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{LEFT if i < len(left) and left[i] else ''}>{escape(cell(v))}</td>"
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in shown
    )
    more = len(rows) - limit
    note = f"<p><em>… and {more} more{kept}.</em></p>" if more > 0 else ""
    title = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}\n"


def facts(pairs: list[tuple[str, Any]]) -> str:
    """A two-column table of what was measured."""
    rows = "".join(
        f"<tr><th{LEFT}>{escape(k)}</th><td{LEFT}>{escape(cell(v))}</td></tr>" for k, v in pairs
    )
    return f"<table><tbody>{rows}</tbody></table>\n"


LEFT = " style='text-align:left'"
"""Text reads from the left; numbers keep the tables' right alignment."""


def _numeric(values: list[Any]) -> bool:
    """Whether a column holds numbers only (its empty cells aside)."""
    present = [v for v in values if v is not None]
    return bool(present) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in present
    )


def code_list(commands: list[str]) -> str:
    return "<ul>" + "".join(f"<li><code>{escape(c)}</code></li>" for c in commands) + "</ul>\n"


def command_html(command: str) -> str:
    """A command as code, or a note that the runbook has none for this."""
    return f"<code>{escape(command)}</code>" if command else f"<em>{NO_COMMAND}</em>"


def paragraph(text: str) -> str:
    return f"<p>{escape(text)}</p>\n"


# Generic rendering ----------------------------------------------------------------------
def render_fields(result: Any) -> Body:
    """Any result: its scalar fields as facts, its lists of records as tables."""
    if not dataclasses.is_dataclass(result) or isinstance(result, type):
        return Body(html=paragraph(repr(result)), text=repr(result)[:200])
    scalars: list[tuple[str, Any]] = []
    tables: list[str] = []
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        if f.name == "findings":
            continue
        if _is_records(value):
            tables.append(records_table(value, caption=f.name.replace("_", " ")))
        else:
            scalars.append((f.name.replace("_", " "), value))
    return Body(html=facts(scalars) + "".join(tables), text=type(result).__name__)


def render_json(kind: str, body: Any) -> Body:
    """A recorded result that no renderer reads: its scalar fields as facts."""
    if not isinstance(body, Mapping):
        return Body(html=paragraph(repr(body)), text=repr(body)[:200])
    scalars = [
        (str(name).replace("_", " "), value)
        for name, value in body.items()
        if name != "findings" and not isinstance(value, (list, dict))
    ]
    return Body(html=facts(scalars), text=kind or "result")


def records_table(records: list[Any], *, caption: str = "") -> str:
    """Dataclass records as a table, one column per scalar field."""
    names = [
        f.name
        for f in dataclasses.fields(records[0])
        if not _is_records(getattr(records[0], f.name))
    ]
    rows = [[getattr(r, n, None) for n in names] for r in records]
    return table([n.replace("_", " ") for n in names], rows, caption=caption)


def _is_records(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(dataclasses.is_dataclass(v) and not isinstance(v, type) for v in value)
    )


# The step results -----------------------------------------------------------------------
@renders(Detection)
def detection_view(d: Detection) -> Body:
    lat = d.latency
    pairs = [
        (
            f"Failure rate, last {d.window_minutes} min",
            f"{percent(d.failure_rate)} "
            f"(threshold {percent(d.threshold)}; {d.failed} of {d.attempts} attempts failed)",
        ),
        ("Threshold breached", d.breached),
        (
            "Latency p50 / p95 / p99",
            f"{cell(lat.p50)} / {cell(lat.p95)} / {cell(lat.p99)} s "
            f"(limit {cell(d.latency_limit)} s = 2× SLO)",
        ),
        ("Stuck jobs", len(d.stuck)),
        ("Reported jobs", f"{len(d.reported)} ({len(d.unknown_reported)} unknown)"),
    ]
    stuck = [
        [s.job.id, s.job.tenant, s.job.connector, s.reason, f"{s.age_seconds:.0f} s"]
        for s in d.stuck
    ]
    reported = [[r.job_id, r.found, r.status, r.tenant, r.error_code] for r in d.reported]
    html = (
        facts(pairs)
        + table(["job", "tenant", "connector", "reason", "age"], stuck, caption="Stuck jobs")
        + table(
            ["job", "found", "status", "tenant", "error code"], reported, caption="Reported jobs"
        )
    )
    return Body(html, f"failure rate {percent(d.failure_rate)}; breached: {cell(d.breached)}")


@renders(JobState)
def job_state_view(s: JobState) -> Body:
    more = " (more exist: the scan was truncated)" if s.truncated else ""
    pairs = [
        ("Window", f"{cell(s.since)} → {cell(s.until)}"),
        ("Failed jobs", f"{s.total_failed}{more}"),
        ("By connector", s.by_connector),
        ("By storage (bucket)", s.by_bucket),
        ("By error code", s.by_error),
    ]
    categories = [
        [c.connector, c.bucket, c.error_code, c.count, c.first_seen, c.last_seen, c.tenants]
        for c in s.categories
    ]
    latest = [
        [j.id, j.tenant, j.connector, j.bucket, j.error_code, j.finished_at] for j in s.latest
    ]
    html = (
        facts(pairs)
        + table(
            ["connector", "bucket", "error code", "failed", "first seen", "last seen", "tenants"],
            categories,
            caption="Failures by connector and storage",
        )
        + table(
            ["job", "tenant", "connector", "bucket", "error code", "finished"],
            latest,
            caption="Newest failed jobs",
        )
    )
    return Body(html, f"{s.total_failed} failed jobs in {len(s.categories)} categories")


@renders(FailureCapture)
def capture_view(c: FailureCapture) -> Body:
    pairs = [
        ("Failing job IDs", c.failing_job_ids),
        ("Failed jobs", c.total_failed),
        ("Reported by customers", c.reported_jobs),
    ]
    samples = "".join(
        f"<p><code>{escape(s.job_id)}</code> {escape(cell(s.error_code))}: "
        f"{escape(cell(s.error_message))}</p>"
        + "<pre>"
        + escape("\n".join(f"{cell(x.at)} {x.level:5} {x.message}" for x in s.logs))
        + "</pre>\n"
        for s in c.samples
    )
    html = facts(pairs) + (f"<p><strong>Sample logs</strong></p>\n{samples}" if samples else "")
    label = "Capture failing job IDs and sample logs"
    return Body(html, "failing: " + ", ".join(c.failing_job_ids[:MAX_ROWS]), label=label)


@renders(StorageHealth)
def storage_view(h: StorageHealth) -> Body:
    rows = [
        [c.bucket, c.verdict, c.status, c.code, c.region, f"{c.latency_ms:.0f} ms", c.message]
        for c in h.checks
    ]
    html = table(
        ["bucket", "verdict", "HTTP", "error code", "region", "latency", "message"],
        rows,
        caption="HeadBucket per bucket",
    )
    return Body(html, "; ".join(f"{c.bucket}: {c.verdict}" for c in h.checks))


@renders(ChecksumReport)
def checksums_view(r: ChecksumReport) -> Body:
    states: dict[str, int] = {}
    for job in r.jobs:
        states[job.state] = states.get(job.state, 0) + 1
    pairs = [
        ("Mode", r.mode),
        ("Jobs verified", states),
        ("Affected tenants", r.affected_tenants),
        ("Affected files", len(r.affected_files)),
    ]
    # What needs a look first; jobs that delivered nothing are one line, not a row each.
    checked = sorted(
        (j for j in r.jobs if j.state != "no_manifest"),
        key=lambda j: CHECKSUM_ORDER.get(j.state, 0),
    )
    rows = [
        [
            j.job_id,
            j.tenant,
            j.bucket,
            j.state,
            j.ok,
            len(j.mismatched),
            len(j.missing),
            j.error or getattr(j, "detail", ""),
        ]
        for j in checked
    ]
    undelivered = [j.job_id for j in r.jobs if j.state == "no_manifest"]
    html = facts(pairs)
    if rows:
        html += table(
            ["job", "tenant", "bucket", "state", "ok", "mismatched", "missing", "detail"],
            rows,
            caption="Jobs verified",
        )
    if undelivered:
        html += paragraph(
            f"No manifest: never delivered data, so nothing to verify "
            f"({len(undelivered)} job(s)): {cell(undelivered)}."
        )
    html += table(
        ["file"], [[f] for f in r.affected_files], caption="Mismatched or missing segments"
    )
    return Body(html, f"{len(r.jobs)} jobs verified: {cell(states)}")


CHECKSUM_ORDER = {"failed": 0, "error": 1, "not_found": 2, "passed": 3}
"""The order of the jobs verified: mismatches and missing segments first."""


@renders(ImpactSweep)
def impact_view(s: ImpactSweep) -> Body:
    """What the sweep covered, what it found damaged and where, and what it could not verify."""
    label = "Impact sweep: every delivery of the incident"
    if not s.ran:
        text = f"Not run: {s.reason}."
        return Body(paragraph(text), f"impact sweep not run: {s.reason}", label=label)
    html = facts(_impact_facts(s)) + table(
        ["where", "value", "damaged", "of verified", "share"],
        [[c.dimension, c.value, c.damaged, c.verified, percent(c.share)] for c in s.concentration],
        caption="Where the damage concentrates",
    )
    html += table(
        ["job", "attempt", "tenant", "connector", "bucket", "delivered", "mismatched", "missing"],
        [_damaged_row(c) for c in s.damaged],
        caption="Damaged deliveries",
    )
    if s.unverified:
        rows = [[c.job_id, c.attempt, c.tenant, c.bucket, c.error] for c in s.unverified]
        html += table(["job", "attempt", "tenant", "bucket", "why"], rows, caption="Unverified")
    html += table(["file"], [[f] for f in s.files], caption="Mismatched or missing segments")
    summary = f"{s.coverage}: {len(s.damaged)} damaged, {len(s.unverified)} unverified"
    return Body(html, summary, label=label)


def _impact_facts(s: ImpactSweep) -> list[tuple[str, Any]]:
    return [
        ("Why", s.reason),
        ("Window", f"{cell(s.since)} → {cell(s.until)}"),
        ("Coverage", f"{s.coverage} (cap {s.cap:,})"),
        (
            "Deliveries",
            f"{s.passed:,} passed, {len(s.damaged):,} damaged, {len(s.unverified):,} unverified",
        ),
        ("Segments checked", f"{s.segments:,} in {s.elapsed:.1f} s ({s.mode})"),
        ("Affected jobs", f"{len(s.affected_jobs):,}"),
        ("Affected tenants", s.affected_tenants),
        ("Affected buckets", s.affected_buckets),
        ("Affected files", f"{len(s.files):,}"),
        ("First damaged delivery", _delivery(s.first_damaged)),
        ("Last damaged delivery", _delivery(s.last_damaged)),
    ]


def _delivery(check: DeliveryCheck | None) -> str:
    if check is None:
        return "—"
    return f"{check.name} ({check.tenant}, {check.bucket}) at {cell(check.delivered_at)}"


def _damaged_row(c: DeliveryCheck) -> list[Any]:
    return [
        c.job_id,
        c.attempt,
        c.tenant,
        c.connector,
        c.bucket,
        c.delivered_at,
        len(c.mismatched),
        len(c.missing),
    ]


@renders(NetworkPath)
def network_view(p: NetworkPath) -> Body:
    pairs: list[tuple[str, Any]] = [
        ("Target", f"{p.host}:{p.port}"),
        ("Measured with", p.command),
        ("Loss at the destination", f"{cell(p.loss_pct)}%"),
        ("Round trip p50 / p95", f"{cell(p.p50_ms)} / {cell(p.p95_ms)} ms"),
    ]
    if getattr(p, "error", None):
        pairs.append(("Error", p.error))
    hops = [
        [h.index, h.host, h.sent, h.received, f"{h.loss_pct:g}%", h.p50_ms, h.p95_ms, h.avg_ms]
        for h in p.hops
    ]
    html = facts(pairs) + table(
        ["hop", "host", "sent", "received", "loss", "p50 ms", "p95 ms", "avg ms"],
        hops,
        caption="Hops",
    )
    return Body(html, f"{p.host}: loss {cell(p.loss_pct)}%, p95 {cell(p.p95_ms)} ms")


@renders(Assessment)
def assessment_view(a: Assessment) -> Body:
    ranked = sorted(a.recommendations, key=lambda r: r.priority)
    items = "".join(
        f"<li><strong>{escape(r.action)}</strong> — {escape(r.reason)}<br>"
        f"{command_html(r.command)} <small>({escape(cell(r.finding_codes))})</small></li>"
        for r in ranked
    )
    html = f"<ol>{items}</ol>\n" if items else paragraph("No mitigation is recommended.")
    summary = "; ".join(f"{r.action}: {r.command or NO_COMMAND}" for r in ranked) or "none"
    return Body(html, summary, label="Recommendations")


@renders(MitigationPlan)
def plan_view(p: MitigationPlan) -> Body:
    rows = [[s.priority, s.action, s.command or NO_COMMAND, s.plan, s.reason] for s in p.steps]
    applied = p.applied or "nothing"
    html = (
        f"<p><strong>{escape(p.note)}</strong></p>\n"
        + table(
            ["priority", "action", "runbook command", "what it would change", "why"],
            rows,
            caption="Recommended mitigations",
        )
        + facts([("Mode", p.mode), ("Applied", applied)])
    )
    done = [[o.action, o.status.replace("_", " "), o.message] for o in p.outcomes]
    if done:
        html += table(["action", "outcome", "detail"], done, caption="Policy in this run")
    return Body(html, p.note, label="Recommended runbook commands")


@renders(BulkPause)
def bulk_view(b: BulkPause) -> Body:
    flag = b.flag
    pairs = [
        ("Bulk exports paused", b.paused),
        ("Set by", f"{flag.set_by} at {cell(flag.set_at)}" if flag else None),
        ("Queued / running bulk exports", f"{b.queued_bulk} / {b.running_bulk}"),
        ("Plan", b.plan),
        ("Applied", b.applied),
    ]
    return Body(facts(pairs), f"bulk paused: {cell(b.paused)}", label="Pause new bulk exports")


@renders(Declaration)
def declaration_view(d: Declaration) -> Body:
    pairs = [
        ("Incident", d.incident_id),
        ("Declared at", d.declared_at),
        ("Operator", d.operator),
        ("Comms lead", d.comms_lead or "unassigned"),
        ("Mode", d.mode),
        ("Alert", d.alert_summary),
        ("Platform", d.platform),
        ("Export bucket", d.export_bucket),
        ("Export target", d.target_host),
        ("Reported jobs", d.reported_jobs),
        ("Incident start (estimate)", d.incident_start),
    ]
    summary = f"{d.incident_id}: comms lead {d.comms_lead or 'unassigned'}"
    return Body(facts(pairs), summary, label="Declare incident; assign comms lead")


@renders(Recovery)
def recovery_view(r: Recovery) -> Body:
    fallback = f"{r.fallback.value} (set by {r.fallback.set_by})" if r.fallback else "off"
    checks = r.checksums
    verified = (
        f"{len(checks.jobs)} jobs, {len(checks.failed_job_ids)} failing"
        if checks is not None
        else "not re-verified"
    )
    if checks is not None and r.affected > r.rechecked:
        verified += f" (a sample: {r.rechecked} of {r.affected} affected jobs)"
    pairs = [
        ("Verdict", r.verdict),
        ("Why", r.reason),
        (
            "Success rate / baseline",
            f"{percent(r.success_rate)} / {percent(r.baseline_rate)} over {r.attempts} attempts",
        ),
        ("Checksums re-verified", verified),
        ("Fallback bucket", fallback),
        ("Bulk exports paused", r.bulk_paused),
        ("Configuration reverted", _reverted(r)),
        ("Tenants to notify", r.tenants_to_notify),
    ]
    changes = [[c.job_id, c.old, c.new, c.reverted] for c in r.chunk_changes]
    html = facts(pairs) + table(
        ["job", "old chunk size", "new chunk size", "reverted"],
        changes,
        caption="Chunk size changes",
    )
    return Body(html, f"{r.verdict}: {r.reason}")


def _reverted(r: Recovery) -> str:
    """Whether the configuration is as before the incident, and why it counts as such."""
    if not r.config_reverted:
        return "no"
    if r.chunk_changes:
        return f"yes ({len(r.chunk_changes)} chunk size change(s) restored)"
    return "yes (no fallback flag, bulk exports not paused, no chunk size changed)"


@renders(StatusUpdate)
def status_update_view(u: StatusUpdate) -> Body:
    return Body(text=u.text, markdown=u.markdown, label="Status update")


@renders(AuditSummary)
def audit_view(a: AuditSummary) -> Body:
    summary = f"{len(a.tenants)} tenants, {len(a.files)} files"
    return Body(text=summary, markdown=a.markdown, label="Audit summary")


@renders(Baseline)
def baseline_view(b: Baseline) -> Body:
    pairs = [
        ("Window", f"{cell(b.since)} → {cell(b.until)}"),
        ("Days", b.days),
        ("Days with data", b.days_with_data),
        ("Usual success rate", percent(b.overall)),
    ]
    summary = f"baseline {percent(b.overall)} over {b.days_with_data} days"
    return Body(facts(pairs), summary, label="Baseline")


TRAIL_COLUMNS = ("seq", "at", "operator", "kind", "action", "outcome", "summary", "key")


@renders(Trail)
def trail_view(t: Trail) -> Body:
    """The audit trail: what was applied, every journal entry, and the chain's head."""
    label = "Audit trail: the mitigation journal"
    if not t.chain_ok:
        return Body(paragraph("The journal could not be read: see the finding."), "", None, label)
    if not t.entries:
        text = f"No mitigation has been planned or applied for {t.incident}."
        return Body(paragraph(text), text, None, label)
    rows = [_journal_row(e) for e in t.entries]
    done = ", ".join(f"{a.action} by {a.operator} at {cell(a.at)}" for a in t.applied)
    lead = f"Applied: {done}." if done else "Nothing applied yet."
    chain = f"{len(t.entries)} entries, hash chain verified (head {t.head[:16]})."
    text = "\n".join([lead, *("  ".join(row) for row in rows), chain])
    return Body(paragraph(lead) + _journal_table(rows) + paragraph(chain), text, None, label)


def _journal_row(entry: JournalEntry) -> list[str]:
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


def _journal_table(rows: list[list[str]]) -> str:
    """Every entry (no row limit: this is the audit record)."""
    head = "".join(f"<th>{c}</th>" for c in TRAIL_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    caption = "<caption>Journal</caption>"
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"
