"""Runbook Diagnostics 3, checksum verification: ``exportctl verify --job <job-id>``.

"Expected: Checksums match; if mismatch, identify missing segments." :func:`verify_jobs`
reads each job's manifest through the platform (``Platform.manifest``) and compares every
segment's SHA-256 with the checksum S3 stores for it (HeadObject with checksum mode: no data
is downloaded), or with ``rehash=True`` downloads and hashes each segment.

All the work of all the jobs shares one bounded thread pool and one S3 client: a job's
segment checks are queued as soon as its manifest is read, so jobs and segments are checked
concurrently without a pool per job. The first manifest of a job that delivered data is
read alone, the others once it is in: a platform that sets up its storage client on first
use (the sandbox does) then sets it up once, not once per worker. The impact sweep
(:mod:`exportnb.incident.steps.impact`), which verifies every delivery of the incident
rather than these jobs, is made of the same pieces (:func:`checksum_client`,
:func:`queue_segments`, :func:`segment_check`, :func:`tally`, :class:`FirstAlone`).

The client goes to ``AWS_ENDPOINT_URL``, else to the endpoint the platform names
(``info().storage``), else boto3's default; the keys the platform hands over (the sandbox's,
say) are used only where the environment has none.

Each job ends in one state:

===============  ==========================================================================
``passed``       every segment's stored checksum matches the manifest
``failed``       some segment is mismatched or missing (the keys are listed)
``no_manifest``  the job exists but never delivered data (a failed job, say): not an error
``not_found``    the platform has no such job; reported, and the other jobs go on
``error``        the platform or storage could not answer (the error text is kept)
===============  ==========================================================================
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from exportnb.core.errors import ExportnbError, InvalidInput, NotFound, StorageError
from exportnb.core.findings import CHECKSUM_MISMATCH, MISSING_SEGMENTS, Finding
from exportnb.platform import Platform, storage
from exportnb.platform.model import Manifest, Segment, SegmentCheck, StorageAccess

STEP = "checksums"
_T = TypeVar("_T")
JOB_STATES: tuple[str, ...] = ("passed", "failed", "no_manifest", "not_found", "error")


@dataclass(frozen=True)
class JobCheck:
    """One job's delivery compared with what storage holds."""

    job_id: str
    tenant: str | None
    bucket: str | None
    state: str  # passed | failed | no_manifest | not_found | error
    ok: int
    mismatched: list[str]
    missing: list[str]
    error: str | None = None
    segments: int = 0
    manifest_key: str | None = None
    detail: str = ""

    @property
    def files(self) -> list[str]:
        """``s3://bucket/key`` of every mismatched or missing segment."""
        return [f"s3://{self.bucket}/{key}" for key in [*self.mismatched, *self.missing]]


@dataclass(frozen=True)
class ChecksumReport:
    """The verification of a set of jobs, and what it shows."""

    KIND: ClassVar[str] = "checksum-report/v1"
    mode: str  # "checksum" (HeadObject, no download) or "rehash" (download and hash)
    jobs: list[JobCheck]
    findings: list[Finding]
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def affected_tenants(self) -> list[str]:
        return sorted({j.tenant for j in self.jobs if j.state == "failed" and j.tenant})

    @property
    def affected_files(self) -> list[str]:
        return [f for j in self.jobs if j.state == "failed" for f in j.files]

    @property
    def failed_job_ids(self) -> list[str]:
        return [j.job_id for j in self.jobs if j.state == "failed"]

    def of_state(self, state: str) -> list[JobCheck]:
        return [j for j in self.jobs if j.state == state]

    def frame(self) -> Any:
        """One row per job: its state and how many segments are ok, mismatched, missing."""
        import pandas as pd  # deferred: pandas is heavy

        rows = [
            (
                j.job_id,
                j.tenant,
                j.bucket,
                j.state,
                j.segments,
                j.ok,
                len(j.mismatched),
                len(j.missing),
                j.error or j.detail,
            )
            for j in self.jobs
        ]
        columns = [
            "job_id",
            "tenant",
            "bucket",
            "state",
            "segments",
            "ok",
            "mismatched",
            "missing",
            "detail",
        ]
        return pd.DataFrame(rows, columns=columns)


