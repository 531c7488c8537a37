"""Communication: the 15-minute status update and the audit summary (runbook "Communication").

* :func:`status_update` drafts "updates every 15 minutes with job success rate and
  mitigations": the incident, the time, the success rate against the baseline (from the
  recovery check, else the failure rate from detection), the findings, the mitigations in
  effect with their expiry (the flags), the recovery verdict, the next steps the
  assessment recommends, the comms lead and the time of the next update. The same content
  comes as Markdown (Slack, the notebook) and as plain text (email, pager).
* :func:`audit_summary` summarizes "affected tenants, files, and corrective actions for
  audit": the tenants whose jobs failed, whose files failed verification (the impact
  sweep's included: every damaged delivery of the incident) or who must be told of
  re-exports; the files (``s3://bucket/key``) the checksum reports and the sweep name; what
  the sweep covered (partial or not); and each corrective action of the audit log, who did
  it and when.

Both only format what the other steps found: they read no platform and have no findings of
their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypedDict

from exportnb.core.errors import InvalidInput
from exportnb.core.findings import SEVERITIES, Finding
from exportnb.core.quantities import format_size
from exportnb.incident.steps.baseline import as_utc
from exportnb.platform.model import AuditEntry, Flag

if TYPE_CHECKING:
    from exportnb.incident.steps.checksums import ChecksumReport
    from exportnb.incident.steps.detection import Detection
    from exportnb.incident.steps.impact import ImpactSweep
    from exportnb.incident.steps.jobstate import JobState
    from exportnb.incident.steps.recovery import Recovery

STEP = "communication"
MAX_FINDINGS = 10
"""Findings listed in a status update (the most severe first); the rest are counted."""
MAX_NEXT_STEPS = 5
MAX_FILES_SHOWN = 100
"""Files listed in the audit summary's Markdown; ``AuditSummary.files`` holds them all."""
JOURNAL_NOTE = "mitigation."
"""The prefix of exportnb's own notes in the audit log, one per journal entry."""
HEADLINES = {
    "recovered": "Recovered: export success rate is back to baseline",
    "not_yet": "Mitigating: exports are not yet back to baseline",
    "insufficient_data": "Monitoring: too little data yet to confirm recovery",
}


class NextStep(Protocol):
    """A recommended mitigation as the status update names it."""

    action: str
    reason: str
    command: str
    priority: int


class Recommendations(Protocol):
    """What the assessment recommends (:class:`exportnb.mitigation.assessment.Assessment`)."""

    @property
    def recommendations(self) -> Sequence[NextStep]: ...


@dataclass(frozen=True)
class Section:
    """A titled block of an update: its lines, rendered as Markdown or as plain text."""

    title: str
    lines: list[str]
    bullets: bool = True


@dataclass(frozen=True)
class StatusUpdate:
    KIND: ClassVar[str] = "status-update/v1"
    incident_id: str
    at: datetime
    next_update_at: datetime
    markdown: str
    text: str
    findings: list[Finding] = field(default_factory=list)
    headline: str = ""
    comms_lead: str = ""
    operator: str = ""


@dataclass(frozen=True)
class AuditSummary:
    KIND: ClassVar[str] = "audit-summary/v1"
    tenants: list[str]
    files: list[str]
    corrective_actions: list[str]
    markdown: str
    findings: list[Finding] = field(default_factory=list)
    incident_id: str = ""


# The status update --------------------------------------------------------------------
class CommsOptions(TypedDict):
    """What :func:`status_update` is told of an incident, besides the results: its ID, the
    time, who leads the comms and who runs it, the flags set on the platform."""

    incident_id: str
    now: datetime
    comms_lead: str
    operator: str
    flags: list[Flag]


