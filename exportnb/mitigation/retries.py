"""Watching a retry: where the retried jobs are now, and which failed again the same way.

:func:`watch_retry` is one snapshot (poll it): each job's status (queued, running,
succeeded, failed), attempts and error; counts per status; the jobs that failed again
with the error code they had before the retry (a ``retry_repeat_errors`` warning); and
``done`` once every job ran again and finished. The panel's
:class:`~exportnb.notebook.retrywatch.RetryWatcher` polls it; so can a script::

    outcome = mitigations.apply(platform, plan, confirmed=True)
    watch = watch_retry(platform, outcome.retried, attempts_before=outcome.attempts_before)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exportnb.core import codec
from exportnb.core.errors import ExportnbError
from exportnb.core.findings import Finding
from exportnb.platform import Platform

STEP = "mitigations"
RETRY_REPEAT_ERRORS = "retry_repeat_errors"


@dataclass(frozen=True)
class RetryJob:
    job_id: str
    tenant: str | None
    bucket: str | None
    status: str  # queued|running|succeeded|failed|cancelled|not_found
    attempts: int
    error_code: str | None
    error_message: str | None
    repeat: bool  # failed again with the error it had before the retry


@dataclass(frozen=True)
class RetryWatch:
    """One snapshot of retried jobs, for live progress (poll it)."""

    at: datetime
    jobs: list[RetryJob]
    counts: dict[str, int]
    repeat_errors: list[str]
    done: bool
    findings: list[Finding] = field(default_factory=list)

    def frame(self) -> Any:
        import pandas as pd  # deferred: pandas is heavy, and only a frame needs it

        return pd.DataFrame([codec.encode(j) for j in self.jobs])


def watch_retry(
    platform: Platform, job_ids: Sequence[str], *, attempts_before: Mapping[str, int] | None = None
) -> RetryWatch:
    """The state of retried jobs now, and which failed again with the same error code.

    ``attempts_before`` (``Outcome.attempts_before``) tells each job's attempts at the
    retry; without it the last two attempts are compared."""
    jobs = [_retry_job(platform, j, (attempts_before or {}).get(j)) for j in job_ids]
    counts = {
        s: sum(1 for j in jobs if j.status == s)
        for s in ("queued", "running", "succeeded", "failed")
    }
    repeats = [j.job_id for j in jobs if j.repeat]
    started = all(j.attempts > (attempts_before or {}).get(j.job_id, 0) for j in jobs)
    done = started and all(j.status not in ("queued", "running") for j in jobs)
    findings = [_repeat_finding(jobs)] if repeats else []
    return RetryWatch(datetime.now(UTC), jobs, counts, repeats, done, findings)


def _retry_job(platform: Platform, job_id: str, before: int | None) -> RetryJob:
    try:
        detail = platform.get_job(job_id)
    except ExportnbError:
        return RetryJob(job_id, None, None, "not_found", 0, None, None, False)
    job, attempts = detail.job, sorted(detail.attempts, key=lambda a: a.number)
    earlier = [
        a for a in attempts if a.number <= (before if before is not None else job.attempts - 1)
    ]
    previous = earlier[-1].error_code if earlier else None
    repeat = (
        job.status == "failed"
        and previous is not None
        and len(earlier) < len(attempts)
        and attempts[-1].error_code == previous
    )
    return RetryJob(
        job.id,
        job.tenant,
        job.bucket,
        job.status,
        job.attempts,
        job.error_code,
        job.error_message,
        repeat,
    )


def _repeat_finding(jobs: list[RetryJob]) -> Finding:
    repeats = [j for j in jobs if j.repeat]
    codes = sorted({j.error_code or "?" for j in repeats})
    summary = (
        f"{len(repeats)} retried job(s) failed again with the same error "
        f"({', '.join(codes)}): the cause is not avoided yet"
    )
    evidence = {"job_ids": [j.job_id for j in repeats], "error_codes": codes}
    return Finding(RETRY_REPEAT_ERRORS, "warning", summary, STEP, evidence)
