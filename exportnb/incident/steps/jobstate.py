"""Job state (runbook Diagnostics 1, ``exportctl list --status failed --limit 20``).

What failed in the window, and where:

* ``latest``: the ``limit`` most recent failed jobs, with their error reasons.
* every failed job of the window (up to ``scan_limit``; ``truncated`` says when there were
  more), categorized by connector, storage (bucket) and error code, with counts, first
  and last seen and the tenants hit, and counted per connector, bucket and error code.
* ``samples``: log excerpts of a few failing jobs (runbook Immediate Actions: "capture
  failing job IDs and sample logs"), chosen so that they cover distinct error codes.

A job is *in the window* when it is ``failed`` now and its last attempt finished within
``[since, until]``. Platforms list jobs by creation time, so jobs created up to
``lookback_minutes`` before ``since`` are looked at too: a job that was retried, or ran
long, fails well after it was created. ``bucket`` is the job's destination bucket.

A failure is *concentrated* (finding ``failures_concentrated``, one per dimension) when
one error code, bucket or connector accounts for at least ``concentration`` (60%) of the
failures and for at least ``min_failures`` (5) of them. A bucket or connector must also
hold more of the failures than of the traffic: a bucket that takes 85% of all exports
takes about 85% of the failures when nothing is wrong with it. So its failures must be
unlikely (binomial tail under ``CONCENTRATION_P_VALUE``) had each failure landed on it
with its share of the window's jobs (all statuses, listed the same way, up to
``scan_limit``); ``traffic_share`` and ``p_value`` are in the evidence. The evidence names the
``dimension`` and ``value``, the ``share`` and ``count``, and what else the jobs involved
have in common: their ``buckets``, ``chunk_sizes`` (logical bytes, distinct, ascending),
``connectors``, ``error_codes`` and ``tenants`` (and ``chunk_size_counts``: failures per
chunk size, keyed by the size as a string), so that rules can tell, say, that
timeouts hit only large chunks, or that throttling hits only one bucket.

Findings about request timeouts (``chunk_timeouts``, and ``failures_concentrated`` on
``RequestTimeout``) also carry what the chunk sizes did on the buckets concerned, so that a
smaller chunk size is chosen from evidence rather than from the runbook's example:
``chunk_outcomes``, one entry per bucket (:func:`chunk_outcomes`), and ``window``, the
``since`` and ``until`` of the jobs they count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from exportnb.core.codec import format_time
from exportnb.core.errors import InvalidInput, NotFound
from exportnb.core.findings import CHUNK_TIMEOUTS, FAILURES_CONCENTRATED, Finding
from exportnb.core.quantities import format_size
from exportnb.incident.steps.baseline import binomial_tail, checked_range
from exportnb.platform import Platform
from exportnb.platform.model import Job, JobQuery, LogLine

if TYPE_CHECKING:
    import pandas as pd

STEP = "job_state"
NO_ERROR_CODE = "unknown"
"""The error code a failed job without one is counted under."""
CONCENTRATION_P_VALUE = 0.01
"""How unlikely a bucket's or connector's failures must be under its share of the traffic."""
TRAFFIC_DIMENSIONS = ("bucket", "connector")
"""Dimensions that successful jobs have too, so that their traffic share is known."""
MAX_EVIDENCE_JOBS = 200
"""Job IDs a finding's evidence lists (the newest first)."""
SAMPLE_LOG_LINES = 20
"""Log lines kept per sample: the last ones, which hold the error."""
DIMENSIONS: tuple[tuple[str, Callable[[Job], str]], ...] = (
    ("error_code", lambda job: job.error_code or NO_ERROR_CODE),
    ("bucket", lambda job: job.bucket),
    ("connector", lambda job: job.connector),
)


TIMEOUT_CODES = ("RequestTimeout",)
"""S3 error codes of a request that took too long to send."""


@dataclass(frozen=True)
class FailureCategory:
    connector: str
    bucket: str
    error_code: str
    count: int
    first_seen: datetime
    last_seen: datetime
    tenants: list[str]


@dataclass(frozen=True)
class JobSample:
    job_id: str
    error_code: str | None
    error_message: str | None
    logs: list[LogLine]
    tenant: str = ""
    connector: str = ""
    bucket: str = ""
    chunk_size: int = 0
    attempts: int = 0


