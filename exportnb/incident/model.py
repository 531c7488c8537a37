"""An incident as the notebook sees it: its parameters resolved, validated and timed.

The template's parameters cell holds JSON values only (:data:`PARAMETERS` are their names
and defaults, checked by :mod:`exportnb.incident.parameters`). The setup cell turns them
into one :class:`Incident`::

    incident = open_incident(**parameters_of(globals()))

which resolves every default (the operator, the platform, ``$EXPORT_BUCKET`` and
``$EXPORT_TARGET_HOST``, the current time), refuses bad input with
:class:`~exportnb.core.errors.InvalidInput` before anything is read, and estimates when the
incident started: the first failing minute of the most recent breach of the failure
threshold in the last :data:`HISTORY_MINUTES`, or ``now - window`` when there is none.

The incident then says what each runbook step works on: the window of every diagnostic,
the buckets to check, the jobs whose checksums to verify, whether and over which window the
impact sweep verifies every delivery (:meth:`Incident.sweep_options`), the affected jobs to
re-verify.
What the notebook records of the incident itself is the :class:`Declaration`; the
immediate actions and the mitigation plan are in :mod:`exportnb.mitigation.actions`.

:meth:`Incident.start_probes` starts the steps that wait on other systems (detection and
job state, HeadBucket, checksum verification, the network path) in the background, each
with exactly the arguments its cell gives it. A cell then asks for its step with
:meth:`Incident.collect`, which returns the early result when the call is the same and
makes the call itself otherwise: the slow probes overlap each other and the charts, and
each step still shows what that very call measured (with its own timestamps). Under
``exportnb run`` the runner has started them already, in a process of its own, as soon as
the run was planned: the incident then opens at the time that process opened it, and the
cells collect from it (:mod:`exportnb.incident.probes`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, ParamSpec, TypedDict, TypeVar

from exportnb.core.codec import readable_time
from exportnb.core.errors import ConfigError, ExportnbError, InvalidInput
from exportnb.core.findings import Finding
from exportnb.core.quantities import format_duration
from exportnb.incident.parameters import (
    MODES,
    PARAMETERS,
    alert_summary,
    parameters_of,
    parse_alert,
    parse_now,
    unique,
    validated,
)
from exportnb.incident.probes import (
    Arguments,
    EarlyProbes,
    HandedProbes,
    arguments,
    handed_over,
    result_of,
)
from exportnb.incident.steps.baseline import minute_rates
from exportnb.incident.steps.checksums import ChecksumReport, verify_jobs
from exportnb.incident.steps.comms import JOURNAL_NOTE, CommsOptions
from exportnb.incident.steps.detection import Detection, DetectionOptions, detect
from exportnb.incident.steps.impact import ImpactSweep, SweepOptions, impact_sweep
from exportnb.incident.steps.jobstate import JobState, JobStateOptions, job_state
from exportnb.incident.steps.network import NetworkOptions, network_path
from exportnb.incident.steps.recovery import RecoveryOptions
from exportnb.incident.steps.storagehealth import storage_health
from exportnb.platform import Platform, current_actor, get_platform
from exportnb.platform.model import AuditEntry, JobQuery, StorageAccess

_T = TypeVar("_T")
_P = ParamSpec("_P")

HISTORY_MINUTES = 120
"""How far back detection looks, and the incident start is searched for."""
COMMS_LEAD_UNASSIGNED = "comms_lead_unassigned"
CHECKSUM_CHOICE = (10, 3, 8, 40)
"""The jobs to verify by default: failing, deliveries per tenant, tenants, all in all."""
SWEEP_ANCHORS = 20
"""Jobs known to be damaged (reported, or failing verification) whose delivery times may
move the impact sweep's start earlier than the estimated incident start."""


class ChartOptions(TypedDict):
    """What a success-rate chart marks of the incident (keyword arguments of
    ``exportnb.notebook.charts.success_rate_chart`` after the frames): the lowest acceptable
    success rate, when the incident started, and each action taken since."""

    threshold: float
    incident_start: datetime
    mitigations: list[tuple[datetime, str]]


