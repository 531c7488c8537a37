"""The response before anything is applied: the immediate actions' state and the
mitigation plan.

The runbook's Immediate Actions ask to pause new bulk exports and to capture failing job
IDs and sample logs; its Mitigations list three commands. The notebook never applies any
of them by itself: :func:`bulk_pause` reads whether bulk exports are paused now and what
``exportctl pause bulk`` would hold back, :func:`capture` keeps the failing job IDs and
log samples for the record, and :func:`mitigation_plan` turns the assessment's
recommendations into the runbook commands with what each would change. Applying them is
the mitigation panel's job, in an interactive session, with a confirmation.

One exception, set by people ahead of time: in an unattended run, :func:`respond` applies
the recommended mitigations that ``[policy] auto_apply`` allows (pausing bulk exports,
say), each once per incident, through the same journaled code path as the panel, and
lists what it applied, what it found applied already, and what policy left to people.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from exportnb.core.findings import Finding
from exportnb.incident.steps.jobstate import JobSample
from exportnb.mitigation import registry
from exportnb.mitigation.lifecycle import auto_apply
from exportnb.mitigation.policy import effective_mode
from exportnb.platform import Platform
from exportnb.platform.model import BULK_PAUSE_FLAG, Flag, JobQuery

if TYPE_CHECKING:
    from exportnb.incident.model import Incident
    from exportnb.incident.steps.jobstate import JobState
    from exportnb.mitigation.assessment import Assessment

PAUSE_BULK_COMMAND = "exportctl pause bulk"
BULK_EXPORTS_RUNNING = "bulk_exports_running"
NOTHING_APPLIED = {
    "auto": "Automatic run: nothing is applied that [policy] auto_apply does not allow. "
    "These are the runbook's commands with what each would change; apply the others from "
    "an interactive session (mode=interactive).",
    "interactive": "Nothing has been applied yet: each command needs a plan, a confirmation "
    "and a journal entry, from the mitigation panel.",
}
OTHER_PLANS = {  # recommendations that are not mitigations: people carry them out
    "re-export": "Export again the jobs whose delivered files failed verification.",
    "notify-tenants": "Tell the affected tenants which files are re-exported, and when.",
    "escalate-network": "Hand the path measurements to the network team.",
    "investigate": "No runbook mitigation fits the evidence: look further.",
}
SCAN_QUEUED = 1000


@dataclass(frozen=True)
class BulkPause:
    """Pause new bulk exports: the current state, and what pausing would hold back."""

    KIND: ClassVar[str] = "bulk-pause/v1"
    paused: bool
    flag: Flag | None
    queued_bulk: int
    running_bulk: int
    command: str
    plan: str
    applied: bool
    findings: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class FailureCapture:
    """Capture failing job IDs and sample logs."""

    KIND: ClassVar[str] = "failure-capture/v1"
    failing_job_ids: list[str]
    total_failed: int
    truncated: bool
    reported_jobs: list[str]
    samples: list[JobSample]
    findings: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class PlannedMitigation:
    action: str
    command: str
    plan: str
    reason: str
    params: dict[str, Any]
    priority: int
    finding_codes: list[str]


@dataclass(frozen=True)
class AutoOutcome:
    """What an unattended run did with one recommended mitigation (policy decided)."""

    action: str
    status: str  # mitigations.STATUSES: applied, already_applied, not_allowed, refused...
    message: str
    key: str


@dataclass(frozen=True)
class MitigationPlan:
    """The recommended commands, most urgent first, and what was applied (by policy)."""

    KIND: ClassVar[str] = "mitigation-plan/v1"
    mode: str
    steps: list[PlannedMitigation]
    applied: list[str]
    note: str
    outcomes: list[AutoOutcome] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def bulk_pause(platform: Platform) -> BulkPause:
    """Whether bulk exports are paused, and how many bulk jobs a pause would concern."""
    flag = platform.get_flag(BULK_PAUSE_FLAG)
    paused = flag is not None and bool(flag.value)
    queued = _bulk(platform, "queued")
    running = _bulk(platform, "running")
    if paused:
        plan = f"Already paused by {flag.set_by if flag else '?'}: nothing to do."
        findings: list[Finding] = []
    else:
        plan = (
            f"`{PAUSE_BULK_COMMAND}` would hold back {queued} queued bulk export(s); "
            f"{running} running one(s) would finish."
        )
        summary = f"Bulk exports are not paused ({queued} queued, {running} running)"
        evidence = {"queued": queued, "running": running}
        findings = [Finding(BULK_EXPORTS_RUNNING, "info", summary, "immediate_actions", evidence)]
    return BulkPause(paused, flag, queued, running, PAUSE_BULK_COMMAND, plan, False, findings)


def _bulk(platform: Platform, status: str) -> int:
    jobs = platform.list_jobs(JobQuery(status=status, limit=SCAN_QUEUED))
    return sum(1 for job in jobs if job.kind == "bulk")


def capture(job_state: JobState, reported_jobs: Sequence[str] = ()) -> FailureCapture:
    """The failing job IDs and the log samples of a job state, for the record."""
    return FailureCapture(
        failing_job_ids=list(job_state.failing_job_ids),
        total_failed=job_state.total_failed,
        truncated=job_state.truncated,
        reported_jobs=list(reported_jobs),
        samples=list(job_state.samples),
    )


def respond(incident: Incident, assessment: Assessment) -> MitigationPlan:
    """The mitigation plan; in an unattended run (``auto``), with what policy applied.

    Interactive sessions apply nothing here: the engineer uses the panel."""
    mode = effective_mode(incident.mode)
    if mode != "auto":
        return mitigation_plan(assessment, mode=mode)
    done = auto_apply(incident.platform, incident.id, assessment, operator=incident.operator)
    outcomes = [AutoOutcome(o.action, o.status, o.message, o.key) for o in done]
    return mitigation_plan(
        assessment, mode=mode, outcomes=outcomes, findings=[f for o in done for f in o.findings]
    )


def mitigation_plan(
    assessment: Assessment,
    *,
    mode: str,
    outcomes: Sequence[AutoOutcome] = (),
    findings: Sequence[Finding] = (),
) -> MitigationPlan:
    """The assessment's recommendations as runbook commands with their plans, and the
    ``outcomes`` of what policy applied (:func:`respond`)."""
    steps = [
        PlannedMitigation(
            action=r.action,
            command=r.command,
            plan=plan_of(r.action, r.params),
            reason=r.reason,
            params=dict(r.params),
            priority=r.priority,
            finding_codes=list(r.finding_codes),
        )
        for r in sorted(assessment.recommendations, key=lambda r: r.priority)
    ]
    applied = [o.action for o in outcomes if o.status in ("applied", "already_applied")]
    note = NOTHING_APPLIED.get(mode, NOTHING_APPLIED["auto"])
    if applied:
        note = f"Applied by policy ([policy] auto_apply): {', '.join(applied)}. " + note
    return MitigationPlan(
        mode=mode,
        steps=steps,
        applied=applied,
        note=note,
        outcomes=list(outcomes),
        findings=list(findings),
    )


def plan_of(action: str, params: dict[str, Any]) -> str:
    """What a recommended action would change, in words, with its parameters: a
    mitigation's :attr:`~exportnb.mitigation.registry.Mitigation.gist`, else the words for
    what people do."""
    mitigation = registry.find(action)
    gist = mitigation.gist if mitigation is not None else OTHER_PLANS.get(action, "")
    plan = gist or "Run the command below."
    shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
    return f"{plan} ({shown})" if shown else plan


def _short(value: Any, limit: int = 5) -> str:
    if isinstance(value, (list, tuple)):
        head = ", ".join(str(v) for v in value[:limit])
        return f"[{head}{', …' if len(value) > limit else ''}]"
    return str(value)
