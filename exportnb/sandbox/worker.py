"""The export worker: claims queued jobs and really writes their segments and manifest to S3.

Each segment is an S3 object stored with a SHA-256 additional checksum; the manifest
lists every segment with its checksum. Storage sizes are scaled by
:data:`~exportnb.sandbox.faults.STORAGE_SCALE`. Faults strike where they would on a
real platform: S3 faults come back from the endpoint (through the fault proxy), worker
faults (corrupt, missing, stuck) happen here, and the network fault shows on the path
to the target host.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exportnb.core.errors import StorageError
from exportnb.platform import storage
from exportnb.platform.model import BULK_PAUSE_FLAG, FALLBACK_FLAG, Job, Manifest, Segment
from exportnb.sandbox.faults import STORAGE_SCALE, FaultSet
from exportnb.sandbox.store import Store

log = logging.getLogger(__name__)

NETWORK_FAMILIES = ("file-transfer",)
"""Connector families that deliver to EXPORT_TARGET_HOST and so cross the network path."""


def segment_body(job_id: str, attempt: int, index: int, size: int) -> bytes:
    """Deterministic content for one segment."""
    seed = hashlib.sha256(f"{job_id}/{attempt}/{index}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def segment_sizes(total: int, chunk: int) -> list[int]:
    """Logical sizes of a job's segments: full chunks, then the remainder."""
    count = max(1, math.ceil(total / chunk))
    return [chunk] * (count - 1) + [total - chunk * (count - 1)]


@dataclass(frozen=True)
class Outcome:
    status: str  # succeeded | failed | abandoned
    bucket: str
    error_code: str | None = None
    error_message: str | None = None


class JobFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Pace:
    """How fast the worker moves: logical throughput, and whether to sleep to honour it."""

    throughput: float = 40e6  # logical bytes per second
    overhead: float = 1.0  # seconds per attempt
    realtime: bool = True


