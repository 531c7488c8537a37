"""The things an export platform holds, in the runbook's words.

Times are timezone-aware UTC ``datetime`` objects; sizes are bytes; durations are seconds.
Every class here crosses the JSON contract (``exportnb.platform.contract``) unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from exportnb.core.codec import secret

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED: tuple[str, ...] = ("succeeded", "failed", "cancelled")
JOB_KINDS: tuple[str, ...] = ("scheduled", "adhoc", "bulk")

FALLBACK_FLAG = "export.fallback_bucket"
BULK_PAUSE_FLAG = "export.bulk_paused"


@dataclass(frozen=True)
class Job:
    id: str
    tenant: str
    connector: str
    bucket: str
    kind: str
    status: str
    attempts: int
    chunk_size: int
    bytes: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    error_code: str | None = None
    error_message: str | None = None
    delivered_bucket: str | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Attempt:
    job_id: str
    number: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    bucket: str
    chunk_size: int
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class LogLine:
    job_id: str
    at: datetime
    level: str
    message: str
    attempt: int = 0


@dataclass(frozen=True)
class JobDetail:
    job: Job
    attempts: list[Attempt] = field(default_factory=list)
    logs: list[LogLine] = field(default_factory=list)


@dataclass(frozen=True)
class JobQuery:
    """A filter for listing jobs. ``since``/``until`` bound ``created_at``."""

    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    connector: str | None = None
    bucket: str | None = None
    tenant: str | None = None
    limit: int = 20


@dataclass(frozen=True)
class Segment:
    index: int
    key: str
    size: int
    sha256: str  # base64 of the SHA-256 digest, the form S3 reports as ChecksumSHA256


@dataclass(frozen=True)
class Manifest:
    job_id: str
    bucket: str
    key: str
    attempt: int
    total_bytes: int
    segments: list[Segment]
    created_at: datetime


SegmentState = Literal["ok", "mismatch", "missing"]


@dataclass(frozen=True)
class SegmentCheck:
    index: int
    key: str
    state: str
    expected_sha256: str
    actual_sha256: str | None = None
    size: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Verification:
    """A job's manifest compared with what storage holds, segment by segment."""

    job_id: str
    bucket: str
    manifest_key: str
    mode: str  # "checksum" (HeadObject, no download) or "rehash" (download and hash)
    checks: list[SegmentCheck]
    checked_at: datetime
    error: str | None = None  # the manifest itself could not be read

    @property
    def ok(self) -> list[SegmentCheck]:
        return [c for c in self.checks if c.state == "ok"]

    @property
    def mismatched(self) -> list[SegmentCheck]:
        return [c for c in self.checks if c.state == "mismatch"]

    @property
    def missing(self) -> list[SegmentCheck]:
        return [c for c in self.checks if c.state == "missing"]

    @property
    def passed(self) -> bool:
        return self.error is None and len(self.ok) == len(self.checks)


@dataclass(frozen=True)
class MinuteCount:
    minute: datetime
    status: str
    count: int


@dataclass(frozen=True)
class LatencyPercentiles:
    since: datetime
    until: datetime
    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    minute: datetime | None = None  # set when the percentiles are one minute of a series


@dataclass(frozen=True)
class Flag:
    key: str
    value: Any
    set_by: str
    set_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    old: Any = None
    new: Any = None
    reason: str = ""


@dataclass(frozen=True)
class RetryResult:
    batch: str
    concurrency: int
    queued: list[str]
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChunkSizeChange:
    job_id: str
    old: int
    new: int


@dataclass(frozen=True)
class StorageAccess:
    """How a diagnostic reaches the export storage itself (HeadObject on a segment, say):
    the S3 endpoint, the region, and the keys to sign with.

    ``None`` leaves a setting to boto3's own chain (``AWS_ENDPOINT_URL``, profiles, the
    instance role). The keys are secrets: a platform running on this machine may hand them
    over, but they are never written into a document, a record or a ``repr``, and never
    read from a document (:func:`~exportnb.core.codec.secret`).
    """

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = secret()
    secret_access_key: str | None = secret()

    def client_credentials(self) -> dict[str, str] | None:
        """The keys as :func:`exportnb.platform.storage.client` takes them (it uses them only
        where the environment names none), or None when there are none."""
        if not (self.access_key_id and self.secret_access_key):
            return None
        keys = {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }
        return {name: value for name, value in keys.items() if value}


@dataclass(frozen=True)
class PlatformInfo:
    """What a platform says about itself: its name, the buckets and hosts it writes to, and
    how its storage is reached (``storage``; None: boto3's default chain)."""

    name: str
    export_bucket: str
    buckets: list[str]
    fallback_buckets: list[str]
    target_host: str | None = None
    region: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    storage: StorageAccess | None = None
