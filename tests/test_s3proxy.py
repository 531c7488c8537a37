"""The S3 fault proxy against a real moto server, over HTTP, with boto3 and the aws CLI."""

from __future__ import annotations

import http.client
import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import need

from exportnb.core.errors import SandboxError
from exportnb.sandbox.faults import STORAGE_SCALE, FaultSet, parse_fault
from exportnb.sandbox.s3proxy import (
    FaultProxy,
    bucket_and_key,
    is_chunk_upload,
    payload_length,
)
from exportnb.sandbox.s3server import MotoServer

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
MIN_CHUNK = 64 * 2**20
THRESHOLD_BYTES = MIN_CHUNK // STORAGE_SCALE  # stored bytes of a 64MiB chunk
HOLD = 0.2


class Faults:
    """What the proxy's ``faults`` callable returns; tests swap ``current``."""

    def __init__(self) -> None:
        self.current = FaultSet()

    def __call__(self) -> FaultSet:
        return self.current

    def set(self, *faults: tuple[str, dict]) -> None:
        self.current = FaultSet(tuple(parse_fault(kind, params) for kind, params in faults))


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = MotoServer()
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def faults() -> Faults:
    return Faults()


@pytest.fixture(scope="module")
def proxy(moto_url: str, faults: Faults) -> Iterator[FaultProxy]:
    with FaultProxy(moto_url, faults) as running:
        yield running


@pytest.fixture(autouse=True)
def _clear_faults(faults: Faults) -> Iterator[None]:
    faults.current = FaultSet()
    yield
    faults.current = FaultSet()


def client(url: str) -> BaseClient:
    # total_max_attempts=1: no retries (botocore's max_attempts counts retries, not attempts).
    config = Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"})
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


@pytest.fixture(scope="module")
def s3(proxy: FaultProxy) -> BaseClient:
    return client(proxy.url)


def new_bucket(s3: BaseClient) -> str:
    name = f"proxy-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


# --------------------------------------------------------------------------- pure helpers


def test_bucket_from_path_and_virtual_host() -> None:
    hosts = {"127.0.0.1", "localhost"}
    assert bucket_and_key("/b1/a/b%20c?x-id=PutObject", "127.0.0.1:9", hosts) == ("b1", "a/b c")
    assert bucket_and_key("/", "127.0.0.1:9", hosts) == ("", "")
    assert bucket_and_key("/b1", "localhost:9", hosts) == ("b1", "")
    assert bucket_and_key("/k/1?uploads", "b2.localhost:9", hosts) == ("b2", "k/1")
    assert bucket_and_key("http://127.0.0.1:9/b3/k", "127.0.0.1:9", hosts) == ("b3", "k")


def test_chunk_upload_and_payload_length() -> None:
    assert is_chunk_upload("PUT", "k", "/b/k", copy_source=False)
    assert is_chunk_upload("PUT", "k", "/b/k?partNumber=2&uploadId=u", copy_source=False)
    assert is_chunk_upload("PUT", "k", "/b/k?x-id=PutObject", copy_source=False)
    assert not is_chunk_upload("PUT", "k", "/b/k?tagging", copy_source=False)
    assert not is_chunk_upload("PUT", "k", "/b/k", copy_source=True)
    assert not is_chunk_upload("PUT", "", "/b", copy_source=False)
    assert not is_chunk_upload("POST", "k", "/b/k?uploads", copy_source=False)
    assert payload_length("4096", 4200) == 4096
    assert payload_length(None, 17) == 17


# --------------------------------------------------------------------------- forwarding


def test_checksums_survive_the_proxy(s3: BaseClient, proxy: FaultProxy) -> None:
    bucket = new_bucket(s3)
    before = proxy.requests
    put = s3.put_object(Bucket=bucket, Key="seg/0", Body=b"segment", ChecksumAlgorithm="SHA256")
    head = s3.head_object(Bucket=bucket, Key="seg/0", ChecksumMode="ENABLED")
    assert put["ChecksumSHA256"] == head["ChecksumSHA256"]
    assert head["ContentLength"] == len(b"segment")
    assert s3.get_object(Bucket=bucket, Key="seg/0")["Body"].read() == b"segment"
    assert proxy.requests - before == 3


def test_expect_continue_and_multipart_upload(s3: BaseClient) -> None:
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="file", Body=io.BytesIO(b"from a file object"))
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    part = s3.upload_part(
        Bucket=bucket, Key="mp", UploadId=upload["UploadId"], PartNumber=1, Body=b"p" * 100
    )
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )
    assert s3.get_object(Bucket=bucket, Key="file")["Body"].read() == b"from a file object"
    assert s3.head_object(Bucket=bucket, Key="mp")["ContentLength"] == 100