class Worker:
    """Runs claimed jobs. Thread-safe; one S3 client shared by all threads."""

    def __init__(
        self,
        store: Store,
        s3: Any,
        faults: Callable[[], FaultSet],
        *,
        target: tuple[str, int] | None = None,
        connect: Callable[[str, int, float], float] | None = None,
        pace: Pace | None = None,
        on_finish: Callable[[Job, Outcome, float], None] | None = None,
    ) -> None:
        self.store, self.s3, self.faults = store, s3, faults
        self.target, self.connect = target, connect
        self.pace = pace or Pace()
        self.on_finish = on_finish
        self.families = store.connectors()
        self.fallback_lock = threading.Lock()

    # Claiming ------------------------------------------------------------
    def claim(self) -> Job | None:
        now = time.time()
        paused = self.store.flag(BULK_PAUSE_FLAG, now)
        return self.store.claim(now=now, bulk_paused=bool(paused is not None and paused.value))

    def run_once(self) -> bool:
        job = self.claim()
        if job is None:
            return False
        self.run(job)
        return True

    def serve(self, stop: threading.Event, idle: float = 0.2) -> None:
        while not stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # keep the worker alive; the job is closed in run()
                log.exception("worker loop error")
                worked = False
            if not worked:
                stop.wait(idle)

    # Running -------------------------------------------------------------
    def run(self, job: Job, *, backdate: float | None = None) -> Outcome:
        """Run one claimed attempt. ``backdate``: record it as started at that time (replay)."""
        began = time.monotonic()
        started = backdate if backdate is not None else time.time()
        flag = self.store.flag(FALLBACK_FLAG, time.time())
        bucket = flag.value if flag else job.bucket
        self._log(job, "info", f"attempt {job.attempts} started: writing to s3://{bucket}", started)
        try:
            outcome = self._deliver(job, bucket, started, replay=backdate is not None)
        except JobFailed as exc:
            outcome = Outcome("failed", bucket, exc.code, exc.message)
        except Exception as exc:  # an unexpected error still closes the attempt
            log.exception("job %s crashed", job.id)
            outcome = Outcome("failed", bucket, "WorkerError", f"{type(exc).__name__}: {exc}")
        if outcome.status == "abandoned":
            return outcome
        elapsed = time.monotonic() - began
        duration = elapsed if backdate is None else self._modeled(job) + elapsed
        finished = started + duration
        level = "info" if outcome.status == "succeeded" else "error"
        message = f"attempt {job.attempts} {outcome.status}" + (
            f": {outcome.error_code}: {outcome.error_message}" if outcome.error_code else ""
        )
        self._log(job, level, message, finished)
        closed = self.store.finish(
            job.id,
            job.attempts,
            status=outcome.status,
            finished_at=finished,
            bucket=bucket,
            error_code=outcome.error_code,
            error_message=outcome.error_message,
            started_at=started if backdate is not None else None,
        )
        if closed and self.on_finish is not None:
            self.on_finish(job, outcome, duration)
        return outcome

    def _modeled(self, job: Job) -> float:
        rnd = random.Random(f"{job.id}/{job.attempts}")
        return self.pace.overhead + job.bytes / self.pace.throughput * rnd.uniform(0.8, 1.3)

    def _deliver(self, job: Job, bucket: str, started: float, *, replay: bool) -> Outcome:
        faults = self.faults()
        hits = faults.worker_hits(
            job_id=job.id,
            tenant=job.tenant,
            connector=job.connector,
            bucket=bucket,
            attempt=job.attempts,
        )
        self._cross_network(job, faults)
        sizes = segment_sizes(job.bytes, job.chunk_size)
        prefix = f"exports/{job.tenant}/{job.id}/attempt-{job.attempts}"
        bad = random.Random(f"{job.id}/{job.attempts}/bad").randrange(len(sizes))
        segments: list[Segment] = []
        clock = started
        for index, logical in enumerate(sizes):
            if "stuck" in hits and index == bad:
                self._log(job, "warning", f"segment {index}: connection stalled", clock)
                self.store.heartbeat(job.id, clock)
                return Outcome("abandoned", bucket)
            segments.append(self._write_segment(job, bucket, prefix, index, logical, hits, bad))
            clock = self._tick(job, logical, clock, replay)
        manifest = Manifest(
            job_id=job.id,
            bucket=bucket,
            key=f"{prefix}/manifest.json",
            attempt=job.attempts,
            total_bytes=sum(sizes),
            segments=segments,
            created_at=datetime.fromtimestamp(clock, UTC),
        )
        self._put(bucket, manifest.key, storage.manifest_document(manifest))
        self.store.record_manifest(job.id, job.attempts, bucket, manifest.key, segments, clock)
        return Outcome("succeeded", bucket)

    def _write_segment(
        self,
        job: Job,
        bucket: str,
        prefix: str,
        index: int,
        logical: int,
        hits: set[str],
        bad: int,
    ) -> Segment:
        key = f"{prefix}/part-{index:05d}.bin"
        body = segment_body(job.id, job.attempts, index, max(1, logical // STORAGE_SCALE))
        checksum = storage.sha256_b64(body)
        if index == bad and "missing" in hits:
            return Segment(index, key, logical, checksum)  # listed, never stored
        if index == bad and "corrupt" in hits:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        self._put(bucket, key, body, Metadata={"logical-size": str(logical)})
        return Segment(index, key, logical, checksum)

    def _tick(self, job: Job, logical: int, clock: float, replay: bool) -> float:
        spent = logical / self.pace.throughput
        if self.pace.realtime and not replay:
            time.sleep(spent)
            clock = time.time()
            self.store.heartbeat(job.id, clock)
        else:
            clock += spent
        return clock

    def _put(self, bucket: str, key: str, body: bytes, **extra: Any) -> None:
        try:
            storage.put_object(self.s3, bucket, key, body, **extra)
        except StorageError as exc:
            raise JobFailed(exc.code or "StorageError", exc.message) from exc

    def _cross_network(self, job: Job, faults: FaultSet) -> None:
        if self.target is None or self.connect is None:
            return
        if self.families.get(job.connector) not in NETWORK_FAMILIES:
            return
        host, port = self.target
        for _ in range(3):
            try:
                self.connect(host, port, 1.0)
                return
            except OSError:
                continue
        raise JobFailed("ConnectTimeout", f"connect to {host}:{port} timed out 3 times")

    def _log(self, job: Job, level: str, message: str, at: float) -> None:
        self.store.add_log(job.id, job.attempts, level, message, at)
