"""S3 through boto3, for any endpoint: AWS, MinIO, or the sandbox's moto server.

The endpoint comes from ``AWS_ENDPOINT_URL`` (or an explicit argument), credentials and
region from boto3's usual chain. botocore errors are translated here, at the
boundary, into :class:`~exportnb.core.errors.StorageError` with the S3 error code and
HTTP status, so that throttling, permission and missing-bucket errors can be told apart.

Clients are kept for the process (:func:`client`): one per endpoint, settings and AWS
environment, all made from one boto3 session per AWS environment, which loads the S3
service model once. A new session and client cost tens of milliseconds each; the
diagnostics ask for one per step. boto3 clients are safe to share between threads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from exportnb.core.errors import StorageError
from exportnb.platform.model import Manifest, Segment, SegmentCheck, Verification

MANIFEST_SCHEMA = "exportnb.manifest/v1"
AWS_ENVIRONMENT = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CA_BUNDLE",
)
"""The variables boto3's configuration comes from: a change makes new sessions and clients."""
_SESSIONS: dict[tuple[str | None, ...], Any] = {}
_CLIENTS: dict[tuple[Any, ...], Any] = {}
_KEPT = threading.Lock()


def client(
    endpoint_url: str | None = None,
    *,
    max_attempts: int = 2,
    connect_timeout: float = 2.0,
    read_timeout: float = 15.0,
    pool: int = 32,
    credentials: dict[str, str] | None = None,
) -> Any:
    """A boto3 S3 client, kept for the process. Custom endpoints use path-style addressing.

    ``credentials`` (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``)
    are used only where the environment names none.
    """
    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    environment = tuple(os.environ.get(name) for name in AWS_ENVIRONMENT)
    settings = (max_attempts, connect_timeout, read_timeout, pool)
    key = (endpoint_url, settings, tuple(sorted((credentials or {}).items())), environment)
    with _KEPT:  # a botocore session makes one client at a time
        if key not in _CLIENTS:
            session = _SESSIONS.get(environment)
            if session is None:
                session = _SESSIONS[environment] = _session()
            _CLIENTS[key] = _new_client(session, endpoint_url, settings, credentials)
        return _CLIENTS[key]


def _session() -> Any:
    import boto3

    return boto3.session.Session()