def verify_jobs(
    platform: Platform,
    job_ids: Sequence[str],
    *,
    rehash: bool = False,
    workers: int = 8,
    s3: Any = None,
) -> ChecksumReport:
    """Verify the latest delivery of each job (deduplicated, in order) against storage.

    ``workers`` bounds the requests in flight across all jobs. ``s3`` is a client to use
    instead of the one made for the platform's endpoint.
    """
    ids = _job_ids(job_ids)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidInput(f"workers must be a whole number of at least 1, not {workers!r}")
    mode = "rehash" if rehash else "checksum"
    if not ids:
        return ChecksumReport(mode, [], [])
    if s3 is None:
        s3 = checksum_client(platform, pool=workers)
    jobs = _verify(platform, s3, ids, rehash=rehash, workers=workers)
    return ChecksumReport(mode, jobs, _findings(jobs, mode))


def _job_ids(job_ids: Sequence[str]) -> list[str]:
    if isinstance(job_ids, str):
        raise InvalidInput("job_ids must be a list of job IDs, not one string")
    ids = list(dict.fromkeys(job_ids))
    bad = [j for j in ids if not isinstance(j, str) or not j.strip()]
    if bad:
        raise InvalidInput(f"invalid job ID(s): {bad!r}")
    return ids


def checksum_client(platform: Platform, *, pool: int = 8) -> Any:
    """One S3 client for the platform's storage, sized for ``pool`` requests in flight."""
    access = platform.info().storage or StorageAccess()
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or access.endpoint_url
    return storage.client(endpoint, pool=max(pool, 10), credentials=access.client_credentials())


# The work -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Delivery:
    """What the platform says a job delivered, or why it cannot say."""

    job_id: str
    tenant: str | None = None
    bucket: str | None = None
    manifest: Manifest | None = None
    state: str | None = None  # set when there is nothing to check
    error: str | None = None
    detail: str = ""


SegmentOutcome = SegmentCheck | StorageError
SegmentChecker = Callable[[Segment], SegmentOutcome]


def _verify(
    platform: Platform, s3: Any, ids: list[str], *, rehash: bool, workers: int
) -> list[JobCheck]:
    """Read manifests and check segments in one pool; segments queue as manifests arrive."""
    checked: dict[str, JobCheck] = {}
    first = FirstAlone()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
        loads = [pool.submit(_load, platform, job_id, first) for job_id in ids]
        queued: list[tuple[_Delivery, list[Future[SegmentOutcome]]]] = []
        for done in as_completed(loads):
            delivery = done.result()
            queued.append((delivery, _queue_segments(pool, s3, delivery, rehash)))
        for delivery, futures in queued:
            checked[delivery.job_id] = _job_check(delivery, [f.result() for f in futures])
    return [checked[job_id] for job_id in ids]


def _queue_segments(
    pool: ThreadPoolExecutor, s3: Any, delivery: _Delivery, rehash: bool
) -> list[Future[SegmentOutcome]]:
    manifest = delivery.manifest
    if manifest is None:
        return []
    return queue_segments(pool, segment_check(s3, manifest.bucket, rehash), manifest.segments)


def queue_segments(
    pool: ThreadPoolExecutor, check: SegmentChecker, segments: Sequence[Segment]
) -> list[Future[SegmentOutcome]]:
    """One check per segment, queued on the shared pool."""
    return [pool.submit(check, segment) for segment in segments]


def segment_check(s3: Any, bucket: str, rehash: bool) -> SegmentChecker:
    """A segment's check against ``bucket``: its SegmentCheck, or the StorageError met."""

    def check(segment: Segment) -> SegmentOutcome:
        try:
            return storage.check_segment(s3, bucket, segment, rehash=rehash)
        except StorageError as exc:
            return exc

    return check


@dataclass(frozen=True)
class Tally:
    """The outcomes of one delivery's segment checks, by what they found."""

    ok: int
    mismatched: list[str]
    missing: list[str]
    failures: list[StorageError]


