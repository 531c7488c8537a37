"""The sandbox as a :class:`~exportnb.platform.Platform`: its store, its S3 and its flags."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from exportnb.core.config import Settings
from exportnb.core.errors import InvalidInput, NotFound, SandboxError
from exportnb.platform import Platform, current_actor, storage
from exportnb.platform.base import Deliveries, Delivery, ManifestOutcome, check_limit
from exportnb.platform.model import (
    BULK_PAUSE_FLAG,
    FALLBACK_FLAG,
    STATUSES,
    AuditEntry,
    ChunkSizeChange,
    Flag,
    Job,
    JobDetail,
    JobQuery,
    LatencyPercentiles,
    Manifest,
    MinuteCount,
    PlatformInfo,
    RetryResult,
    Segment,
    Verification,
)
from exportnb.sandbox.flags import check_flag, known_flag
from exportnb.sandbox.state import CREDENTIALS, SandboxState, read_state, running_state, sandbox_dir
from exportnb.sandbox.store import Store, to_dt


class SandboxPlatform(Platform):
    """The reference export platform. Reads the store directly; S3 through its endpoint.

    S3 requests go to ``AWS_ENDPOINT_URL`` when it is set (as ``aws`` does in the sandbox's
    environment), else to the endpoint the sandbox started.
    """

    name = "sandbox"

    def __init__(self, home: str | Path | None = None, settings: Settings | None = None) -> None:
        self.home = Path(home) if home else None
        state = read_state(self.home)
        if state is None:
            raise SandboxError("the sandbox is not running: start it with `exportnb sandbox up`")
        self.state: SandboxState = state
        self.store = Store(Path(state.store))
        self.settings = settings or Settings.load()
        self._s3: Any = None

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            state = running_state(self.home)
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or state.s3_endpoint
            self._s3 = storage.client(endpoint, credentials=CREDENTIALS)
        return self._s3

    def close(self) -> None:
        self.store.close()

    def info(self) -> PlatformInfo:
        """The sandbox's buckets and target, and its S3 with the keys the diagnostics sign
        with (``exportctl info`` prints the endpoint and region, never the keys)."""
        buckets = self.store.buckets()
        return PlatformInfo(
            name=self.name,
            export_bucket=self.state.export_bucket,
            buckets=[name for name, _, _ in buckets],
            fallback_buckets=[name for name, role, _ in buckets if role == "fallback"],
            target_host=self.state.target_host,
            region=self.state.region,
            detail={
                "scenario": self.state.scenario,
                "s3_endpoint": self.state.s3_endpoint,
                "metrics_url": self.state.metrics_url,
                "target_port": self.state.target_port,
                "reported_jobs": self.state.reported_jobs,
                "sandbox_dir": str(sandbox_dir(self.home)),
            },
            storage=self.state.storage,
        )

    # Jobs ---------------------------------------------------------------
    def list_jobs(self, query: JobQuery) -> list[Job]:
        if query.status is not None and query.status not in STATUSES:
            raise InvalidInput(f"unknown status {query.status!r} (known: {', '.join(STATUSES)})")
        if query.limit < 1:
            raise InvalidInput("limit must be at least 1")
        return self.store.list_jobs(query)

    def get_job(self, job_id: str) -> JobDetail:
        job = self.store.get_job(job_id)
        return JobDetail(job, self.store.attempts(job_id), self.store.logs(job_id))

    def _manifest_location(self, job_id: str) -> tuple[int, str, str]:
        self.store.get_job(job_id)
        location = self.store.latest_manifest(job_id)
        if location is None:
            raise NotFound(f"job {job_id!r} has no manifest: no attempt of it delivered data")
        return location

    def manifest(self, job_id: str) -> Manifest:
        _, bucket, key = self._manifest_location(job_id)
        return storage.read_manifest(self.s3, bucket, key)

    def verify(self, job_id: str, *, rehash: bool = False) -> Verification:
        return storage.verify_manifest(self.s3, self.manifest(job_id), rehash=rehash)

    def deliveries(self, since: datetime, until: datetime, *, limit: int) -> Deliveries:
        """Every attempt that wrote its manifest in the range, from the store in one query."""
        rows, total = self.store.deliveries(
            since.timestamp(), until.timestamp(), check_limit(limit)
        )
        items = [
            Delivery(job, tenant, connector, bucket, attempt, to_dt(at), key)
            for job, attempt, tenant, connector, bucket, key, at in rows
        ]
        return Deliveries(items, total)

    def manifests(self, deliveries: Sequence[Delivery]) -> dict[Delivery, ManifestOutcome]:
        """The manifests the worker recorded as it wrote them to S3, in one query: the same
        documents ``manifest`` reads from S3, for any attempt (the store keeps each)."""
        by_pair = {(d.job_id, d.attempt): d for d in deliveries if d.attempt is not None}
        read: dict[tuple[str, int], Manifest] = {}
        for row in self.store.manifest_segments(list(by_pair)):
            job_id, attempt, bucket, key, total, created, index, segment, size, sha = row
            manifest = read.setdefault(
                (job_id, attempt), Manifest(job_id, bucket, key, attempt, total, [], to_dt(created))
            )
            if index is not None:
                manifest.segments.append(Segment(index, segment, size, sha))
        found: dict[Delivery, ManifestOutcome] = {}
        for pair, delivery in by_pair.items():
            found[delivery] = read.get(pair) or NotFound(
                f"job {delivery.job_id!r} attempt {delivery.attempt} wrote no manifest"
            )
        unsaid = [d for d in deliveries if d.attempt is None]  # its latest delivery
        return {**found, **super().manifests(unsaid)}

    # Aggregates ---------------------------------------------------------
    def status_counts(self, since: datetime, until: datetime) -> list[MinuteCount]:
        return self.store.status_counts(since.timestamp(), until.timestamp())

    def latency(
        self, since: datetime, until: datetime, *, per_minute: bool = False
    ) -> list[LatencyPercentiles]:
        return self.store.latency(since.timestamp(), until.timestamp(), per_minute=per_minute)

    # Actions ------------------------------------------------------------
    def _check_concurrency(self, concurrency: int) -> None:
        cap = self.settings.max_retry_concurrency
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidInput(f"concurrency must be a whole number from 1 to {cap}")
        if concurrency > cap:
            raise InvalidInput(
                f"concurrency {concurrency} is above the configured maximum of {cap} "
                "([limits] max_retry_concurrency)"
            )

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
        self._check_concurrency(concurrency)
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        if job_ids and status:
            raise InvalidInput("retry either named jobs or jobs of a status, not both")
        if job_ids:
            ids = list(dict.fromkeys(job_ids))
            unknown = [j for j in ids if j not in self.store.existing_job_ids(ids)]
            if unknown:
                raise NotFound(f"job(s) not found: {', '.join(unknown)}; nothing was retried")
        elif status:
            ids = [j.id for j in self.list_jobs(JobQuery(status=status, limit=limit))]
        else:
            raise InvalidInput("name jobs to retry (--job) or a status (--status failed)")
        actor = actor or current_actor()
        batch = f"retry-{uuid.uuid4().hex[:10]}"
        now = time.time()
        queued, skipped = self.store.requeue(
            ids,
            batch=batch,
            concurrency=concurrency,
            actor=actor,
            now=now,
            abandon_before=now - self.settings.stale_heartbeat,
        )
        self.store.audit(
            actor=actor,
            action="job.retry",
            target=batch,
            reason=reason,
            now=now,
            new={"jobs": queued, "skipped": skipped, "concurrency": concurrency},
        )
        return RetryResult(batch, concurrency, queued, skipped)

    def set_chunk_size(
        self, job_id: str, size: int, *, actor: str | None = None, reason: str = ""
    ) -> ChunkSizeChange:
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise InvalidInput(f"invalid chunk size {size!r}: must be a positive number of bytes")
        old = self.store.set_chunk_size(job_id, size)
        self.store.audit(
            actor=actor or current_actor(),
            action="job.update",
            target=job_id,
            old={"chunk_size": old},
            new={"chunk_size": size},
            reason=reason,
        )
        return ChunkSizeChange(job_id, old, size)

    def pause_bulk(self, *, actor: str | None = None, reason: str = "") -> Flag:
        return self.set_flag(BULK_PAUSE_FLAG, True, ttl=None, actor=actor, reason=reason)

    def resume_bulk(self, *, actor: str | None = None, reason: str = "") -> None:
        self.store.delete_flag(
            BULK_PAUSE_FLAG, actor=actor or current_actor(), now=time.time(), reason=reason
        )

    # Flags and audit ----------------------------------------------------
    def set_flag(
        self,
        key: str,
        value: Any,
        *,
        ttl: float | None,
        actor: str | None = None,
        reason: str = "",
    ) -> Flag:
        if ttl is not None and ttl > self.settings.max_flag_ttl:
            raise InvalidInput(
                f"TTL of {ttl:.0f}s is above the configured maximum of "
                f"{self.settings.max_flag_ttl:.0f}s ([limits] max_flag_ttl)"
            )
        if ttl is not None and ttl <= 0:
            raise InvalidInput("TTL must be greater than zero")
        buckets = {name for name, _, _ in self.store.buckets()}
        value = check_flag(key, value, ttl, buckets)
        now = time.time()
        expires = now + ttl if ttl is not None else None
        return self.store.put_flag(
            key, value, actor=actor or current_actor(), now=now, expires_at=expires, reason=reason
        )

    def get_flag(self, key: str) -> Flag | None:
        known_flag(key)
        return self.store.flag(key, time.time())

    def list_flags(self) -> list[Flag]:
        return self.store.flags(time.time())

    def unset_flag(self, key: str, *, actor: str | None = None, reason: str = "") -> None:
        known_flag(key)
        if not self.store.delete_flag(
            key, actor=actor or current_actor(), now=time.time(), reason=reason
        ):
            raise NotFound(f"flag {key!r} is not set")

    def flag_history(self, key: str) -> list[AuditEntry]:
        known_flag(key)
        self.store.expire_flags(time.time())
        return self.store.audit_entries(target=key, limit=1000)

    def audit_log(self, *, since: datetime | None = None, limit: int = 100) -> list[AuditEntry]:
        self.store.expire_flags(time.time())
        return self.store.audit_entries(since=since.timestamp() if since else None, limit=limit)

    def note(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        detail: dict[str, Any],
        reason: str = "",
    ) -> None:
        self.store.audit(actor=actor, action=action, target=target, new=detail, reason=reason)

    def fallback_bucket(self) -> str | None:
        flag = self.store.flag(FALLBACK_FLAG, time.time())
        return flag.value if flag else None