def status_update(
    *,
    incident_id: str,
    now: datetime,
    detection: Detection | None,
    recovery: Recovery | None,
    assessment: Recommendations | None,
    findings: Sequence[Finding],
    flags: Sequence[Flag],
    comms_lead: str,
    operator: str,
    next_update_minutes: int = 15,
) -> StatusUpdate:
    """The status update due at ``now``; the next one is due ``next_update_minutes`` later."""
    at = as_utc(now, "now")
    incident = _incident_id(incident_id)
    if isinstance(next_update_minutes, bool) or not isinstance(next_update_minutes, int):
        raise InvalidInput(f"next_update_minutes must be a whole number: {next_update_minutes!r}")
    if next_update_minutes < 1:
        raise InvalidInput("next_update_minutes must be at least 1")
    next_at = at + timedelta(minutes=next_update_minutes)
    headline = _headline(detection, recovery)
    shown = _findings(findings, detection, recovery)
    sections = [
        Section("Status", _status_lines(detection, recovery), bullets=False),
        Section("Findings", _finding_lines(shown) or ["No findings."]),
        Section(
            "Mitigations in effect",
            _flag_lines(_flags(flags, recovery)) + _chunk_lines(recovery) or ["None."],
        ),
        Section("Next steps", _next_steps(assessment) or ["None recommended."]),
        Section(
            "People",
            [
                f"Comms lead: {comms_lead or 'unassigned'}",
                f"Operator: {operator or 'unknown'}",
                f"Next update: {_clock(next_at)}",
            ],
            bullets=False,
        ),
    ]
    title = f"Export incident {incident}: status update {_clock(at)}"
    return StatusUpdate(
        incident,
        at,
        next_at,
        markdown(title, headline, sections),
        text(title, headline, sections),
        headline=headline,
        comms_lead=comms_lead,
        operator=operator,
    )


def _incident_id(incident_id: str) -> str:
    if not isinstance(incident_id, str) or not incident_id.strip():
        raise InvalidInput("incident_id must be a non-empty string")
    return incident_id.strip()


def _headline(detection: Detection | None, recovery: Recovery | None) -> str:
    if recovery is not None:
        return HEADLINES.get(recovery.verdict, recovery.verdict)
    if detection is not None and detection.breached:
        return "Investigating: export failure rate is above the alert threshold"
    return "Investigating"


def _status_lines(detection: Detection | None, recovery: Recovery | None) -> list[str]:
    lines: list[str] = []
    if recovery is not None:
        lines.append(
            f"Success rate (last {recovery.window_minutes} min): "
            f"{_percent(recovery.success_rate)} vs baseline {_percent(recovery.baseline_rate)} "
            f"({recovery.attempts} attempts)"
        )
    if detection is not None:
        state = "above" if detection.breached else "within"
        if detection.insufficient_data:
            state = "too few attempts to judge against"
        lines.append(
            f"Failure rate (last {detection.window_minutes} min): "
            f"{_percent(detection.failure_rate)}, {state} the {detection.threshold:.1%} "
            f"threshold ({detection.failed} of {detection.attempts} attempts failed)"
        )
    if recovery is not None:
        lines.append(f"Recovery: {recovery.verdict.replace('_', ' ')} — {recovery.reason}")
    return lines or ["No detection or recovery data yet."]


def _findings(
    findings: Sequence[Finding], detection: Detection | None, recovery: Recovery | None
) -> list[Finding]:
    """The given findings and those of detection and recovery, each once, most severe first."""
    merged: dict[tuple[str, str], Finding] = {}
    for f in [*findings, *_of(detection), *_of(recovery)]:
        merged.setdefault((f.code, f.summary), f)
    return sorted(merged.values(), key=lambda f: _severity_rank(f.severity))


def _of(result: Any) -> list[Finding]:
    return list(getattr(result, "findings", None) or [])


def _severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def _finding_lines(findings: list[Finding]) -> list[str]:
    lines = [f"[{f.severity}] {f.summary}" for f in findings[:MAX_FINDINGS]]
    if len(findings) > MAX_FINDINGS:
        lines.append(f"… and {len(findings) - MAX_FINDINGS} more")
    return lines


def _flags(flags: Sequence[Flag], recovery: Recovery | None) -> list[Flag]:
    """The flags given, and the ones the recovery check saw, each key once."""
    seen = [recovery.fallback, recovery.bulk_pause] if recovery is not None else []
    merged: dict[str, Flag] = {}
    for flag in [*flags, *seen]:
        if flag is not None:
            merged.setdefault(flag.key, flag)
    return list(merged.values())