def test_chunked_request_body_is_forwarded(s3: BaseClient, proxy: FaultProxy) -> None:
    bucket = new_bucket(s3)
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=5)
    try:
        conn.request("PUT", f"/{bucket}/chunked", body=iter([b"abc", b"defg"]), encode_chunked=True)
        response = conn.getresponse()
        response.read()
        assert response.status == 200
    finally:
        conn.close()
    assert s3.get_object(Bucket=bucket, Key="chunked")["Body"].read() == b"abcdefg"


def test_missing_bucket_is_404(s3: BaseClient) -> None:
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=f"missing-{uuid.uuid4().hex[:8]}")
    assert error_of(exc)[1] == 404


# --------------------------------------------------------------------------- throttle


def test_throttle_answers_slowdown_only_for_its_buckets(
    s3: BaseClient, proxy: FaultProxy, faults: Faults
) -> None:
    hot, cold = new_bucket(s3), new_bucket(s3)
    faults.set(("throttle", {"buckets": [hot]}))
    before = proxy.throttled
    with pytest.raises(ClientError) as put_exc:
        s3.put_object(Bucket=hot, Key="k", Body=b"x")
    assert error_of(put_exc) == ("SlowDown", 503)
    assert "Please reduce your request rate." in str(put_exc.value)
    with pytest.raises(ClientError) as head_exc:
        s3.head_bucket(Bucket=hot)
    # HEAD answers carry no body, so botocore can only name the status, as with real S3.
    assert error_of(head_exc) == ("503", 503)
    assert proxy.throttled - before == 2
    s3.put_object(Bucket=cold, Key="k", Body=b"x")
    s3.head_bucket(Bucket=cold)


def test_throttle_by_virtual_host(s3: BaseClient, proxy: FaultProxy, faults: Faults) -> None:
    hot = new_bucket(s3)
    faults.set(("throttle", {"buckets": [hot]}))
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=5)
    try:
        conn.request("GET", "/?list-type=2", headers={"Host": f"{hot}.localhost:{proxy.port}"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 503
    assert b"<Code>SlowDown</Code>" in body


def test_clearing_throttle_restores_service(s3: BaseClient, faults: Faults) -> None:
    bucket = new_bucket(s3)
    faults.set(("throttle", {"buckets": [bucket]}))
    with pytest.raises(ClientError):
        s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    faults.current = FaultSet()
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert s3.head_object(Bucket=bucket, Key="k")["ContentLength"] == 1


# --------------------------------------------------------------------------- timeout


def test_timeout_holds_large_chunks_then_request_timeout(
    s3: BaseClient, proxy: FaultProxy, faults: Faults
) -> None:
    bucket = new_bucket(s3)
    faults.set(("timeout", {"min_chunk": "64MiB", "hold": HOLD}))
    before = proxy.timed_out
    started = time.monotonic()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="big", Body=b"x" * THRESHOLD_BYTES)
    elapsed = time.monotonic() - started
    assert error_of(exc) == ("RequestTimeout", 400)
    assert HOLD <= elapsed < HOLD + 1.0
    assert proxy.timed_out - before == 1
    s3.put_object(Bucket=bucket, Key="small", Body=b"x" * (THRESHOLD_BYTES - 1))
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="big")
    assert s3.head_object(Bucket=bucket, Key="small")["ContentLength"] == THRESHOLD_BYTES - 1


def test_every_request_a_fault_strikes_is_reported_with_the_export_it_names(
    moto_url: str, faults: Faults
) -> None:
    hits: list = []
    key = "exports/acme/job-0123456789ab/attempt-2/part-00003.bin"
    with FaultProxy(moto_url, faults, on_hit=hits.append) as proxy:
        s3 = client(proxy.url)
        bucket, other = new_bucket(s3), new_bucket(s3)
        throttle = replace(parse_fault("throttle", {"buckets": [bucket]}), id=7)
        timeout = replace(parse_fault("timeout", {"min_chunk": "64MiB", "hold": 0.01}), id=8)
        faults.current = FaultSet((throttle, timeout))
        with pytest.raises(ClientError):
            s3.head_bucket(Bucket=bucket)
        with pytest.raises(ClientError):
            s3.put_object(Bucket=other, Key=key, Body=b"x" * THRESHOLD_BYTES)
        s3.put_object(Bucket=other, Key=key, Body=b"x" * (THRESHOLD_BYTES - 1))
    throttled, timed_out = hits
    assert (throttled.kind, throttled.bucket, throttled.job_id, throttled.fault_id) == (
        "throttle",
        bucket,
        None,
        7,
    )
    export = (timed_out.job_id, timed_out.tenant, timed_out.attempt, timed_out.segment)
    assert export == ("job-0123456789ab", "acme", 2, 3)
    assert (timed_out.kind, timed_out.fault_id, timed_out.size) == ("timeout", 8, MIN_CHUNK)
    assert timed_out.limit == MIN_CHUNK


