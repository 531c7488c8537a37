"""Storage health (runbook Diagnostics 2) against a real moto server behind the fault proxy."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config

from exportnb.core import codec
from exportnb.core.errors import InvalidInput
from exportnb.core.findings import (
    BUCKET_MISSING,
    PERMISSION_DENIED,
    STORAGE_UNREACHABLE,
    THROTTLING,
)
from exportnb.incident.steps.storagehealth import storage_health
from exportnb.platform import storage
from exportnb.sandbox.faults import FaultSet, parse_fault
from exportnb.sandbox.s3proxy import FaultProxy
from exportnb.sandbox.s3server import MotoServer
from exportnb.sandbox.state import CREDENTIALS

HOME, EU = "health-home", "health-eu"


class Faults:
    """What the proxy's ``faults`` callable returns; tests swap ``current``."""

    def __init__(self) -> None:
        self.current = FaultSet()

    def __call__(self) -> FaultSet:
        return self.current


@pytest.fixture(scope="module")
def faults() -> Faults:
    return Faults()


@pytest.fixture(scope="module")
def proxy(faults: Faults) -> Iterator[FaultProxy]:
    with MotoServer() as moto, FaultProxy(moto.url, faults) as running:
        admin = boto3.client(
            "s3",
            endpoint_url=running.url,
            region_name="us-east-1",
            aws_access_key_id="a",
            aws_secret_access_key="b",
            config=Config(s3={"addressing_style": "path"}),
        )
        admin.create_bucket(Bucket=HOME)
        admin.create_bucket(
            Bucket=EU, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        yield running


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, faults: Faults) -> Iterator[None]:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    faults.current = FaultSet()
    yield
    faults.current = FaultSet()


def test_healthy_buckets_answer_200_with_their_region(proxy):
    health = storage_health([HOME, EU], endpoint=proxy.url)
    home, eu = health.checks
    assert (home.bucket, home.ok, home.status, home.verdict) == (HOME, True, 200, "ok")
    assert (home.region, eu.region) == ("us-east-1", "eu-west-1")
    assert home.code is None and home.latency_ms > 0
    assert health.findings == [] and health.healthy
    assert health.endpoint == proxy.url


def test_a_throttled_bucket_is_seen_on_the_first_attempt(proxy, faults):
    faults.current = FaultSet((parse_fault("throttle", {"buckets": [EU]}),))
    before = proxy.requests
    health = storage_health([HOME, EU], endpoint=proxy.url)
    assert proxy.requests - before == 2  # one HeadBucket per bucket: nothing retried
    home, eu = health.checks
    assert home.verdict == "ok"
    assert (eu.ok, eu.status, eu.code, eu.verdict) == (False, 503, "SlowDown", "throttled")
    (finding,) = health.findings
    assert (finding.code, finding.severity, finding.step) == (
        THROTTLING,
        "critical",
        "storage_health",
    )
    assert finding.evidence["buckets"] == [EU]
    assert finding.evidence["codes"] == ["SlowDown"]
    assert finding.evidence["statuses"] == [503]
    assert finding.evidence["client_region"] == "us-east-1"
    assert EU in finding.summary and "SlowDown" in finding.summary


def test_a_missing_bucket(proxy):
    health = storage_health(["health-nobody-made-this", HOME], endpoint=proxy.url)
    missing = health.checks[0]
    assert (missing.status, missing.verdict, missing.ok) == (404, "missing", False)
    assert missing.code == "NotFound"
    (finding,) = health.findings
    assert finding.code == BUCKET_MISSING
    assert finding.evidence["buckets"] == ["health-nobody-made-this"]


def test_buckets_are_checked_once_each_in_the_order_given(proxy):
    health = storage_health([EU, HOME, EU, HOME], endpoint=proxy.url)
    assert [c.bucket for c in health.checks] == [EU, HOME]


