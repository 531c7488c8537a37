"""Detection: the runbook's three alerts, checked against what the platform shows now.

1. **Failure rate.** The share of finished attempts that failed over the last
   ``window_minutes`` (10), against ``threshold`` (2%). Every minute of the last
   ``history_minutes`` gets its own point: the failure rate over the ``window_minutes``
   minutes ending with it, so the chart shows when the rate crossed. Rates come from the
   per-minute counts (cancelled attempts excluded, as in
    :mod:`exportnb.incident.steps.baseline`). With
   fewer than ``min_attempts`` attempts in the window the rate is reported but not judged
   (``insufficient_data``): two failures out of three attempts are not an incident.
2. **Latency.** p50/p95/p99 of attempt durations over the window, against twice the SLO
   (the SLO is a p95 target, so the p95 is what is judged), and one row per minute.
3. **Stuck jobs.** Jobs in ``running`` longer than ``running_sla``, or whose last
   heartbeat is older than ``stale_heartbeat`` (a worker that died leaves those).
4. **Reported jobs.** Job IDs customers reported are looked up. An ID the platform does
   not know is reported as not found (finding ``reported_jobs_unknown``), never raised.

The window ends at ``now``: its last minute is the (possibly partial) minute holding it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar, TypedDict

from exportnb.core.codec import format_time
from exportnb.core.errors import InvalidInput, NotFound
from exportnb.core.findings import (
    FAILURE_RATE_HIGH,
    LATENCY_HIGH,
    REPORTED_JOBS_UNKNOWN,
    STUCK_JOBS,
    Finding,
)
from exportnb.incident.steps.baseline import MINUTE, as_utc, ceil_minute, minute_index, minute_rates
from exportnb.platform import Platform
from exportnb.platform.model import Job, JobQuery, LatencyPercentiles

if TYPE_CHECKING:
    import pandas as pd

    from exportnb.incident.steps.baseline import MinuteRate

STEP = "detection"
RUNNING_SCAN_LIMIT = 1000
"""Running jobs looked at for stuck ones (a platform runs far fewer at once)."""


@dataclass(frozen=True)
class RatePoint:
    """One minute: its own counts, and the failure rate of the window ending with it."""

    minute: datetime
    total: int
    failed: int
    rolling_failure_rate: float | None
    succeeded: int = 0
    window_total: int = 0
    window_failed: int = 0


@dataclass(frozen=True)
class StuckJob:
    """A running job past the SLA (``running_sla``) or silent (``stale_heartbeat``).

    ``age_seconds`` is the age the reason is about: seconds since the last heartbeat for
    ``stale_heartbeat``, seconds running for ``running_sla``.
    """

    job: Job
    reason: str
    age_seconds: float
    running_seconds: float | None = None
    heartbeat_age_seconds: float | None = None


@dataclass(frozen=True)
class ReportedJob:
    job_id: str
    found: bool
    status: str | None = None
    tenant: str | None = None
    error_code: str | None = None


@dataclass(frozen=True)
class Detection:
    KIND: ClassVar[str] = "detection/v1"
    now: datetime
    window_minutes: int
    threshold: float
    failure_rate: float | None
    rolling: list[RatePoint]
    breached: bool
    latency: LatencyPercentiles
    latency_limit: float
    latency_series: list[LatencyPercentiles]
    stuck: list[StuckJob]
    reported: list[ReportedJob]
    findings: list[Finding] = field(default_factory=list)
    attempts: int = 0
    failed: int = 0
    min_attempts: int = 10
    insufficient_data: bool = False
    latency_breached: bool = False
    latency_slo: float = 60.0
    running_sla: float = 1200.0
    stale_heartbeat: float = 30.0

    @property
    def window_start(self) -> datetime:
        return ceil_minute(self.now) - self.window_minutes * MINUTE

    @property
    def unknown_reported(self) -> list[str]:
        return [r.job_id for r in self.reported if not r.found]

    def rates_frame(self) -> pd.DataFrame:
        """The rates frame of the history, plus ``rolling_failure_rate``."""
        import pandas as pd  # deferred: pandas is heavy

        rolling = self.rolling
        frame = pd.DataFrame(
            {
                "total": [p.total for p in rolling],
                "succeeded": [p.succeeded for p in rolling],
                "failed": [p.failed for p in rolling],
                "rate": [p.succeeded / p.total if p.total else None for p in rolling],
                "rolling_failure_rate": [p.rolling_failure_rate for p in rolling],
            },
            index=minute_index([p.minute for p in rolling]),
        )
        return frame.astype(
            {
                "total": "int64",
                "succeeded": "int64",
                "failed": "int64",
                "rate": "float64",
                "rolling_failure_rate": "float64",
            }
        )

    def latency_frame(self) -> pd.DataFrame:
        """The latency frame: one row per minute of the history (count 0, NaN when idle)."""
        import pandas as pd  # deferred: pandas is heavy

        by_minute = {row.minute: row for row in self.latency_series if row.minute is not None}
        minutes = [p.minute for p in self.rolling] or sorted(by_minute)
        rows = [by_minute.get(m) for m in minutes]
        frame = pd.DataFrame(
            {
                "count": [r.count if r else 0 for r in rows],
                "p50": [r.p50 if r else None for r in rows],
                "p95": [r.p95 if r else None for r in rows],
                "p99": [r.p99 if r else None for r in rows],
            },
            index=minute_index(minutes),
        )
        return frame.astype(
            {"count": "int64", "p50": "float64", "p95": "float64", "p99": "float64"}
        )


class DetectionOptions(TypedDict):
    """What :func:`detect` is told of an incident, after the platform: the time it is judged
    at, the window and thresholds, the jobs customers reported, the history to chart."""

    now: datetime
    window_minutes: int
    threshold: float
    latency_slo: float
    running_sla: float
    stale_heartbeat: float
    reported_jobs: list[str]
    history_minutes: int


def detect(
    platform: Platform,
    *,
    now: datetime,
    window_minutes: int = 10,
    threshold: float = 0.02,
    latency_slo: float = 60.0,
    running_sla: float = 1200.0,
    stale_heartbeat: float = 30.0,
    reported_jobs: Sequence[str] = (),
    history_minutes: int = 120,
    min_attempts: int = 10,
) -> Detection:
    """Check the runbook's detection rules at ``now``."""
    now = as_utc(now, "now")
    _check_parameters(window_minutes, threshold, latency_slo, history_minutes, min_attempts)
    _check_positive(running_sla=running_sla, stale_heartbeat=stale_heartbeat)
    end = ceil_minute(now)
    counts = minute_rates(platform, end - (history_minutes + window_minutes - 1) * MINUTE, now)
    rolling = rolling_points(counts, window_minutes)[-history_minutes:]
    last = rolling[-1]
    insufficient = last.window_total < min_attempts
    rate = last.rolling_failure_rate
    breached = not insufficient and rate is not None and rate > threshold
    latency = window_latency(platform, end - window_minutes * MINUTE, now)
    limit = 2 * latency_slo
    detection = Detection(
        now=now,
        window_minutes=window_minutes,
        threshold=threshold,
        failure_rate=rate,
        rolling=rolling,
        breached=breached,
        latency=latency,
        latency_limit=limit,
        latency_series=platform.latency(end - history_minutes * MINUTE, now, per_minute=True),
        stuck=stuck_jobs(
            platform, now=now, running_sla=running_sla, stale_heartbeat=stale_heartbeat
        ),
        reported=look_up(platform, reported_jobs),
        attempts=last.window_total,
        failed=last.window_failed,
        min_attempts=min_attempts,
        insufficient_data=insufficient,
        latency_breached=latency.p95 is not None and latency.p95 > limit,
        latency_slo=latency_slo,
        running_sla=running_sla,
        stale_heartbeat=stale_heartbeat,
    )
    return _with_findings(detection)