@dataclass(frozen=True)
class JobState:
    KIND: ClassVar[str] = "job-state/v1"
    since: datetime
    until: datetime
    latest: list[Job]
    total_failed: int
    truncated: bool
    categories: list[FailureCategory]
    by_connector: dict[str, int]
    by_bucket: dict[str, int]
    by_error: dict[str, int]
    samples: list[JobSample]
    findings: list[Finding] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)  # every failed job seen, newest first
    tenants: list[str] = field(default_factory=list)

    @property
    def failing_buckets(self) -> list[str]:
        """Buckets with failures, the most failures first."""
        return list(self.by_bucket)

    @property
    def failing_job_ids(self) -> list[str]:
        return list(self.job_ids)

    def frame(self) -> pd.DataFrame:
        """The categories frame, the largest category first."""
        import pandas as pd  # deferred: pandas is heavy

        columns = [
            "connector",
            "bucket",
            "error_code",
            "count",
            "first_seen",
            "last_seen",
            "tenants",
        ]
        rows = [
            {
                "connector": c.connector,
                "bucket": c.bucket,
                "error_code": c.error_code,
                "count": c.count,
                "first_seen": c.first_seen,
                "last_seen": c.last_seen,
                "tenants": ", ".join(c.tenants),
            }
            for c in self.categories
        ]
        frame = pd.DataFrame(rows, columns=columns)
        for column in ("first_seen", "last_seen"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame.astype({"count": "int64"})


class JobStateOptions(TypedDict):
    """What :func:`job_state` is told of an incident, after the platform: the time it covers."""

    since: datetime
    until: datetime


def job_state(
    platform: Platform,
    *,
    since: datetime,
    until: datetime,
    limit: int = 20,
    sample_logs: int = 5,
    scan_limit: int = 5000,
    lookback_minutes: int = 60,
    concentration: float = 0.6,
    min_failures: int = 5,
) -> JobState:
    """The failed jobs of ``[since, until]``: the latest, their categories, sample logs."""
    start, end = checked_range(since, until)
    _check_counts(limit=limit, scan_limit=scan_limit, sample_logs=sample_logs)
    if not 0 < concentration <= 1:
        raise InvalidInput(f"concentration must be a share above 0 and at most 1: {concentration}")
    query = JobQuery(
        status="failed",
        since=start - timedelta(minutes=max(0, lookback_minutes)),
        until=end,
        limit=scan_limit,
    )
    listed = platform.list_jobs(query)
    failed = sorted((j for j in listed if start <= seen(j) <= end), key=seen, reverse=True)
    window = _window_jobs(platform, replace(query, status=None), start, end) if failed else []
    traffic = _traffic(window)
    state = JobState(
        since=start,
        until=end,
        latest=failed[:limit],
        total_failed=len(failed),
        truncated=len(listed) >= scan_limit,
        categories=categorize(failed),
        by_connector=_counts(failed, "connector"),
        by_bucket=_counts(failed, "bucket"),
        by_error=_counts(failed, "error_code"),
        samples=samples(platform, failed, sample_logs),
        job_ids=[j.id for j in failed],
        tenants=sorted({j.tenant for j in failed}),
    )
    findings = concentrated(failed, share=concentration, min_failures=min_failures, traffic=traffic)
    findings += chunk_timeouts(failed, window, min_failures=min_failures)
    span = {"since": format_time(start), "until": format_time(end)}
    findings = [_with_chunk_outcomes(f, failed, window, span) for f in findings]
    return replace(state, findings=findings)


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        least = 0 if name == "sample_logs" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InvalidInput(f"{name} must be a whole number of at least {least}, got {value!r}")


def _window_jobs(platform: Platform, query: JobQuery, start: datetime, end: datetime) -> list[Job]:
    """Jobs of every status last seen in the window."""
    return [j for j in platform.list_jobs(query) if start <= seen(j) <= end]


def _traffic(jobs: list[Job]) -> dict[str, Counter[str]]:
    """Jobs of the window counted per bucket and per connector."""
    if not jobs:
        return {}
    return {
        dimension: Counter(_value(j, dimension) for j in jobs) for dimension in TRAFFIC_DIMENSIONS
    }


def largest_chunk(job: Job) -> int:
    """The size of a job's largest request: a full chunk, or the whole export if smaller."""
    return min(job.chunk_size, job.bytes) if job.bytes > 0 else job.chunk_size


def chunk_timeouts(failed: list[Job], window: list[Job], *, min_failures: int) -> list[Finding]:
    """CHUNK_TIMEOUTS when request timeouts hit large chunks and spare small ones.

    Sizes are each job's largest request (its chunk size, or the whole export when that is
    smaller). The threshold is the smallest such size of nine in ten timed-out jobs. It
    holds when, among the window's jobs that either succeeded or timed out, at least half
    of those at or above it timed out and under one in twenty below it did.
    """
    timeouts = [j for j in failed if j.error_code in TIMEOUT_CODES]
    if len(timeouts) < min(3, min_failures):
        return []
    sizes = sorted(largest_chunk(j) for j in timeouts)
    threshold = sizes[len(sizes) // 10]
    # Jobs that failed for another reason (throttled, say) never showed whether their chunks
    # would have gone through; jobs still running have not shown it yet.
    telling = [j for j in window if j.status == "succeeded" or j.error_code in TIMEOUT_CODES]
    above = [j for j in telling if largest_chunk(j) >= threshold]
    below = [j for j in telling if largest_chunk(j) < threshold]
    if len(below) < min_failures:
        return []  # too few smaller chunks to tell size from everything else
    hit_above = sum(j.error_code in TIMEOUT_CODES for j in above) / max(1, len(above))
    hit_below = sum(j.error_code in TIMEOUT_CODES for j in below) / max(1, len(below))
    if hit_above < 0.5 or hit_below >= 0.05:
        return []
    involved = [j for j in timeouts if largest_chunk(j) >= threshold]
    return [
        Finding(
            CHUNK_TIMEOUTS,
            "critical",
            f"{len(involved)} jobs with chunks of {format_size(threshold)} or more timed out "
            f"({hit_above:.0%} of such jobs; {hit_below:.0%} of smaller ones)",
            STEP,
            {
                "threshold": threshold,
                "share_above": hit_above,
                "share_below": hit_below,
                "chunk_sizes": sorted({j.chunk_size for j in involved}),
                "buckets": sorted({j.bucket for j in involved}),
                "tenants": sorted({j.tenant for j in involved}),
                "job_ids": [j.id for j in involved[:MAX_EVIDENCE_JOBS]],
            },
        )
    ]


def chunk_outcomes(
    failed: list[Job], window: list[Job], buckets: Iterable[str]
) -> list[dict[str, Any]]:
    """What each chunk size did on each of ``buckets`` in the window, one entry per bucket.

    ``timed_out``: the request sizes that timed out there (each timed-out job's largest
    request, see :func:`largest_chunk`) with the number of jobs, keyed by the size as a
    string; ``succeeded``: the chunk sizes of the jobs delivered there that uploaded at least
    one full chunk, with their number (a job smaller than its chunk size never sent one, so
    it shows nothing about that size); ``job_ids``: the timed-out jobs, newest first.
    """
    outcomes = []
    for bucket in sorted(set(buckets)):
        timed_out = [j for j in failed if j.error_code in TIMEOUT_CODES and j.bucket == bucket]
        succeeded = [
            j
            for j in window
            if j.status == "succeeded"
            and (j.delivered_bucket or j.bucket) == bucket
            and 0 < j.chunk_size <= j.bytes
        ]
        outcomes.append(
            {
                "bucket": bucket,
                "timed_out": _size_counts(largest_chunk(j) for j in timed_out),
                "succeeded": _size_counts(j.chunk_size for j in succeeded),
                "job_ids": [j.id for j in timed_out[:MAX_EVIDENCE_JOBS]],
            }
        )
    return outcomes


def _size_counts(sizes: Iterable[int]) -> dict[str, int]:
    return {str(size): n for size, n in sorted(Counter(sizes).items())}


def _about_timeouts(finding: Finding) -> bool:
    """A ``chunk_timeouts`` finding, or failures concentrated on request timeouts."""
    evidence = finding.evidence
    if finding.code == CHUNK_TIMEOUTS:
        return True
    if finding.code != FAILURES_CONCENTRATED:
        return False
    if evidence.get("dimension") == "error_code":
        return str(evidence.get("value")) in TIMEOUT_CODES
    codes = evidence.get("error_codes") or []
    return bool(codes) and all(str(c) in TIMEOUT_CODES for c in codes)


def _with_chunk_outcomes(
    finding: Finding, failed: list[Job], window: list[Job], span: dict[str, str]
) -> Finding:
    """A timeout finding with the chunk outcomes of its buckets and their window."""
    if not _about_timeouts(finding):
        return finding
    buckets = finding.evidence.get("buckets") or []
    outcomes = chunk_outcomes(failed, window, buckets)
    return replace(
        finding, evidence={**finding.evidence, "chunk_outcomes": outcomes, "window": span}
    )


def seen(job: Job) -> datetime:
    """When a job was last seen failing: its last attempt's end (else its creation)."""
    return job.finished_at or job.started_at or job.created_at


def _value(job: Job, dimension: str) -> str:
    return dict(DIMENSIONS)[dimension](job)


def _counts(jobs: Iterable[Job], dimension: str) -> dict[str, int]:
    counts = Counter(_value(j, dimension) for j in jobs)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def categorize(jobs: list[Job]) -> list[FailureCategory]:
    """Failed jobs grouped by (connector, bucket, error code), the largest group first."""
    groups: dict[tuple[str, str, str], list[Job]] = {}
    for job in jobs:
        key = (job.connector, job.bucket, _value(job, "error_code"))
        groups.setdefault(key, []).append(job)
    categories = [
        FailureCategory(
            connector,
            bucket,
            code,
            len(group),
            min(map(seen, group)),
            max(map(seen, group)),
            sorted({j.tenant for j in group}),
        )
        for (connector, bucket, code), group in groups.items()
    ]
    return sorted(categories, key=lambda c: (-c.count, c.connector, c.bucket, c.error_code))


# Samples -------------------------------------------------------------------------------
def samples(platform: Platform, jobs: list[Job], count: int) -> list[JobSample]:
    """Logs of up to ``count`` failed jobs: the newest of each error code (most frequent code
    first), then the newest of the rest."""
    chosen = _sample_order(jobs)[:count]
    found = [_sample(platform, job) for job in chosen]
    return [s for s in found if s is not None]


def _sample_order(jobs: list[Job]) -> list[Job]:
    by_code: dict[str, Job] = {}
    for job in jobs:  # newest first, so the first of each code is its newest
        by_code.setdefault(_value(job, "error_code"), job)
    order = list(_counts(jobs, "error_code"))
    firsts = [by_code[code] for code in order]
    chosen = {j.id for j in firsts}
    return firsts + [j for j in jobs if j.id not in chosen]


def _sample(platform: Platform, job: Job) -> JobSample | None:
    try:
        detail = platform.get_job(job.id)
    except NotFound:  # gone since it was listed
        return None
    latest = detail.job
    return JobSample(
        job.id,
        latest.error_code,
        latest.error_message,
        detail.logs[-SAMPLE_LOG_LINES:],
        tenant=latest.tenant,
        connector=latest.connector,
        bucket=latest.bucket,
        chunk_size=latest.chunk_size,
        attempts=latest.attempts,
    )


# Concentration ---------------------------------------------------------------------------
def concentrated(
    jobs: list[Job],
    *,
    share: float,
    min_failures: int,
    traffic: dict[str, Counter[str]] | None = None,
) -> list[Finding]:
    """One finding per dimension in which one value holds most of the failures (and, for
    buckets and connectors, more of them than of the traffic)."""
    findings: list[Finding] = []
    for dimension, _ in DIMENSIONS:
        counts = _counts(jobs, dimension)
        if not counts:
            continue
        value, count = next(iter(counts.items()))
        if count < min_failures or count / len(jobs) < share:
            continue
        beyond = _beyond_traffic(count, len(jobs), (traffic or {}).get(dimension), value)
        if beyond is None or beyond["p_value"] < CONCENTRATION_P_VALUE:
            involved = [j for j in jobs if _value(j, dimension) == value]
            findings.append(_finding(dimension, value, involved, len(jobs), beyond or {}))
    return findings


def _beyond_traffic(
    count: int, failures: int, traffic: Counter[str] | None, value: str
) -> dict[str, float] | None:
    """The value's share of the traffic, and how unlikely its failures are under it."""
    total = sum(traffic.values()) if traffic else 0
    if not traffic or not total:
        return None  # no traffic known: judge the share of failures alone
    traffic_share = max(traffic[value], count) / max(total, failures)
    return {
        "traffic_share": traffic_share,
        "p_value": binomial_tail(count, failures, traffic_share),
    }


def _finding(
    dimension: str, value: str, involved: list[Job], total: int, beyond: dict[str, float]
) -> Finding:
    share = len(involved) / total
    label = dimension.replace("_", " ")
    versus = f", against {beyond['traffic_share']:.0%} of all jobs" if beyond else ""
    return Finding(
        FAILURES_CONCENTRATED,
        "warning",
        f"{share:.0%} of failed jobs ({len(involved)} of {total}) share {label} {value}{versus}",
        STEP,
        {
            "dimension": dimension,
            "value": value,
            "share": share,
            "count": len(involved),
            "total": total,
            **beyond,
            "buckets": sorted({j.bucket for j in involved}),
            "chunk_sizes": sorted({j.chunk_size for j in involved}),
            "chunk_size_counts": {
                str(size): n for size, n in sorted(Counter(j.chunk_size for j in involved).items())
            },
            "connectors": sorted({j.connector for j in involved}),
            "error_codes": sorted({_value(j, "error_code") for j in involved}),
            "tenants": sorted({j.tenant for j in involved}),
            "job_ids": [j.id for j in involved[:MAX_EVIDENCE_JOBS]],
        },
    )
