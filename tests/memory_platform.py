"""An in-memory :class:`~exportnb.platform.Platform` for the CLI and contract tests.

It behaves like the sandbox where the tests look (known flags, limits, NotFound,
PreconditionFailed, a throttled bucket that raises StorageError) without S3 or a daemon.
With a ``path`` (or ``$EXPORTNB_MEMORY_STATE``) its state is a JSON file, written
through the contract's own encoder, so that separate exportctl/featurectl processes
started by the ``command`` platform see the same jobs, flags and audit trail.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from exportnb.core import codec
from exportnb.core.errors import InvalidInput, NotFound, PreconditionFailed, StorageError
from exportnb.platform import Platform, current_actor
from exportnb.platform.model import (
    BULK_PAUSE_FLAG,
    FALLBACK_FLAG,
    STATUSES,
    Attempt,
    AuditEntry,
    ChunkSizeChange,
    Flag,
    Job,
    JobDetail,
    JobQuery,
    LatencyPercentiles,
    LogLine,
    Manifest,
    MinuteCount,
    PlatformInfo,
    RetryResult,
    Segment,
    SegmentCheck,
    Verification,
)

STATE_ENV = "EXPORTNB_MEMORY_STATE"
MAX_CONCURRENCY = 8
MAX_FLAG_TTL = 24 * 3600.0
PRIMARY, FALLBACK, THROTTLED = "exports-primary", "exports-fallback", "exports-throttled"
MB = 10**6


@dataclass
class MemoryState:
    """Everything the memory platform holds."""

    jobs: list[Job] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    logs: list[LogLine] = field(default_factory=list)
    manifests: list[Manifest] = field(default_factory=list)
    stored: dict[str, str] = field(default_factory=dict)  # segment key -> stored sha256
    flags: list[Flag] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    batches: int = 0


def seeded_state(now: datetime | None = None) -> MemoryState:
    """Three failed jobs, a verified one, a corrupt one, a running one, a throttled one."""
    now = now or datetime.now(UTC)
    state = MemoryState()
    failures = [
        ("j-fail-1", "acme", "s3-parquet", "SlowDown", "503 SlowDown from S3"),
        ("j-fail-2", "acme", "s3-csv", "RequestTimeout", "PUT of chunk 3 timed out"),
        ("j-fail-3", "globex", "s3-parquet", "SlowDown", "503 SlowDown from S3"),
    ]
    for i, (job_id, tenant, connector, code, message) in enumerate(failures):
        _add_job(state, job_id, tenant, connector, "failed", now - timedelta(minutes=10 * (i + 1)))
        state.jobs[-1] = replace(state.jobs[-1], error_code=code, error_message=message)
        state.attempts[-1] = replace(state.attempts[-1], error_code=code, error_message=message)
    _add_job(state, "j-ok-1", "acme", "s3-csv", "succeeded", now - timedelta(minutes=50))
    _add_delivery(state, "j-ok-1", PRIMARY, corrupt=False)
    _add_job(state, "j-bad-1", "globex", "s3-csv", "succeeded", now - timedelta(minutes=55))
    _add_delivery(state, "j-bad-1", PRIMARY, corrupt=True)
    _add_job(state, "j-run-1", "acme", "s3-parquet", "running", now - timedelta(minutes=5))
    _add_job(state, "j-slow-1", "acme", "s3-csv", "succeeded", now - timedelta(minutes=58))
    _add_delivery(state, "j-slow-1", THROTTLED, corrupt=False)
    return state


def _add_job(
    state: MemoryState, job_id: str, tenant: str, connector: str, status: str, at: datetime
) -> None:
    finished = at + timedelta(seconds=90) if status != "running" else None
    state.jobs.append(
        Job(
            id=job_id,
            tenant=tenant,
            connector=connector,
            bucket=PRIMARY,
            kind="scheduled",
            status=status,
            attempts=1,
            chunk_size=64 * MB,
            bytes=192 * MB,
            created_at=at,
            started_at=at,
            finished_at=finished,
            heartbeat_at=finished or at,
        )
    )
    state.attempts.append(Attempt(job_id, 1, status, at, finished, PRIMARY, 64 * MB))
    state.logs.append(LogLine(job_id, at, "info", "attempt 1 started", attempt=1))
    if finished:
        state.logs.append(LogLine(job_id, finished, "info", f"attempt 1 {status}", attempt=1))


def _add_delivery(state: MemoryState, job_id: str, bucket: str, *, corrupt: bool) -> None:
    job = next(j for j in state.jobs if j.id == job_id)
    segments = [
        Segment(i, f"{job_id}/part-{i:04d}", 64 * MB, f"sha-{job_id}-{i}") for i in range(3)
    ]
    for s in segments:
        state.stored[s.key] = s.sha256
    if corrupt:
        state.stored[segments[1].key] = "sha-of-other-bytes"
        del state.stored[segments[2].key]
    manifest = Manifest(
        job_id,
        bucket,
        f"{job_id}/manifest.json",
        1,
        192 * MB,
        segments,
        job.finished_at or job.created_at,
    )
    state.manifests.append(manifest)


class MemoryPlatform(Platform):
    """A platform held in memory, or in a JSON file shared between processes."""

    name = "memory"

    def __init__(self, path: str | Path | None = None) -> None:
        explicit = path or os.environ.get(STATE_ENV)
        self.path = Path(explicit) if explicit else None
        self._state = seeded_state()
        if self.path is not None and not self.path.exists():
            self._save(self._state)

    # State ---------------------------------------------------------------------
    def state(self) -> MemoryState:
        if self.path is None:
            return self._state
        raw = json.loads(self.path.read_text(encoding="utf-8"))
        return codec.decode(MemoryState, raw)

    def _save(self, state: MemoryState) -> None:
        self._state = state
        if self.path is not None:
            self.path.write_text(json.dumps(codec.encode(state)), encoding="utf-8")

    def _job(self, state: MemoryState, job_id: str) -> Job:
        for job in state.jobs:
            if job.id == job_id:
                return job
        raise NotFound(f"job {job_id!r} not found")

    def _audit(
        self,
        state: MemoryState,
        actor: str | None,
        action: str,
        target: str,
        old: Any = None,
        new: Any = None,
        reason: str = "",
    ) -> None:
        entry = AuditEntry(
            len(state.audit) + 1,
            datetime.now(UTC),
            actor or current_actor(),
            action,
            target,
            old,
            new,
            reason,
        )
        state.audit.append(entry)

    # Reads ---------------------------------------------------------------------
    def info(self) -> PlatformInfo:
        return PlatformInfo(
            name=self.name,
            export_bucket=PRIMARY,
            buckets=[PRIMARY, FALLBACK, THROTTLED],
            fallback_buckets=[FALLBACK],
            target_host="export-target.example",
            region="eu-west-1",
            detail={"state": str(self.path) if self.path else None},
        )

    def list_jobs(self, query: JobQuery) -> list[Job]:
        if query.status is not None and query.status not in STATUSES:
            raise InvalidInput(f"unknown status {query.status!r}")
        if query.limit < 1:
            raise InvalidInput("limit must be at least 1")
        jobs = [j for j in self.state().jobs if _matches(j, query)]
        return sorted(jobs, key=lambda j: j.created_at, reverse=True)[: query.limit]

    def get_job(self, job_id: str) -> JobDetail:
        state = self.state()
        job = self._job(state, job_id)
        attempts = [a for a in state.attempts if a.job_id == job_id]
        return JobDetail(job, attempts, [line for line in state.logs if line.job_id == job_id])

    def manifest(self, job_id: str) -> Manifest:
        state = self.state()
        self._job(state, job_id)
        found = [m for m in state.manifests if m.job_id == job_id]
        if not found:
            raise NotFound(f"job {job_id!r} has no manifest: no attempt of it delivered data")
        if found[-1].bucket == THROTTLED:
            raise StorageError(f"GetObject on {THROTTLED}: SlowDown", code="SlowDown", status=503)
        return found[-1]

    def verify(self, job_id: str, *, rehash: bool = False) -> Verification:
        manifest = self.manifest(job_id)
        stored = self.state().stored
        checks = [_check(s, stored.get(s.key)) for s in manifest.segments]
        mode = "rehash" if rehash else "checksum"
        return Verification(job_id, manifest.bucket, manifest.key, mode, checks, datetime.now(UTC))

    def status_counts(self, since: datetime, until: datetime) -> list[MinuteCount]:
        counts: dict[tuple[datetime, str], int] = {}
        for a in self._finished(since, until):
            minute = a.finished_at.replace(second=0, microsecond=0)  # type: ignore[union-attr]
            counts[(minute, a.status)] = counts.get((minute, a.status), 0) + 1
        return [MinuteCount(m, s, n) for (m, s), n in sorted(counts.items())]

    def latency(
        self, since: datetime, until: datetime, *, per_minute: bool = False
    ) -> list[LatencyPercentiles]:
        durations = sorted(
            (a.finished_at - a.started_at).total_seconds()  # type: ignore[operator]
            for a in self._finished(since, until)
        )
        p50, p95, p99 = (_rank(durations, q) for q in (0.50, 0.95, 0.99))
        return [LatencyPercentiles(since, until, len(durations), p50, p95, p99)]

    def _finished(self, since: datetime, until: datetime) -> list[Attempt]:
        return [
            a
            for a in self.state().attempts
            if a.finished_at is not None and since <= a.finished_at < until
        ]

    # Actions ---------------------------------------------------------------------
    def retry(
        self,
        *,
        job_ids: Sequence[str] = (),
        status: str | None = None,
        limit: int = 20,
        concurrency: int = 2,
        actor: str | None = None,
        reason: str = "",
    ) -> RetryResult:
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise InvalidInput(f"concurrency must be a whole number from 1 to {MAX_CONCURRENCY}")
        if bool(job_ids) == bool(status):
            raise InvalidInput("retry either named jobs or jobs of a status")
        state = self.state()
        if job_ids:
            ids = [self._job(state, j).id for j in dict.fromkeys(job_ids)]
        else:
            ids = [j.id for j in self.list_jobs(JobQuery(status=status, limit=limit))]
        state.batches += 1
        batch = f"retry-{state.batches:04d}"
        queued, skipped = _requeue(state, ids)
        new = {"jobs": queued, "skipped": skipped, "concurrency": concurrency}
        self._audit(state, actor, "job.retry", batch, None, new, reason)
        self._save(state)
        return RetryResult(batch, concurrency, queued, skipped)

    def set_chunk_size(
        self, job_id: str, size: int, *, actor: str | None = None, reason: str = ""
    ) -> ChunkSizeChange:
        if size <= 0:
            raise InvalidInput(f"invalid chunk size {size!r}")
        state = self.state()
        job = self._job(state, job_id)
        state.jobs[state.jobs.index(job)] = replace(job, chunk_size=size)
        self._audit(
            state,
            actor,
            "job.update",
            job_id,
            {"chunk_size": job.chunk_size},
            {"chunk_size": size},
            reason,
        )
        self._save(state)
        return ChunkSizeChange(job_id, job.chunk_size, size)

    def pause_bulk(self, *, actor: str | None = None, reason: str = "") -> Flag:
        return self.set_flag(BULK_PAUSE_FLAG, True, ttl=None, actor=actor, reason=reason)

    def resume_bulk(self, *, actor: str | None = None, reason: str = "") -> None:
        if self.get_flag(BULK_PAUSE_FLAG) is not None:
            self.unset_flag(BULK_PAUSE_FLAG, actor=actor, reason=reason)

    # Flags and audit -------------------------------------------------------------
    def set_flag(
        self,
        key: str,
        value: Any,
        *,
        ttl: float | None,
        actor: str | None = None,
        reason: str = "",
    ) -> Flag:
        _check_flag(key, value, ttl)
        state = self.state()
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=ttl) if ttl is not None else None
        old = _live_flag(state, key, now)
        flag = Flag(key, value, actor or current_actor(), now, expires)
        state.flags = [f for f in state.flags if f.key != key] + [flag]
        new = {"value": value, "expires_at": codec.format_time(expires) if expires else None}
        self._audit(state, actor, "flag.set", key, old.value if old else None, new, reason)
        self._save(state)
        return flag

    def get_flag(self, key: str) -> Flag | None:
        _known_flag(key)
        return _live_flag(self.state(), key, datetime.now(UTC))

    def list_flags(self) -> list[Flag]:
        now = datetime.now(UTC)
        return sorted(
            (f for f in self.state().flags if f.expires_at is None or f.expires_at > now),
            key=lambda f: f.key,
        )

    def unset_flag(self, key: str, *, actor: str | None = None, reason: str = "") -> None:
        _known_flag(key)
        state = self.state()
        old = _live_flag(state, key, datetime.now(UTC))
        if old is None:
            raise NotFound(f"flag {key!r} is not set")
        state.flags = [f for f in state.flags if f.key != key]
        self._audit(state, actor, "flag.unset", key, old.value, None, reason)
        self._save(state)

    def flag_history(self, key: str) -> list[AuditEntry]:
        _known_flag(key)
        return [e for e in self.state().audit if e.target == key]

    def audit_log(self, *, since: datetime | None = None, limit: int = 100) -> list[AuditEntry]:
        entries = [e for e in self.state().audit if since is None or e.at >= since]
        return entries[-limit:]


# Rules ---------------------------------------------------------------------------
def _matches(job: Job, query: JobQuery) -> bool:
    return (
        all(
            getattr(query, name) in (None, getattr(job, name))
            for name in ("status", "connector", "bucket", "tenant")
        )
        and (query.since is None or job.created_at >= query.since)
        and (query.until is None or job.created_at < query.until)
    )


def _check(segment: Segment, stored: str | None) -> SegmentCheck:
    if stored is None:
        return SegmentCheck(
            segment.index, segment.key, "missing", segment.sha256, detail="NoSuchKey"
        )
    state = "ok" if stored == segment.sha256 else "mismatch"
    return SegmentCheck(segment.index, segment.key, state, segment.sha256, stored, segment.size)


def _rank(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = max(1, -(-len(sorted_values) * q // 1)) - 1
    return sorted_values[int(index)]


def _requeue(state: MemoryState, ids: list[str]) -> tuple[list[str], dict[str, str]]:
    queued: list[str] = []
    skipped: dict[str, str] = {}
    for i, job in enumerate(state.jobs):
        if job.id not in ids:
            continue
        if job.status in ("queued", "running"):
            skipped[job.id] = f"already {job.status}"
            continue
        state.jobs[i] = replace(job, status="queued", error_code=None, error_message=None)
        queued.append(job.id)
    return queued, skipped


def _known_flag(key: str) -> None:
    if key not in (FALLBACK_FLAG, BULK_PAUSE_FLAG):
        raise InvalidInput(f"unknown flag {key!r} (known: {BULK_PAUSE_FLAG}, {FALLBACK_FLAG})")


def _check_flag(key: str, value: Any, ttl: float | None) -> None:
    _known_flag(key)
    if ttl is not None and not 0 < ttl <= MAX_FLAG_TTL:
        raise InvalidInput(f"TTL of {ttl:.0f}s is outside 0 to {MAX_FLAG_TTL:.0f}s")
    if key == BULK_PAUSE_FLAG and not isinstance(value, bool):
        raise InvalidInput(f"{key} takes true or false, not {value!r}")
    if key == FALLBACK_FLAG:
        if ttl is None:
            raise InvalidInput(f"{key} needs a TTL, for example --ttl 30m")
        if value not in (PRIMARY, FALLBACK):
            raise PreconditionFailed(f"bucket {value!r} does not exist")


def _live_flag(state: MemoryState, key: str, now: datetime) -> Flag | None:
    for flag in state.flags:
        if flag.key == key and (flag.expires_at is None or flag.expires_at > now):
            return flag
    return None


__all__ = ["MemoryPlatform", "MemoryState", "seeded_state"]