def _check_parameters(
    window_minutes: int, threshold: float, latency_slo: float, history: int, min_attempts: int
) -> None:
    for name, value in (("window_minutes", window_minutes), ("history_minutes", history)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"{name} must be a whole number of at least 1, got {value!r}")
    if not 0 <= threshold < 1:
        raise InvalidInput(f"threshold must be a share from 0 to 1 (0.02 is 2%), got {threshold}")
    if min_attempts < 0:
        raise InvalidInput("min_attempts must not be negative")
    _check_positive(latency_slo=latency_slo)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise InvalidInput(f"{name} must be a number of seconds greater than zero")


def rolling_points(counts: list[MinuteRate], window: int) -> list[RatePoint]:
    """Each minute with the failure rate of the ``window`` minutes ending with it."""
    points: list[RatePoint] = []
    total = failed = 0
    for i, row in enumerate(counts):
        total += row.total
        failed += row.failed
        if i >= window:
            total -= counts[i - window].total
            failed -= counts[i - window].failed
        points.append(
            RatePoint(
                row.minute,
                row.total,
                row.failed,
                failed / total if total else None,
                succeeded=row.succeeded,
                window_total=total,
                window_failed=failed,
            )
        )
    return points


def window_latency(platform: Platform, since: datetime, until: datetime) -> LatencyPercentiles:
    """The percentiles of one window (no attempts: count 0 and no percentiles)."""
    rows = platform.latency(since, until)
    return rows[0] if rows else LatencyPercentiles(since, until, 0, None, None, None)


