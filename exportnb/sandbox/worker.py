"""The export worker: claims queued jobs and really writes their segments and manifest to S3.

Each segment is an S3 object stored with a SHA-256 additional checksum; the manifest
lists every segment with its checksum. Storage sizes are scaled by
:data:`~exportnb.sandbox.faults.STORAGE_SCALE`. Faults strike where they would on a
real platform: S3 faults come back from the endpoint (through the fault proxy), worker
faults (corrupt, missing, stuck) happen here, and the network fault shows on the path
to the target host.

Every delivery is written under ``exports/<tenant>/<job id>/attempt-<n>/``: its segments
``part-00000.bin``, ``part-00001.bin``, ... and ``manifest.json`` (:func:`delivery_prefix`,
:func:`parse_export_key`), so that a key names the job and attempt it belongs to.

What a worker fault hits is recorded as it happens, in the store by default
(``Store.record_fault_hit``, the ground truth of :mod:`exportnb.sandbox.truth`): the
corrupted segment once it is stored, the missing one when it is skipped, the stuck attempt
when it stalls, and a job the impaired network path failed. The S3 fault proxy records its
own hits in the same store (the daemon hands it ``on_hit``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exportnb.core.errors import StorageError
from exportnb.platform import storage
from exportnb.platform.model import BULK_PAUSE_FLAG, FALLBACK_FLAG, Job, Manifest, Segment
from exportnb.sandbox.faults import (
    STORAGE_SCALE,
    Fault,
    FaultHit,
    FaultSet,
    HitSink,
)
from exportnb.sandbox.store import Store

log = logging.getLogger(__name__)

NETWORK_FAMILIES = ("file-transfer",)
"""Connector families that deliver to EXPORT_TARGET_HOST and so cross the network path."""
CONNECT_TIMEOUT = "ConnectTimeout"
"""The error code of a job that could not reach EXPORT_TARGET_HOST."""
EXPORTS_ROOT = "exports"
"""The key prefix every delivery is written under."""
MANIFEST_NAME = "manifest.json"
_EXPORT_KEY = re.compile(
    rf"^{EXPORTS_ROOT}/(?P<tenant>[^/]+)/(?P<job>[^/]+)/attempt-(?P<attempt>[0-9]+)/"
    rf"(?:part-(?P<segment>[0-9]+)\.bin|{re.escape(MANIFEST_NAME)})$"
)


@dataclass(frozen=True)
class ExportKey:
    """What a delivery's key says: whose it is, which attempt, which segment (None: the
    manifest)."""

    tenant: str
    job_id: str
    attempt: int
    segment: int | None


def delivery_prefix(tenant: str, job_id: str, attempt: int) -> str:
    """Where one attempt of a job writes its segments and manifest."""
    return f"{EXPORTS_ROOT}/{tenant}/{job_id}/attempt-{attempt}"


def segment_key(prefix: str, index: int) -> str:
    """The key of segment ``index`` of the delivery under ``prefix``."""
    return f"{prefix}/part-{index:05d}.bin"


def parse_export_key(key: str) -> ExportKey | None:
    """The tenant, job, attempt and segment of a key the worker writes; None for any other."""
    found = _EXPORT_KEY.match(key)
    if found is None:
        return None
    segment = found.group("segment")
    return ExportKey(
        found.group("tenant"),
        found.group("job"),
        int(found.group("attempt")),
        None if segment is None else int(segment),
    )


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


@dataclass(frozen=True)
class _Strike:
    """The worker faults striking one attempt: by kind, and the segment they strike."""

    job: Job
    bucket: str
    faults: dict[str, Fault]
    bad: int

    def __contains__(self, kind: str) -> bool:
        return kind in self.faults

    def hit(self, kind: str, at: float, **where: Any) -> FaultHit:
        """A hit of ``kind`` on this attempt, at ``where`` (segment, key, size)."""
        job = self.job
        return FaultHit(
            kind,
            "worker",
            at,
            bucket=self.bucket,
            job_id=job.id,
            tenant=job.tenant,
            connector=job.connector,
            attempt=job.attempts,
            chunk_size=job.chunk_size,
            fault_id=self.faults[kind].id if kind in self.faults else None,
            **where,
        )


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
        hits: HitSink | None = None,
    ) -> None:
        """``hits`` (default: the store's ``record_fault_hit``) records what faults hit."""
        self.store, self.s3, self.faults = store, s3, faults
        self.target, self.connect = target, connect
        self.pace = pace or Pace()
        self.on_finish = on_finish
        self.families = store.connectors()
        self.fallback_lock = threading.Lock()
        self.report_hit: HitSink = hits or store.record_fault_hit

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
        struck = faults.worker_faults(
            job_id=job.id,
            tenant=job.tenant,
            connector=job.connector,
            bucket=bucket,
            attempt=job.attempts,
        )
        self._cross_network(job, bucket, faults, started)
        sizes = segment_sizes(job.bytes, job.chunk_size)
        prefix = delivery_prefix(job.tenant, job.id, job.attempts)
        bad = random.Random(f"{job.id}/{job.attempts}/bad").randrange(len(sizes))
        strike = _Strike(job, bucket, {f.kind: f for f in reversed(struck)}, bad)
        segments: list[Segment] = []
        clock = started
        for index, logical in enumerate(sizes):
            if "stuck" in strike and index == bad:
                self._log(job, "warning", f"segment {index}: connection stalled", clock)
                self.store.heartbeat(job.id, clock)
                self.report_hit(strike.hit("stuck", clock, segment=index, size=logical))
                return Outcome("abandoned", bucket)
            segments.append(self._write_segment(strike, prefix, index, logical, clock))
            clock = self._tick(job, logical, clock, replay)
        manifest = Manifest(
            job_id=job.id,
            bucket=bucket,
            key=f"{prefix}/{MANIFEST_NAME}",
            attempt=job.attempts,
            total_bytes=sum(sizes),
            segments=segments,
            created_at=datetime.fromtimestamp(clock, UTC),
        )
        self._put(bucket, manifest.key, storage.manifest_document(manifest))
        self.store.record_manifest(job.id, job.attempts, bucket, manifest.key, segments, clock)
        return Outcome("succeeded", bucket)

    def _write_segment(
        self, strike: _Strike, prefix: str, index: int, logical: int, at: float
    ) -> Segment:
        job = strike.job
        key = segment_key(prefix, index)
        body = segment_body(job.id, job.attempts, index, max(1, logical // STORAGE_SCALE))
        checksum = storage.sha256_b64(body)
        where = {"segment": index, "key": key, "size": logical}
        if index == strike.bad and "missing" in strike:
            self.report_hit(strike.hit("missing", at, **where))
            return Segment(index, key, logical, checksum)  # listed, never stored
        corrupt = index == strike.bad and "corrupt" in strike
        if corrupt:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        self._put(strike.bucket, key, body, Metadata={"logical-size": str(logical)})
        if corrupt:
            self.report_hit(strike.hit("corrupt", at, **where))
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

    def _cross_network(self, job: Job, bucket: str, faults: FaultSet, at: float) -> None:
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
        impairment = faults.network()
        if impairment is not None:
            strike = _Strike(job, bucket, {"network": impairment}, 0)
            self.report_hit(strike.hit("network", at, key=f"{host}:{port}"))
        raise JobFailed(CONNECT_TIMEOUT, f"connect to {host}:{port} timed out 3 times")

    def _log(self, job: Job, level: str, message: str, at: float) -> None:
        self.store.add_log(job.id, job.attempts, level, message, at)
