"""Constructed worlds for the diagnostics' unit tests: a real sandbox store with rows the
test writes, behind a real :class:`SandboxPlatform`.

The store is written through its own API (``create_job``, ``claim``, ``finish``,
``put_flag``, ``audit``), so the per-minute rollup and the latency columns are the ones
the export worker would leave. No daemon runs: the state file names this process as the
sandbox's pid, and the tests never touch S3.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from exportnb.sandbox.platform import SandboxPlatform
from exportnb.sandbox.state import SandboxState
from exportnb.sandbox.store import Store

NOW = datetime(2024, 6, 11, 14, 30, 30, tzinfo=UTC)
"""A fixed "now" (mid-minute, on purpose)."""
PRIMARY, SECONDARY, FALLBACK = "exports-primary", "exports-eu", "exports-fallback"
MB = 1_000_000


@dataclass
class World:
    """A store and the platform over it. ``job`` writes one finished job."""

    home: Path
    store: Store
    platform: SandboxPlatform
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def next_id(self) -> str:
        return f"job-{next(self._ids):012x}"

    def job(
        self,
        finished: datetime,
        status: str = "succeeded",
        *,
        duration: float = 10.0,
        tenant: str = "acme",
        connector: str = "s3",
        bucket: str = PRIMARY,
        chunk_size: int = 64 * MB,
        size: int = 200 * MB,
        error_code: str | None = None,
        error_message: str | None = None,
        kind: str = "scheduled",
        logs: int = 0,
        job_id: str | None = None,
    ) -> str:
        """Create a job that ran for ``duration`` seconds and finished at ``finished``."""
        job_id = job_id or self.next_id()
        start = finished.timestamp() - duration
        self.store.create_job(
            job_id=job_id,
            tenant=tenant,
            connector=connector,
            bucket=bucket,
            kind=kind,
            chunk_size=chunk_size,
            size=size,
            created_at=start - 1,
        )
        self.attempt(
            job_id,
            finished,
            status,
            duration=duration,
            error_code=error_code,
            error_message=error_message,
            bucket=bucket,
            logs=logs,
        )
        return job_id

    def attempt(
        self,
        job_id: str,
        finished: datetime,
        status: str,
        *,
        duration: float = 10.0,
        bucket: str = PRIMARY,
        error_code: str | None = None,
        error_message: str | None = None,
        logs: int = 0,
    ) -> None:
        """Run one more attempt of a queued job (a new job, or one queued by a retry)."""
        start = finished.timestamp() - duration
        claimed = self.store.claim(now=start, bulk_paused=False)
        assert claimed is not None and claimed.id == job_id, claimed
        if status == "failed" and error_code is None:
            error_code, error_message = "InternalError", "500 InternalError"
        for n in range(logs):
            self.store.add_log(
                job_id, claimed.attempts, "error", f"line {n}: {error_message}", start + n * 0.001
            )
        assert self.store.finish(
            job_id,
            claimed.attempts,
            status=status,
            finished_at=finished.timestamp(),
            bucket=bucket,
            error_code=error_code,
            error_message=error_message,
        )

    def many(
        self, finished: datetime, count: int, status: str = "succeeded", **kw: object
    ) -> list[str]:
        return [self.job(finished, status, **kw) for _ in range(count)]  # type: ignore[arg-type]

    def running(
        self,
        started: datetime,
        *,
        heartbeat: datetime | None = None,
        connector: str = "redshift",
        tenant: str = "acme",
    ) -> str:
        """A job that started at ``started`` and last heart-beat at ``heartbeat``."""
        job_id = self.next_id()
        self.store.create_job(
            job_id=job_id,
            tenant=tenant,
            connector=connector,
            bucket=PRIMARY,
            kind="scheduled",
            chunk_size=64 * MB,
            size=200 * MB,
            created_at=started.timestamp(),
        )
        claimed = self.store.claim(now=started.timestamp(), bulk_paused=False)
        assert claimed is not None and claimed.id == job_id
        self.store.heartbeat(job_id, (heartbeat or started).timestamp())
        return job_id


def make_world(home: Path) -> World:
    """An empty store under ``home`` and a SandboxPlatform reading it."""
    folder = home / "sandbox"
    store = Store(folder / "store.db", create=True)
    with store.transaction() as db:
        db.executemany(
            "INSERT INTO buckets VALUES (?, ?, ?)",
            [
                (PRIMARY, "primary", "us-east-1"),
                (SECONDARY, "secondary", "eu-west-1"),
                (FALLBACK, "fallback", "us-west-2"),
            ],
        )
    SandboxState(
        pid=os.getpid(),
        scenario="constructed",
        store=str(store.path),
        s3_endpoint="http://127.0.0.1:9",
        metrics_url="http://127.0.0.1:9/metrics",
        export_bucket=PRIMARY,
        fallback_bucket=FALLBACK,
        target_host="127.0.0.1",
        target_port=9,
        started_at=NOW.timestamp(),
    ).write(folder)
    return World(home, store, SandboxPlatform(home=home))


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