def test_the_endpoint_comes_from_aws_endpoint_url(proxy, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    health = storage_health([HOME])
    assert health.checks[0].verdict == "ok"
    assert health.endpoint == proxy.url


def test_a_given_client_is_used_as_it_is(proxy):
    s3 = storage.client(proxy.url, max_attempts=0)
    health = storage_health([EU], s3=s3)
    assert health.checks[0].region == "eu-west-1"


def test_an_unreachable_endpoint_is_a_finding_not_an_exception():
    began = time.monotonic()
    health = storage_health([HOME, EU], endpoint="http://127.0.0.1:9", timeout=1.0)
    assert time.monotonic() - began < 5
    assert [c.verdict for c in health.checks] == ["unreachable", "unreachable"]
    assert all(c.status is None and not c.ok for c in health.checks)
    assert health.checks[0].code == "EndpointUnreachable"
    (finding,) = health.findings
    assert finding.code == STORAGE_UNREACHABLE
    assert finding.evidence["buckets"] == [HOME, EU]
    assert finding.evidence["endpoint"] == "http://127.0.0.1:9"


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP server that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_checks_run_concurrently_and_a_silent_endpoint_times_out(silent_endpoint):
    buckets = [f"silent-{i}" for i in range(4)]
    began = time.monotonic()
    health = storage_health(buckets, endpoint=silent_endpoint, timeout=1.0)
    elapsed = time.monotonic() - began
    assert elapsed < 2.5, f"4 checks of 1s each took {elapsed:.1f}s: not concurrent"
    assert {c.verdict for c in health.checks} == {"unreachable"}
    assert all(c.latency_ms >= 900 for c in health.checks)
    assert health.findings[0].code == STORAGE_UNREACHABLE


def test_missing_credentials_are_an_error_verdict(proxy, monkeypatch, tmp_path):
    for key in CREDENTIALS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    health = storage_health([HOME], endpoint=proxy.url)
    check = health.checks[0]
    assert (check.verdict, check.code, check.status) == ("error", "NoCredentialsError", None)
    assert health.findings == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def authorizing_moto() -> Iterator[tuple[str, dict[str, str]]]:
    """moto server with IAM authorization on, and the keys of a user with no permissions.

    moto authorizes every request after the first ``INITIAL_NO_AUTH_ACTION_COUNT``; those
    three create the bucket, the user and the user's key.
    """
    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_port(port)
        admin = {
            "endpoint_url": url,
            "region_name": "us-east-1",
            "aws_access_key_id": "admin",
            "aws_secret_access_key": "admin",
        }
        boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **admin).create_bucket(
            Bucket="locked"
        )
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="auditor")
        key = iam.create_access_key(UserName="auditor")["AccessKey"]
        yield (
            url,
            {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            },
        )
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("moto server did not start")


def test_a_denied_bucket_is_a_permission_finding(authorizing_moto, monkeypatch):
    url, keys = authorizing_moto
    for key, value in keys.items():
        monkeypatch.setenv(key, value)
    health = storage_health(["locked"], endpoint=url)
    check = health.checks[0]
    assert (check.status, check.code, check.verdict) == (403, "AccessDenied", "permission")
    (finding,) = health.findings
    assert finding.code == PERMISSION_DENIED and finding.evidence["buckets"] == ["locked"]


def test_several_verdicts_at_once_give_one_finding_each(proxy, faults):
    faults.current = FaultSet((parse_fault("throttle", {"buckets": [HOME]}),))
    health = storage_health([HOME, "health-absent", EU], endpoint=proxy.url)
    assert [c.verdict for c in health.checks] == ["throttled", "missing", "ok"]
    assert [f.code for f in health.findings] == [THROTTLING, BUCKET_MISSING]
    assert [c.bucket for c in health.of_verdict("throttled")] == [HOME]


def test_the_result_encodes_to_json_and_frames(proxy):
    health = storage_health([HOME, "health-absent"], endpoint=proxy.url)
    doc = json.loads(json.dumps(codec.encode(health)))
    assert doc["checks"][1]["verdict"] == "missing"
    assert doc["findings"][0]["code"] == BUCKET_MISSING
    assert doc["checked_at"].endswith("Z")
    frame = health.frame()
    assert list(frame["bucket"]) == [HOME, "health-absent"]
    assert list(frame["verdict"]) == ["ok", "missing"]


@pytest.mark.parametrize(
    ("buckets", "timeout"), [([], 5.0), ("one-bucket", 5.0), ([""], 5.0), ([HOME], 0)]
)
def test_bad_input_is_refused(buckets, timeout):
    with pytest.raises(InvalidInput):
        storage_health(buckets, endpoint="http://127.0.0.1:9", timeout=timeout)
