"""Runbook Diagnostics 2, storage health: ``aws s3api head-bucket --bucket $EXPORT_BUCKET``.

"Expected: 200 OK. If throttled, note error code and region." :func:`storage_health` sends
one HeadBucket to each bucket (the export bucket plus the buckets of failing jobs),
concurrently, with a client that makes exactly one attempt and has short timeouts, so that
throttling is seen as it is instead of being retried away. Each :class:`BucketCheck` has the
HTTP status, the S3 error code, the bucket's region (``x-amz-bucket-region``, on errors too
where the endpoint sends it), the latency and a verdict:

==============  ==========================================================  ===================
verdict         what the endpoint said                                      finding
==============  ==========================================================  ===================
``ok``          200                                                         -
``throttled``   503, or a throttling code (SlowDown, Throttling, ...)       THROTTLING
``permission``  403 (AccessDenied, InvalidAccessKeyId, ...)                 PERMISSION_DENIED
``missing``     404 (NoSuchBucket, NotFound)                                BUCKET_MISSING
``unreachable`` no answer: connection refused or reset, DNS, timeouts       STORAGE_UNREACHABLE
``error``       anything else (credentials missing, 400, 500, ...)          -
==============  ==========================================================  ===================

An unreachable endpoint is a finding, never an exception.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from exportnb.core import codec
from exportnb.core.errors import InvalidInput, StorageError
from exportnb.core.findings import (
    BUCKET_MISSING,
    PERMISSION_DENIED,
    STORAGE_UNREACHABLE,
    THROTTLING,
    Finding,
)
from exportnb.platform import storage
from exportnb.platform.model import StorageAccess

STEP = "storage_health"
MAX_PARALLEL = 16
THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestThrottled",
    }
)
THROTTLE_STATUSES = frozenset({429, 503})
PERMISSION_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "AccountProblem",
        "ExpiredToken",
        "InvalidToken",
    }
)
MISSING_CODES = frozenset({"NoSuchBucket", "NotFound"})


@dataclass(frozen=True)
class BucketCheck:
    """One HeadBucket: what came back, how long it took, and what it means."""

    bucket: str
    ok: bool
    status: int | None
    code: str | None
    region: str | None
    latency_ms: float
    verdict: str  # ok | throttled | permission | missing | unreachable | error
    message: str


@dataclass(frozen=True)
class StorageHealth:
    """HeadBucket results for every bucket checked, and what they show."""

    KIND: ClassVar[str] = "storage-health/v1"
    checks: list[BucketCheck]
    findings: list[Finding]
    endpoint: str | None = None
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def healthy(self) -> bool:
        return all(c.ok for c in self.checks)

    def of_verdict(self, verdict: str) -> list[BucketCheck]:
        return [c for c in self.checks if c.verdict == verdict]

    def frame(self) -> Any:
        """The checks as a DataFrame, one row per bucket."""
        import pandas as pd  # deferred: pandas is heavy

        columns = ["bucket", "verdict", "status", "code", "region", "latency_ms", "message"]
        return pd.DataFrame([codec.encode(c) for c in self.checks], columns=columns)


def storage_health(
    buckets: Sequence[str],
    *,
    endpoint: str | None = None,
    access: StorageAccess | None = None,
    s3: Any = None,
    timeout: float = 5.0,
) -> StorageHealth:
    """HeadBucket on each bucket (deduplicated, in order), concurrently, one attempt each.

    ``s3`` is used as it is when given; otherwise a client for ``endpoint`` (else
    ``AWS_ENDPOINT_URL``, else the platform's storage ``access``, else boto3's default) with
    the keys ``access`` hands over where the environment names none, no retries and
    ``timeout`` seconds to connect and to read.
    """
    names = _bucket_names(buckets)
    if not timeout > 0:
        raise InvalidInput(f"timeout must be greater than zero, not {timeout!r}")
    if s3 is None:
        access = access or StorageAccess()
        s3 = storage.client(
            endpoint or os.environ.get("AWS_ENDPOINT_URL") or access.endpoint_url,
            max_attempts=0,
            connect_timeout=timeout,
            read_timeout=timeout,
            pool=min(len(names), MAX_PARALLEL),
            credentials=access.client_credentials(),
        )
    with ThreadPoolExecutor(max_workers=min(len(names), MAX_PARALLEL)) as pool:
        checks = list(pool.map(lambda name: check_bucket(s3, name), names))
    used = endpoint or getattr(getattr(s3, "meta", None), "endpoint_url", None)
    return StorageHealth(checks, _findings(checks, used, _client_region(s3)), used)


def _bucket_names(buckets: Sequence[str]) -> list[str]:
    if isinstance(buckets, str):
        raise InvalidInput("buckets must be a list of bucket names, not one string")
    names = list(dict.fromkeys(buckets))
    if not names:
        raise InvalidInput("name at least one bucket to check")
    bad = [b for b in names if not isinstance(b, str) or not b.strip()]
    if bad:
        raise InvalidInput(f"invalid bucket name(s): {bad!r}")
    return names


def _client_region(s3: Any) -> str | None:
    return getattr(getattr(s3, "meta", None), "region_name", None)


# One bucket ---------------------------------------------------------------------
def check_bucket(s3: Any, bucket: str) -> BucketCheck:
    """One HeadBucket through :func:`exportnb.platform.storage.head_bucket`, classified."""
    started = time.perf_counter()
    try:
        answer = storage.head_bucket(s3, bucket)
    except StorageError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        return _failed_check(bucket, exc, elapsed)
    elapsed = (time.perf_counter() - started) * 1000
    status = int(answer.get("status") or 200)
    return BucketCheck(bucket, True, status, None, answer.get("region"), elapsed, "ok", "OK")


def _failed_check(bucket: str, exc: StorageError, elapsed: float) -> BucketCheck:
    region = _error_region(exc.__cause__)
    return BucketCheck(
        bucket, False, exc.status, exc.code or None, region, elapsed, verdict_of(exc), exc.message
    )


def verdict_of(exc: StorageError) -> str:
    """throttled, permission, missing, unreachable or error, from the translated error."""
    if exc.status is None:
        return "unreachable" if _is_connection_failure(exc.__cause__) else "error"
    if exc.status in THROTTLE_STATUSES or exc.code in THROTTLE_CODES:
        return "throttled"
    if exc.status == 403 or exc.code in PERMISSION_CODES:
        return "permission"
    if exc.status == 404 or exc.code in MISSING_CODES:
        return "missing"
    return "error"


def _is_connection_failure(cause: BaseException | None) -> bool:
    # deferred: botocore is heavy
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    return isinstance(cause, (BotoConnectionError, HTTPClientError))


def _error_region(cause: BaseException | None) -> str | None:
    response = getattr(cause, "response", None) or {}
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    region = headers.get("x-amz-bucket-region")
    return str(region) if region else None


# Findings -----------------------------------------------------------------------
_FINDINGS: tuple[tuple[str, str, str], ...] = (
    ("throttled", THROTTLING, "S3 is throttling"),
    ("permission", PERMISSION_DENIED, "S3 denies access to"),
    ("missing", BUCKET_MISSING, "S3 has no bucket"),
    ("unreachable", STORAGE_UNREACHABLE, "S3 endpoint unreachable for"),
)


def _findings(checks: list[BucketCheck], endpoint: str | None, region: str | None) -> list[Finding]:
    found = []
    for verdict, code, lead in _FINDINGS:
        hit = [c for c in checks if c.verdict == verdict]
        if hit:
            found.append(_finding(code, lead, hit, endpoint, region))
    return found


def _finding(
    code: str, lead: str, hit: list[BucketCheck], endpoint: str | None, region: str | None
) -> Finding:
    buckets = [c.bucket for c in hit]
    codes = sorted({c.code for c in hit if c.code})
    regions = sorted({c.region for c in hit if c.region})
    where = f" in {', '.join(regions)}" if regions else ""
    shown = f" ({', '.join(codes)})" if codes else ""
    summary = f"{lead} {', '.join(buckets)}{where}{shown}"
    evidence = {
        "buckets": buckets,
        "codes": codes,
        "regions": regions,
        "statuses": sorted({c.status for c in hit if c.status is not None}),
        "endpoint": endpoint,
        "client_region": region,
        "messages": {c.bucket: c.message for c in hit},
    }
    return Finding(code, "critical", summary, STEP, evidence)