def _new_client(
    session: Any,
    endpoint_url: str | None,
    settings: tuple[int, float, float, int],
    credentials: dict[str, str] | None,
) -> Any:
    from botocore.config import Config

    max_attempts, connect_timeout, read_timeout, pool = settings
    config = Config(
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=pool,
        s3={"addressing_style": "path"} if endpoint_url else {},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    if credentials and session.get_credentials() is None:
        return session.client(
            "s3",
            endpoint_url=endpoint_url,
            config=config,
            aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
            region_name=session.region_name or credentials.get("AWS_DEFAULT_REGION"),
        )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def storage_error(exc: BaseException, what: str) -> StorageError:
    """Translate a botocore exception into a StorageError naming the request."""
    from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode")
        code = str(error.get("Code") or status or "Unknown")
        if status is not None and code == str(status):
            code = {403: "AccessDenied", 404: "NotFound", 503: "SlowDown"}.get(int(status), code)
        message = error.get("Message") or code
        return StorageError(f"{what}: {code} (HTTP {status}): {message}", code=code, status=status)
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        return StorageError(
            f"{what}: cannot reach the S3 endpoint: {exc}", code="EndpointUnreachable"
        )
    return StorageError(f"{what}: {exc}", code=type(exc).__name__)


def _is_storage_exception(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, (BotoCoreError, ClientError))


def sha256_b64(data: bytes) -> str:
    """The base64 SHA-256 digest, the form S3 reports as ``ChecksumSHA256``."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def put_object(s3: Any, bucket: str, key: str, body: bytes, **extra: Any) -> str:
    """Store an object with an S3 additional checksum (SHA-256); returns the checksum."""
    checksum = sha256_b64(body)
    try:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
            **extra,
        )
    except Exception as exc:
        if _is_storage_exception(exc):
            raise storage_error(exc, f"PutObject s3://{bucket}/{key}") from exc
        raise
    return checksum


def manifest_document(manifest: Manifest) -> bytes:
    return json.dumps(
        {
            "schema": MANIFEST_SCHEMA,
            "job_id": manifest.job_id,
            "attempt": manifest.attempt,
            "bucket": manifest.bucket,
            "total_bytes": manifest.total_bytes,
            "created_at": manifest.created_at.isoformat(),
            "segments": [
                {"index": s.index, "key": s.key, "size": s.size, "sha256": s.sha256}
                for s in manifest.segments
            ],
        },
        indent=1,
    ).encode()


def read_manifest(s3: Any, bucket: str, key: str) -> Manifest:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:
        if _is_storage_exception(exc):
            raise storage_error(exc, f"GetObject s3://{bucket}/{key}") from exc
        raise
    try:
        doc = json.loads(body)
        if doc.get("schema") != MANIFEST_SCHEMA:
            raise ValueError(f"unknown manifest schema {doc.get('schema')!r}")
        return Manifest(
            job_id=doc["job_id"],
            bucket=doc["bucket"],
            key=key,
            attempt=int(doc["attempt"]),
            total_bytes=int(doc["total_bytes"]),
            segments=[Segment(**s) for s in doc["segments"]],
            created_at=datetime.fromisoformat(doc["created_at"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"s3://{bucket}/{key} is not a valid manifest: {exc}") from exc


def head_bucket(s3: Any, bucket: str) -> dict[str, Any]:
    """HeadBucket; returns the response headers that matter (region). Raises StorageError."""
    try:
        response = s3.head_bucket(Bucket=bucket)
    except Exception as exc:
        if _is_storage_exception(exc):
            raise storage_error(exc, f"HeadBucket {bucket}") from exc
        raise
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return {
        "status": response["ResponseMetadata"].get("HTTPStatusCode", 200),
        "region": headers.get("x-amz-bucket-region") or response.get("BucketRegion"),
    }


def check_segment(s3: Any, bucket: str, segment: Segment, *, rehash: bool) -> SegmentCheck:
    """One segment against its manifest entry: HeadObject with checksum mode, or a re-hash."""
    try:
        if rehash:
            response = s3.get_object(Bucket=bucket, Key=segment.key)
            body = response["Body"].read()
            actual, size = sha256_b64(body), len(body)
        else:
            response = s3.head_object(Bucket=bucket, Key=segment.key, ChecksumMode="ENABLED")
            actual, size = response.get("ChecksumSHA256"), response.get("ContentLength")
    except Exception as exc:
        if not _is_storage_exception(exc):
            raise
        error = storage_error(exc, f"s3://{bucket}/{segment.key}")
        if error.status == 404 or error.code in ("NoSuchKey", "NotFound"):
            return SegmentCheck(segment.index, segment.key, "missing", segment.sha256, detail="404")
        raise error from exc
    state = "ok" if actual == segment.sha256 else "mismatch"
    detail = "" if actual else "storage holds no SHA-256 checksum for this object"
    return SegmentCheck(segment.index, segment.key, state, segment.sha256, actual, size, detail)


def verify_manifest(
    s3: Any, manifest: Manifest, *, rehash: bool = False, workers: int = 16
) -> Verification:
    """Check every segment of a manifest concurrently, without downloading unless ``rehash``."""
    checks = check_segments(s3, manifest.bucket, manifest.segments, rehash=rehash, workers=workers)
    return Verification(
        job_id=manifest.job_id,
        bucket=manifest.bucket,
        manifest_key=manifest.key,
        mode="rehash" if rehash else "checksum",
        checks=checks,
        checked_at=datetime.now(UTC),
    )


def check_segments(
    s3: Any, bucket: str, segments: Sequence[Segment], *, rehash: bool, workers: int = 16
) -> list[SegmentCheck]:
    if len(segments) <= 1 or workers <= 1:
        return [check_segment(s3, bucket, s, rehash=rehash) for s in segments]
    with ThreadPoolExecutor(max_workers=min(workers, len(segments))) as pool:
        return list(pool.map(lambda s: check_segment(s3, bucket, s, rehash=rehash), segments))