def _flag_lines(flags: Iterable[Flag]) -> list[str]:
    return [
        f"`{flag.key}` = `{_value(flag.value)}` (set by {flag.set_by} at {_clock(flag.set_at)}, "
        + (f"expires {_clock(flag.expires_at)})" if flag.expires_at else "no expiry)")
        for flag in flags
    ]


def _chunk_lines(recovery: Recovery | None) -> list[str]:
    changes = [c for c in recovery.chunk_changes if not c.reverted] if recovery else []
    return [
        f"chunk size of {c.job_id}: {_size(c.old)} → {_size(c.current)}"
        + (f" (by {c.changed_by})" if c.changed_by else "")
        for c in changes
    ]


def _next_steps(assessment: Recommendations | None) -> list[str]:
    if assessment is None:
        return []
    ranked = sorted(assessment.recommendations, key=lambda r: r.priority)
    lines = [
        f"{r.action}: {r.reason}" + (f" (`{r.command}`)" if r.command else "")
        for r in ranked[:MAX_NEXT_STEPS]
    ]
    if len(ranked) > MAX_NEXT_STEPS:
        lines.append(f"… and {len(ranked) - MAX_NEXT_STEPS} more")
    return lines


# The audit summary ----------------------------------------------------------------------
def audit_summary(
    *,
    incident_id: str,
    job_state: JobState | None,
    checksums: ChecksumReport | None,
    recovery: Recovery | None,
    actions: Sequence[AuditEntry],
    impact: ImpactSweep | None = None,
) -> AuditSummary:
    """Affected tenants, files and corrective actions, for the record.

    ``actions`` is the platform's audit log; the corrective actions are the changes in it.
    The notes exportnb adds there for each journal entry (``mitigation.*``) are not
    changes: the audit trail shows them. ``impact`` (the impact sweep) adds every damaged
    delivery's tenant and files, and says what it covered."""
    incident = _incident_id(incident_id)
    reports = [checksums, recovery.checksums if recovery is not None else None]
    swept = impact if impact is not None and impact.ran else None
    tenants = sorted(
        {
            *(job_state.tenants if job_state is not None else []),
            *(t for r in reports if r is not None for t in r.affected_tenants),
            *(swept.affected_tenants if swept is not None else []),
            *(recovery.tenants_to_notify if recovery is not None else []),
        }
    )
    files = list(
        dict.fromkeys(
            [
                *(f for r in reports if r is not None for f in r.affected_files),
                *(swept.files if swept is not None else []),
            ]
        )
    )
    changes = [e for e in actions if not e.action.startswith(JOURNAL_NOTE)]
    done = [corrective_action(entry) for entry in sorted(changes, key=lambda e: (e.at, e.id))]
    sections = [
        Section(f"Affected tenants ({len(tenants)})", tenants or ["None."]),
        Section(f"Affected files ({len(files)})", _files_shown(files) or ["None."]),
        Section(f"Corrective actions ({len(done)})", done or ["None recorded."]),
        *_outcome(job_state, recovery, impact),
    ]
    body = markdown(f"Export incident {incident}: audit summary", "", sections)
    return AuditSummary(tenants, files, done, body, incident_id=incident)


def _files_shown(files: list[str]) -> list[str]:
    shown = [f"`{f}`" for f in files[:MAX_FILES_SHOWN]]
    if len(files) > MAX_FILES_SHOWN:
        shown.append(f"… and {len(files) - MAX_FILES_SHOWN} more (all in the record)")
    return shown