# Stuck jobs --------------------------------------------------------------------------
def stuck_jobs(
    platform: Platform, *, now: datetime, running_sla: float, stale_heartbeat: float
) -> list[StuckJob]:
    """Running jobs with a stale heartbeat or past the SLA, the longest-silent first."""
    running = platform.list_jobs(JobQuery(status="running", limit=RUNNING_SCAN_LIMIT))
    found = [_stuck(job, now, running_sla, stale_heartbeat) for job in running]
    stuck = [s for s in found if s is not None]
    return sorted(stuck, key=lambda s: (s.reason != "stale_heartbeat", -s.age_seconds))


def _stuck(job: Job, now: datetime, running_sla: float, stale: float) -> StuckJob | None:
    running = _age(now, job.started_at or job.created_at)
    silent = _age(now, job.heartbeat_at) if job.heartbeat_at else None  # None: not reported
    if silent is not None and silent > stale:
        return StuckJob(job, "stale_heartbeat", silent, running, silent)
    if running > running_sla:
        return StuckJob(job, "running_sla", running, running, silent)
    return None


def _age(now: datetime, then: datetime) -> float:
    return max(0.0, (now - then).total_seconds())


# Reported jobs -----------------------------------------------------------------------
def look_up(platform: Platform, job_ids: Sequence[str]) -> list[ReportedJob]:
    """Each reported ID, found or not. Blank and repeated IDs are dropped."""
    if isinstance(job_ids, str):
        job_ids = [job_ids]
    ids = list(dict.fromkeys(str(j).strip() for j in job_ids if str(j).strip()))
    return [_reported(platform, job_id) for job_id in ids]


def _reported(platform: Platform, job_id: str) -> ReportedJob:
    try:
        job = platform.get_job(job_id).job
    except (NotFound, InvalidInput):
        return ReportedJob(job_id, found=False)
    return ReportedJob(job_id, True, job.status, job.tenant, job.error_code)


# Findings ----------------------------------------------------------------------------
def _with_findings(d: Detection) -> Detection:
    findings = [
        f
        for f in (_failure_finding(d), _latency_finding(d), _stuck_finding(d), _unknown_finding(d))
        if f is not None
    ]
    return replace(d, findings=findings)


def _failure_finding(d: Detection) -> Finding | None:
    if not d.breached or d.failure_rate is None:
        return None
    return Finding(
        FAILURE_RATE_HIGH,
        "critical",
        f"Failure rate {d.failure_rate:.1%} over the last {d.window_minutes} min is above "
        f"the {d.threshold:.1%} threshold ({d.failed} of {d.attempts} attempts failed)",
        STEP,
        {
            "rate": d.failure_rate,
            "threshold": d.threshold,
            "attempts": d.attempts,
            "failed": d.failed,
            "window_minutes": d.window_minutes,
            "since": format_time(d.window_start),
            "until": format_time(d.now),
        },
    )


def _latency_finding(d: Detection) -> Finding | None:
    lat = d.latency
    if not d.latency_breached or lat.p95 is None:
        return None
    return Finding(
        LATENCY_HIGH,
        "warning",
        f"p95 export latency {lat.p95:.0f}s over the last {d.window_minutes} min is above "
        f"2× the SLO ({d.latency_limit:.0f}s)",
        STEP,
        {
            "p50": lat.p50,
            "p95": lat.p95,
            "p99": lat.p99,
            "count": lat.count,
            "limit": d.latency_limit,
            "slo": d.latency_slo,
            "window_minutes": d.window_minutes,
        },
    )


def _stuck_finding(d: Detection) -> Finding | None:
    if not d.stuck:
        return None
    stale = [s for s in d.stuck if s.reason == "stale_heartbeat"]
    return Finding(
        STUCK_JOBS,
        "warning",
        f"{len(d.stuck)} job(s) stuck in running ({len(stale)} with a heartbeat older than "
        f"{d.stale_heartbeat:.0f}s, {len(d.stuck) - len(stale)} running longer than "
        f"{d.running_sla:.0f}s)",
        STEP,
        {
            "job_ids": [s.job.id for s in d.stuck],
            "reasons": {s.job.id: s.reason for s in d.stuck},
            "ages": {s.job.id: round(s.age_seconds, 1) for s in d.stuck},
            "tenants": sorted({s.job.tenant for s in d.stuck}),
            "connectors": sorted({s.job.connector for s in d.stuck}),
            "running_sla": d.running_sla,
            "stale_heartbeat": d.stale_heartbeat,
        },
    )


def _unknown_finding(d: Detection) -> Finding | None:
    unknown = d.unknown_reported
    if not unknown:
        return None
    return Finding(
        REPORTED_JOBS_UNKNOWN,
        "warning",
        f"{len(unknown)} of {len(d.reported)} reported job ID(s) are not known to the "
        f"platform: {', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}",
        STEP,
        {"job_ids": unknown, "reported": [r.job_id for r in d.reported]},
    )