@dataclass(frozen=True)
class AssessmentContext:
    """The operator's side of the decision: buckets and the limits to act within."""

    export_bucket: str
    fallback_bucket: str | None
    retry_concurrency: int = 2
    safe_concurrency: int = 1
    chunk_size: int = 50_000_000

    def __post_init__(self) -> None:
        for name in ("retry_concurrency", "safe_concurrency", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"{name} must be a whole number of at least 1, not {value!r}")
        if self.fallback_bucket is not None and not self.fallback_bucket.strip():
            raise InvalidInput("fallback_bucket must be a bucket name or None")


@dataclass(frozen=True)
class Declaration:
    """Incident declared; comms lead assigned: what the record keeps of who and what."""

    KIND: ClassVar[str] = "declaration/v1"
    incident_id: str
    declared_at: datetime
    operator: str
    comms_lead: str
    mode: str
    alert_summary: str
    platform: str
    export_bucket: str
    target_host: str
    reported_jobs: list[str]
    incident_start: datetime
    findings: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class Incident:
    """One incident: its resolved parameters, the platform, and the times it is judged at."""

    id: str
    operator: str
    comms_lead: str
    mode: str
    alert: dict[str, Any]
    alert_summary: str
    reported_jobs: list[str]
    now: datetime
    window_minutes: int
    incident_start: datetime
    breach_found: bool
    failure_threshold: float
    latency_slo: float
    running_sla: float
    stale_heartbeat: float
    baseline_days: int
    recovery_minutes: int
    export_bucket: str
    fallback_bucket: str | None
    extra_buckets: list[str]
    target_host: str
    target_port: int
    platform_name: str
    platform: Platform = field(repr=False, compare=False)
    probe_count: int = 10
    probe_interval: float = 0.05
    probe_grace: float = 1.0
    sweep_mode: str = "auto"
    sweep_cap: int = 5000
    sweep_margin: float = 900.0
    probes: EarlyProbes | HandedProbes = field(
        default_factory=EarlyProbes, repr=False, compare=False
    )
    _chosen: list[tuple[Any, ...]] = field(default_factory=list, repr=False, compare=False)

    @functools.cached_property
    def storage_access(self) -> StorageAccess | None:
        """Where the platform's exports are stored, and the keys it hands over for them."""
        return self.platform.info().storage

    def facts(self) -> list[tuple[str, str]]:
        """What the incident is judged on, as a notebook shows it (not its fields)."""
        return [
            ("Incident", self.id),
            ("Evaluated at", readable_time(self.now)),
            ("Incident start (estimate)", readable_time(self.incident_start)),
            ("Detection window", f"{self.window_minutes} min"),
            ("Mode", self.mode),
            ("Platform", self.platform_name),
            ("Buckets", ", ".join([self.export_bucket, *self.extra_buckets])),
            ("Fallback bucket", self.fallback_bucket or "none configured"),
            ("Export target", f"{self.target_host}:{self.target_port}"),
            (
                "Thresholds",
                f"failure rate {self.failure_threshold:.1%}, latency SLO "
                f"{self.latency_slo:g} s, running SLA {self.running_sla:g} s",
            ),
            (
                "Impact sweep",
                f"{self.sweep_mode}: up to {self.sweep_cap:,} deliveries, from "
                f"{format_duration(self.sweep_margin) if self.sweep_margin else '0'} before "
                "the incident start",
            ),
        ]

    # Times ------------------------------------------------------------------------
    @property
    def window_start(self) -> datetime:
        return self.now - timedelta(minutes=self.window_minutes)

    @property
    def history_since(self) -> datetime:
        """The start of what the detection charts show."""
        return min(self.now - timedelta(minutes=HISTORY_MINUTES), self.incident_start)

    @property
    def recovery_since(self) -> datetime:
        return self.now - timedelta(minutes=self.recovery_minutes)

    @property
    def success_threshold(self) -> float:
        """The lowest acceptable success rate: ``1 - failure_threshold``."""
        return 1.0 - self.failure_threshold

    # What each step works on ------------------------------------------------------
    def detection_options(self) -> DetectionOptions:
        """What :func:`~exportnb.incident.steps.detection.detect` is told of the incident."""
        history = int((self.now - self.history_since).total_seconds() // 60)
        return {
            "now": self.now,
            "window_minutes": self.window_minutes,
            "threshold": self.failure_threshold,
            "latency_slo": self.latency_slo,
            "running_sla": self.running_sla,
            "stale_heartbeat": self.stale_heartbeat,
            "reported_jobs": list(self.reported_jobs),
            "history_minutes": history,
        }

    def job_state_options(self) -> JobStateOptions:
        """What :func:`~exportnb.incident.steps.jobstate.job_state` covers: the incident so far."""
        return {"since": min(self.incident_start, self.window_start), "until": self.now}

    def recovery_options(self) -> RecoveryOptions:
        """What :func:`~exportnb.incident.steps.recovery.verify_recovery` is told of the
        incident (the baseline and the affected jobs aside)."""
        return {
            "now": self.now,
            "window_minutes": self.recovery_minutes,
            "incident_start": self.incident_start,
        }

    def network_options(self) -> NetworkOptions:
        """How :func:`~exportnb.incident.steps.network.network_path` probes the target host."""
        return {
            "port": self.target_port,
            "count": self.probe_count,
            "interval": self.probe_interval,
            "grace": self.probe_grace,
        }

    def chart_options(self) -> ChartOptions:
        """What the success-rate charts mark of the incident (:class:`ChartOptions`)."""
        return {
            "threshold": self.success_threshold,
            "incident_start": self.incident_start,
            "mitigations": self.mitigation_marks(),
        }

    def buckets_to_check(self, job_state: JobState | None = None) -> list[str]:
        """``$EXPORT_BUCKET``, the extra buckets, the buckets failures name, the fallback."""
        failing = list(job_state.failing_buckets) if job_state is not None else []
        fallback = [self.fallback_bucket] if self.fallback_bucket else []
        return unique([self.export_bucket, *self.extra_buckets, *failing, *fallback])

    def checksum_jobs(
        self,
        job_state: JobState | None = None,
        detection: Detection | None = None,
        *,
        failing: int = CHECKSUM_CHOICE[0],
        per_tenant: int = CHECKSUM_CHOICE[1],
        tenants: int = CHECKSUM_CHOICE[2],
        limit: int = CHECKSUM_CHOICE[3],
    ) -> list[str]:
        """Jobs to verify: the reported ones, the newest failing ones, and the newest
        deliveries (within the detection history) of each tenant involved.

        The choice for a given job state and detection is made once: asked again (the
        checksum cell after the early probe), the same jobs come back, even if a running
        job has delivered since."""
        options = (failing, per_tenant, tenants, limit)
        for state, found, chosen_options, chosen in self._chosen:
            if state is job_state and found is detection and chosen_options == options:
                return list(chosen)
        chosen = self.collect(self._choose_jobs, job_state, detection, *options)
        if job_state is not None and detection is not None:
            self._chosen.append((job_state, detection, options, chosen))
        return list(chosen)

    def _choose_jobs(
        self,
        job_state: JobState | None,
        detection: Detection | None,
        failing: int,
        per_tenant: int,
        tenants: int,
        limit: int,
    ) -> list[str]:
        failing_ids = list(job_state.failing_job_ids[:failing]) if job_state is not None else []
        involved = self.tenants_involved(job_state, detection)[:tenants]
        delivered = [
            job.id
            for tenant in involved
            for job in self.platform.list_jobs(
                JobQuery(
                    status="succeeded",
                    since=self.history_since,
                    until=self.now,
                    tenant=tenant,
                    limit=per_tenant,
                )
            )
        ]
        return unique([*self.reported_jobs, *failing_ids, *delivered])[:limit]

    def tenants_involved(
        self, job_state: JobState | None = None, detection: Detection | None = None
    ) -> list[str]:
        """Tenants of the reported jobs first, then those of the failures, most failed first."""
        reported = [r.tenant for r in detection.reported if r.found] if detection else []
        counts: dict[str, int] = {}
        for category in job_state.categories if job_state is not None else []:
            for tenant in category.tenants:
                counts[tenant] = counts.get(tenant, 0) + category.count
        by_failures = sorted(counts, key=lambda t: (-counts[t], t))
        return unique([t for t in (*reported, *by_failures) if t])

    def sweep_options(self, checksums: ChecksumReport | None = None) -> SweepOptions:
        """What :func:`~exportnb.incident.steps.impact.impact_sweep` is told: whether it runs
        (``impact_sweep``: "auto" when checksums are in question, "always", "never") and why,
        its window and cap.

        Checksums are in question when job IDs were reported, else when the checksum step
        found a job failing (``checksums``); those jobs are the evidence, and where one was
        created before the estimated incident start the window starts there (less the
        margin). With reported job IDs, ``checksums`` changes nothing: the sweep can start
        before the checksum step ends (:meth:`start_probes`)."""
        why, evidence = self._sweep_evidence(checksums)
        decision, reason = self._sweep_decision(why)
        start = self.incident_start
        if decision == "run":
            start = min([start, *self._created(evidence[:SWEEP_ANCHORS])])
        return {
            "since": start - timedelta(seconds=self.sweep_margin),
            "until": self.now,
            "cap": self.sweep_cap,
            "decision": decision,
            "reason": reason,
        }

    def _sweep_evidence(self, checksums: ChecksumReport | None) -> tuple[str, list[str]]:
        """Why checksums are in question, and the jobs that say so ("" and none: they are not)."""
        if self.reported_jobs:
            return f"customers reported job IDs ({_listed(self.reported_jobs)})", self.reported_jobs
        failed = list(checksums.failed_job_ids) if checksums is not None else []
        if failed:
            return f"checksum verification failed for {_listed(failed)}", failed
        return "", []

    def _sweep_decision(self, why: str) -> tuple[str, str]:
        if self.sweep_mode == "never":
            if why:
                return "turned_off", f'impact_sweep is "never", although {why}'
            return "not_needed", 'impact_sweep is "never"'
        if self.sweep_mode == "always":
            return "run", 'asked for (impact_sweep is "always")' + (f"; {why}" if why else "")
        if why:
            return "run", why
        return "not_needed", (
            "checksums are not in question: no job IDs were reported and every job "
            "verified above matches its manifest"
        )

    def _created(self, job_ids: list[str]) -> list[datetime]:
        """When each of these jobs was created (an unknown one says nothing of the start)."""
        found = []
        for job_id in job_ids:
            try:
                found.append(self.platform.get_job(job_id).job.created_at)
            except ExportnbError:
                continue
        return found

    def affected_jobs(
        self, checksums: ChecksumReport | None = None, impact: ImpactSweep | None = None
    ) -> list[str]:
        """Jobs whose delivered data is in doubt: reported, failing verification, or damaged
        in the impact sweep (in that order)."""
        failed = list(checksums.failed_job_ids) if checksums is not None else []
        swept = list(impact.affected_jobs) if impact is not None else []
        return unique([*self.reported_jobs, *failed, *swept])

    def assessment_context(self) -> AssessmentContext:
        """What the assessment needs to know of the incident: its buckets."""
        return AssessmentContext(
            export_bucket=self.export_bucket, fallback_bucket=self.fallback_bucket
        )

    def comms_options(self) -> CommsOptions:
        """What :func:`~exportnb.incident.steps.comms.status_update` says of the incident."""
        return {
            "incident_id": self.id,
            "now": self.now,
            "comms_lead": self.comms_lead,
            "operator": self.operator,
            "flags": self.platform.list_flags(),
        }

    def audit_entries(self, limit: int = 500) -> list[AuditEntry]:
        """What was done on the platform since the incident started."""
        return self.platform.audit_log(since=self.incident_start, limit=limit)

    def mitigation_marks(self) -> list[tuple[datetime, str]]:
        """``(time, label)`` of every action since the incident started, for the charts; not
        exportnb's journal notes, which only record (an applied one's change is there too)."""
        entries = self.audit_entries()
        return [
            (e.at, f"{e.action} {e.target}")
            for e in entries
            if not e.action.startswith(JOURNAL_NOTE)
        ]

    # Probes started early ---------------------------------------------------------
    def start_probes(self) -> Incident:
        """Start detection, job state, storage health, checksum verification and the network
        path in the background, with the arguments the template's cells give them (unless a
        probe process of the runner's has started them already); and the impact sweep where it
        runs whatever the checksum step shows: at once where job IDs were reported, once the
        jobs are verified where ``impact_sweep`` is "always"."""
        early = self.probes
        if not isinstance(early, EarlyProbes):
            return self
        host, platform, choose = self.target_host, self.platform, self._choose_jobs
        early.start(network_path, lambda: arguments(network_path, host, **self.network_options()))
        jobs = early.start(
            job_state, lambda: arguments(job_state, platform, **self.job_state_options())
        )
        found = early.start(detect, lambda: arguments(detect, platform, **self.detection_options()))
        early.start(
            storage_health,
            lambda: arguments(
                storage_health,
                self.buckets_to_check(result_of(jobs)),
                access=self.storage_access,
            ),
        )
        chosen = early.start(
            choose,
            lambda: arguments(choose, result_of(jobs), result_of(found), *CHECKSUM_CHOICE),
        )
        verified = early.start(
            verify_jobs, lambda: arguments(verify_jobs, platform, result_of(chosen))
        )
        if self.sweep_known():
            early.start(impact_sweep, lambda: self._early_sweep(jobs, found, verified))
        return self

    def _early_sweep(self, *probes: Future[tuple[Arguments, Any]]) -> Arguments:
        """The sweep's arguments once the probes the first cells need are in (job state,
        detection); and the checksum step's, unless job IDs were reported."""
        jobs, found, verified = probes
        result_of(jobs), result_of(found)
        checks = None if self.reported_jobs else result_of(verified)
        return arguments(impact_sweep, self.platform, **self.sweep_options(checks))

    def sweep_known(self) -> bool:
        """Whether the impact sweep runs whatever the checksum step finds."""
        return self.sweep_mode == "always" or (
            self.sweep_mode == "auto" and bool(self.reported_jobs)
        )

    def collect(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``function(*args, **kwargs)``: the result of the same call started by
        :meth:`start_probes` if there is one, else the call made now."""
        return self.probes.collect(function, *args, **kwargs)

    def declaration(self) -> Declaration:
        """The record of "Declare incident; assign comms lead"."""
        findings = []
        if not self.comms_lead:
            findings.append(
                Finding(
                    COMMS_LEAD_UNASSIGNED,
                    "warning",
                    "No comms lead assigned: name one (parameter comms_lead) "
                    "before the first update",
                    "immediate_actions",
                    {"operator": self.operator},
                )
            )
        return Declaration(
            self.id,
            self.now,
            self.operator,
            self.comms_lead,
            self.mode,
            self.alert_summary,
            self.platform_name,
            self.export_bucket,
            self.target_host,
            list(self.reported_jobs),
            self.incident_start,
            findings,
        )


# Opening an incident ------------------------------------------------------------------
def open_incident(**parameters: Any) -> Incident:
    """Validate the parameters, resolve their defaults, and open the incident.

    Raises InvalidInput for an unknown name or a bad value (nothing is read then),
    NotFound/SandboxError/ConfigError when the platform cannot be had.
    """
    values = validated(parameters)
    handed = handed_over({**PARAMETERS, **parameters})
    platform = get_platform(values["platform"] or None)
    info = platform.info()
    target = values["target_host"] or os.environ.get("EXPORT_TARGET_HOST") or info.target_host
    if not target:
        raise ConfigError("no export target host: pass target_host or set $EXPORT_TARGET_HOST")
    probes: EarlyProbes | HandedProbes
    if handed is not None:  # opened by the runner's probe process: judged at the same times
        opened, probes = handed
        now, start, found = opened.now, opened.incident_start, opened.breach_found
    else:
        now, probes = values["now"], EarlyProbes()
        start, found = incident_start(
            platform,
            now=now,
            window_minutes=values["window_minutes"],
            threshold=values["failure_threshold"],
        )
    return Incident(
        id=values["incident_id"],
        operator=values["operator"] or current_actor(),
        comms_lead=values["comms_lead"],
        mode=values["mode"],
        alert=values["alert"],
        alert_summary=alert_summary(values["alert"]),
        reported_jobs=values["job_ids"],
        now=now,
        window_minutes=values["window_minutes"],
        incident_start=start,
        breach_found=found,
        failure_threshold=values["failure_threshold"],
        latency_slo=values["latency_slo"],
        running_sla=values["running_sla"],
        stale_heartbeat=values["stale_heartbeat"],
        baseline_days=values["baseline_days"],
        recovery_minutes=values["recovery_minutes"],
        export_bucket=os.environ.get("EXPORT_BUCKET") or info.export_bucket,
        fallback_bucket=os.environ.get("EXPORT_FALLBACK_BUCKET") or _first(info.fallback_buckets),
        extra_buckets=values["buckets"],
        target_host=target,
        target_port=values["target_port"],
        platform_name=platform.name,
        platform=platform,
        probe_count=values["probe_count"],
        probe_interval=values["probe_interval"],
        probe_grace=values["probe_grace"],
        sweep_mode=values["impact_sweep"],
        sweep_cap=values["impact_sweep_cap"],
        sweep_margin=values["impact_sweep_margin"],
        probes=probes,
    )


# The incident's start ---------------------------------------------------------------
def incident_start(
    platform: Platform, *, now: datetime, window_minutes: int, threshold: float
) -> tuple[datetime, bool]:
    """The first failing minute of the most recent breach, and whether there was one.

    A minute *breaches* when the failure rate of the window ending with it is above
    ``threshold``. The incident started at the first minute, in the window of the first
    breaching minute of the latest run of them, whose own failure rate is above it.
    """
    since = now - timedelta(minutes=HISTORY_MINUTES + window_minutes)
    rows = minute_rates(platform, since, now)
    breaching = _breaching(rows, window_minutes, threshold)
    if not breaching:
        return now - timedelta(minutes=window_minutes), False
    first = max(breaching)
    while first - 1 in breaching:
        first -= 1
    window = rows[max(0, first - window_minutes + 1) : first + 1]
    failing = [r.minute for r in window if r.total and r.failed / r.total > threshold]
    return (failing[0] if failing else rows[first].minute), True


def _breaching(rows: list[Any], window_minutes: int, threshold: float) -> set[int]:
    """Indexes of the minutes (after the first window) whose window is above threshold."""
    found: set[int] = set()
    for i in range(window_minutes - 1, len(rows)):
        window = rows[i - window_minutes + 1 : i + 1]
        total = sum(r.total for r in window)
        if total and sum(r.failed for r in window) / total > threshold:
            found.add(i)
    return found


def _first(values: list[str]) -> str | None:
    return values[0] if values else None


def _listed(job_ids: list[str], shown: int = 5) -> str:
    more = f" and {len(job_ids) - shown} more" if len(job_ids) > shown else ""
    return ", ".join(job_ids[:shown]) + more


__all__ = [
    "MODES",
    "PARAMETERS",
    "ChartOptions",
    "Declaration",
    "EarlyProbes",
    "Incident",
    "alert_summary",
    "open_incident",
    "parameters_of",
    "parse_alert",
    "parse_now",
    "validated",
]