def _outcome(
    job_state: JobState | None, recovery: Recovery | None, impact: ImpactSweep | None = None
) -> list[Section]:
    lines: list[str] = [_impact_line(impact)] if impact is not None else []
    if job_state is not None:
        errors = ", ".join(f"{code} {n}" for code, n in list(job_state.by_error.items())[:5])
        lines.append(
            f"Failed jobs {_clock(job_state.since)} to {_clock(job_state.until)}: "
            f"{job_state.total_failed}" + (f" ({errors})" if errors else "")
        )
    if recovery is not None:
        lines.append(f"Recovery: {recovery.verdict.replace('_', ' ')} — {recovery.reason}")
        lines.append(f"Configuration reverted: {'yes' if recovery.config_reverted else 'no'}")
    return [Section("Outcome", lines)] if lines else []


def _impact_line(impact: ImpactSweep) -> str:
    """What the impact sweep covered and found, or why it did not run."""
    if not impact.ran:
        return f"Impact sweep: not run ({impact.reason})"
    since = f" since {_clock(impact.since)}" if impact.since else ""
    return (
        f"Impact sweep{since}: {impact.coverage}; {len(impact.damaged)} damaged "
        f"({len(impact.affected_jobs)} jobs, {len(impact.affected_tenants)} tenants), "
        f"{len(impact.unverified)} unverified"
    )


def corrective_action(entry: AuditEntry) -> str:
    """One audit entry as a line: when, who, what (and why)."""
    reason = f" (reason: {entry.reason})" if entry.reason else ""
    return f"{_clock(entry.at)} {entry.actor}: {_what(entry)}{reason}"


def _what(entry: AuditEntry) -> str:
    new = entry.new if isinstance(entry.new, dict) else {}
    old = entry.old if isinstance(entry.old, dict) else {}
    action, target = entry.action, entry.target
    if action == "flag.set":
        expires = new.get("expires_at")
        until = f", expires {_iso_clock(expires)}" if expires else ", no expiry"
        return f"set `{target}` = `{_value(new.get('value', entry.new))}`{until}"
    if action in ("flag.unset", "flag.expire"):
        return f"{'unset' if action == 'flag.unset' else 'expired'} `{target}`"
    if action == "job.update" and "chunk_size" in new:
        return (
            f"changed the chunk size of {target} from {_size(old.get('chunk_size'))} "
            f"to {_size(new.get('chunk_size'))}"
        )
    if action == "job.retry":
        return _retry(target, new)
    return f"{action} {target}" + (f": {entry.old!r} → {entry.new!r}" if entry.new else "")


def _retry(batch: str, new: dict[str, Any]) -> str:
    jobs = [j for j in new.get("jobs", []) if isinstance(j, str)]
    skipped = new.get("skipped") or {}
    shown = ", ".join(jobs[:10]) + (" …" if len(jobs) > 10 else "")
    line = f"retried {len(jobs)} job(s) (batch {batch}, concurrency {new.get('concurrency')})"
    line += f": {shown}" if jobs else ""
    return line + (f"; skipped {len(skipped)}" if skipped else "")


# Rendering ---------------------------------------------------------------------------------
def markdown(title: str, headline: str, sections: list[Section]) -> str:
    parts = [f"## {title}", *([f"**{headline}**"] if headline else [])]
    for section in sections:
        lines = [f"- {line}" if section.bullets else f"{line}  " for line in section.lines]
        parts.append(f"### {section.title}\n" + "\n".join(lines))
    return "\n\n".join(parts) + "\n"


def text(title: str, headline: str, sections: list[Section]) -> str:
    parts = [title, *([headline] if headline else [])]
    for section in sections:
        lines = [f"  - {line}" if section.bullets else f"  {line}" for line in section.lines]
        parts.append(f"{section.title}:\n" + "\n".join(lines).replace("`", ""))
    return "\n\n".join(parts) + "\n"


def _clock(value: datetime) -> str:
    return as_utc(value, "time").strftime("%Y-%m-%d %H:%M UTC")


def _iso_clock(value: Any) -> str:
    """An ISO-8601 time from an audit entry as a clock time; anything else as it is."""
    try:
        return _clock(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except (ValueError, InvalidInput):
        return str(value)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _value(value: Any) -> str:
    """A flag's value as featurectl shows it: strings bare, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _size(value: Any) -> str:
    return format_size(value) if isinstance(value, int) and value > 0 else str(value)