def tally(outcomes: Sequence[SegmentOutcome]) -> Tally:
    """Count the ok segments, and list the mismatched and missing keys and the errors."""
    checks = [o for o in outcomes if isinstance(o, SegmentCheck)]
    return Tally(
        sum(1 for c in checks if c.state == "ok"),
        [c.key for c in checks if c.state == "mismatch"],
        [c.key for c in checks if c.state == "missing"],
        [o for o in outcomes if isinstance(o, StorageError)],
    )


class FirstAlone:
    """Lets the first call through alone, and every other once it has returned."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()

    def __call__(self, call: Callable[[], _T]) -> _T:
        if not self._done.is_set():
            with self._lock:
                if not self._done.is_set():
                    try:
                        return call()
                    finally:
                        self._done.set()
        return call()


def _load(platform: Platform, job_id: str, first: FirstAlone | None = None) -> _Delivery:
    try:
        job = platform.get_job(job_id).job
    except NotFound as exc:
        return _Delivery(job_id, state="not_found", detail=exc.message)
    except ExportnbError as exc:
        return _Delivery(job_id, state="error", error=exc.message)
    bucket = job.delivered_bucket or job.bucket

    def read() -> Manifest:
        return platform.manifest(job_id)

    try:
        manifest = first(read) if first and job.delivered_bucket else read()
    except NotFound as exc:
        return _Delivery(job_id, job.tenant, bucket, state="no_manifest", detail=exc.message)
    except ExportnbError as exc:
        return _Delivery(job_id, job.tenant, bucket, state="error", error=exc.message)
    return _Delivery(job_id, job.tenant, manifest.bucket, manifest)


def _job_check(delivery: _Delivery, outcomes: list[SegmentOutcome]) -> JobCheck:
    manifest = delivery.manifest
    if manifest is None:
        return JobCheck(
            delivery.job_id,
            delivery.tenant,
            delivery.bucket,
            delivery.state or "error",
            0,
            [],
            [],
            delivery.error,
            detail=delivery.detail,
        )
    found = tally(outcomes)
    return JobCheck(
        delivery.job_id,
        delivery.tenant,
        manifest.bucket,
        _state(found.mismatched, found.missing, found.failures),
        found.ok,
        found.mismatched,
        found.missing,
        error_text(found.failures),
        len(manifest.segments),
        manifest.key,
    )


def _state(mismatched: list[str], missing: list[str], failures: list[StorageError]) -> str:
    if failures:
        return "error"
    return "failed" if mismatched or missing else "passed"


def error_text(failures: list[StorageError]) -> str | None:
    """The first storage error met, and how many more segments went unchecked."""
    if not failures:
        return None
    more = f" (and {len(failures) - 1} more segment(s) unchecked)" if len(failures) > 1 else ""
    return failures[0].message + more


# Findings -----------------------------------------------------------------------
def _findings(jobs: list[JobCheck], mode: str) -> list[Finding]:
    found = []
    mismatched = [j for j in jobs if j.mismatched]
    if mismatched:
        found.append(_finding(CHECKSUM_MISMATCH, mismatched, "mismatched", mode))
    missing = [j for j in jobs if j.missing]
    if missing:
        found.append(_finding(MISSING_SEGMENTS, missing, "missing", mode))
    return found


def _finding(code: str, jobs: list[JobCheck], attr: str, mode: str) -> Finding:
    keys = {j.job_id: list(getattr(j, attr)) for j in jobs}
    tenants = sorted({j.tenant for j in jobs if j.tenant})
    files = [f"s3://{j.bucket}/{key}" for j in jobs for key in keys[j.job_id]]
    what = "do not match their manifest checksums" if attr == "mismatched" else "are missing"
    summary = (
        f"{len(files)} segment(s) of {len(jobs)} job(s) {what} "
        f"(tenants: {', '.join(tenants) or 'unknown'})"
    )
    evidence = {
        "job_ids": [j.job_id for j in jobs],
        "tenants": tenants,
        "buckets": sorted({j.bucket for j in jobs if j.bucket}),
        "keys": [key for j in jobs for key in keys[j.job_id]],
        "keys_by_job": keys,
        "files": files,
        "mode": mode,
    }
    return Finding(code, "critical", summary, STEP, evidence)