def test_timeout_hits_upload_part_but_not_copies(s3: BaseClient, faults: Faults) -> None:
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="src", Body=b"x" * THRESHOLD_BYTES)
    faults.set(("timeout", {"min_chunk": "64MiB", "hold": 0.01, "buckets": [bucket]}))
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    with pytest.raises(ClientError) as exc:
        s3.upload_part(
            Bucket=bucket,
            Key="mp",
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=b"x" * THRESHOLD_BYTES,
        )
    assert error_of(exc) == ("RequestTimeout", 400)
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "src"})
    other = new_bucket(s3)
    s3.put_object(Bucket=other, Key="big", Body=b"x" * THRESHOLD_BYTES)


def aws_chunked_put(proxy: FaultProxy, bucket: str, key: str, data: bytes) -> tuple[int, bytes]:
    """A PutObject framed as boto3 frames flexible checksums over TLS (aws-chunked)."""
    body = b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data)
    headers = {
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "Content-Length": str(len(body)),
    }
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=5)
    try:
        conn.request("PUT", f"/{bucket}/{key}", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_timeout_uses_the_decoded_length_of_aws_chunked_bodies(
    s3: BaseClient, proxy: FaultProxy, faults: Faults
) -> None:
    bucket = new_bucket(s3)
    faults.set(("timeout", {"min_chunk": "64MiB", "hold": 0.01}))
    status, body = aws_chunked_put(proxy, bucket, "big", b"x" * THRESHOLD_BYTES)
    assert (status, b"<Code>RequestTimeout</Code>" in body) == (400, True)
    # On the wire this body is longer than the threshold; its payload is not.
    status, _ = aws_chunked_put(proxy, bucket, "small", b"x" * (THRESHOLD_BYTES - 1))
    assert status == 200
    assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == b"x" * (THRESHOLD_BYTES - 1)


# --------------------------------------------------------------------------- aws CLI


def aws_head_bucket(url: str, bucket: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    aws = Path(sys.executable).with_name("aws")
    need(aws.exists(), "awscli is not installed next to this interpreter (make test installs it)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= CREDENTIALS | {
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
    }
    command = [str(aws), "s3api", "head-bucket", "--bucket", bucket, "--endpoint-url", url]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


def test_aws_cli_head_bucket(
    s3: BaseClient, proxy: FaultProxy, faults: Faults, tmp_path: Path
) -> None:
    healthy, hot = new_bucket(s3), new_bucket(s3)
    faults.set(("throttle", {"buckets": [hot]}))
    assert aws_head_bucket(proxy.url, healthy, tmp_path).returncode == 0
    throttled = aws_head_bucket(proxy.url, hot, tmp_path)
    assert throttled.returncode != 0
    assert "503" in throttled.stderr
    missing = aws_head_bucket(proxy.url, f"missing-{uuid.uuid4().hex[:8]}", tmp_path)
    assert missing.returncode != 0
    assert "404" in missing.stderr


# --------------------------------------------------------------------------- lifecycle


def test_upstream_down_is_502(faults: Faults) -> None:
    server = MotoServer()
    url = server.start()
    server.stop()
    with FaultProxy(url, faults) as proxy, pytest.raises(ClientError) as exc:
        client(proxy.url).list_buckets()
    assert error_of(exc)[1] == 502


def test_stop_closes_the_port(moto_url: str, faults: Faults) -> None:
    proxy = FaultProxy(moto_url, faults)
    url = proxy.start()
    client(url).list_buckets()
    proxy.stop()
    with pytest.raises(SandboxError):
        _ = proxy.url
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=2)
    with pytest.raises(OSError):
        conn.request("GET", "/")
        conn.getresponse()
    conn.close()


def test_non_http_upstream_is_refused(faults: Faults) -> None:
    with pytest.raises(SandboxError):
        FaultProxy("https://example.invalid", faults)
