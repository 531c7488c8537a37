"""Checksum verification (runbook Diagnostics 3) against the real sandbox, with corrupt and
missing segments injected by its export worker and throttling by its S3 fault proxy."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import exportnb_cmd, wait_for

from exportnb.core import codec
from exportnb.core.errors import InvalidInput, StorageError
from exportnb.core.findings import CHECKSUM_MISMATCH, MISSING_SEGMENTS
from exportnb.incident.steps.checksums import error_text, tally, verify_jobs
from exportnb.platform.model import SegmentCheck
from exportnb.sandbox.platform import SandboxPlatform

UNKNOWN = "job-that-never-existed"


def submit(sandbox, *args: str) -> str:
    out = sandbox.run(*exportnb_cmd("sandbox", "submit", "--json", *args), check=True).stdout
    (job_id,) = json.loads(out)
    return job_id


def finished(sandbox, job_id: str) -> str:
    platform = sandbox.platform()

    def status() -> str | None:
        found = platform.get_job(job_id).job.status
        return found if found in ("succeeded", "failed") else None

    return str(wait_for(status, 60))


@dataclass
class World:
    corrupt: str
    missing: str
    healthy: str
    undelivered: str


@pytest.fixture(scope="module")
def world(sandbox) -> World:
    """A corrupt, a missing-segment and a healthy delivery, and a job that never delivered."""
    faults = [
        sandbox.inject("corrupt", "--tenant", "umbrella"),
        sandbox.inject("missing", "--tenant", "hooli"),
        sandbox.inject("throttle", "--bucket", "exports-eu"),
    ]
    try:
        size = ("--size", "100MB", "--chunk-size", "32MB")
        jobs = World(
            corrupt=submit(sandbox, "--tenant", "umbrella", *size),
            missing=submit(sandbox, "--tenant", "hooli", *size),
            healthy=submit(sandbox, "--tenant", "acme", *size),
            undelivered=submit(sandbox, "--tenant", "acme", "--bucket", "exports-eu", *size),
        )
        assert finished(sandbox, jobs.undelivered) == "failed"
        for job_id in (jobs.corrupt, jobs.missing, jobs.healthy):
            assert finished(sandbox, job_id) == "succeeded"  # the platform does not notice
    finally:
        for fault in faults:
            sandbox.clear(fault)
    return jobs


def _all(world: World) -> list[str]:
    return [world.corrupt, world.missing, world.healthy, UNKNOWN, world.undelivered]


def test_each_job_gets_its_state_and_the_bad_keys(sandbox, world):
    report = verify_jobs(sandbox.platform(), _all(world))
    assert report.mode == "checksum"
    states = {j.job_id: j.state for j in report.jobs}
    assert [j.job_id for j in report.jobs] == _all(world)
    assert states == {
        world.corrupt: "failed",
        world.missing: "failed",
        world.healthy: "passed",
        UNKNOWN: "not_found",
        world.undelivered: "no_manifest",
    }
    corrupt, missing, healthy, unknown, undelivered = report.jobs
    assert (len(corrupt.mismatched), corrupt.missing, corrupt.ok) == (1, [], 3)
    assert (corrupt.missing, len(missing.missing), missing.mismatched, missing.ok) == ([], 1, [], 3)
    assert f"/{world.corrupt}/" in corrupt.mismatched[0]
    assert (healthy.ok, healthy.segments, healthy.error) == (4, 4, None)
    assert (corrupt.tenant, missing.tenant, healthy.tenant) == ("umbrella", "hooli", "acme")
    assert corrupt.bucket == "exports-primary" and corrupt.manifest_key
    assert unknown.tenant is None and "not found" in unknown.detail
    assert undelivered.error is None and "no manifest" in undelivered.detail


def test_findings_name_the_jobs_tenants_and_keys(sandbox, world):
    report = verify_jobs(sandbox.platform(), _all(world))
    mismatch, missing = report.findings
    assert (mismatch.code, mismatch.severity, mismatch.step) == (
        CHECKSUM_MISMATCH,
        "critical",
        "checksums",
    )
    assert mismatch.evidence["job_ids"] == [world.corrupt]
    assert mismatch.evidence["tenants"] == ["umbrella"]
    assert mismatch.evidence["keys"] == report.jobs[0].mismatched
    assert missing.code == MISSING_SEGMENTS
    assert missing.evidence["job_ids"] == [world.missing]
    assert missing.evidence["tenants"] == ["hooli"]
    assert missing.evidence["keys"] == report.jobs[1].missing
    assert report.failed_job_ids == [world.corrupt, world.missing]
    assert report.affected_tenants == ["hooli", "umbrella"]
    assert report.affected_files == [
        f"s3://exports-primary/{report.jobs[0].mismatched[0]}",
        f"s3://exports-primary/{report.jobs[1].missing[0]}",
    ]


def test_the_platforms_own_verification_agrees(sandbox, world):
    platform = sandbox.platform()
    report = verify_jobs(platform, [world.corrupt, world.missing, world.healthy])
    for check in report.jobs:
        own = platform.verify(check.job_id)
        assert check.mismatched == [c.key for c in own.mismatched]
        assert check.missing == [c.key for c in own.missing]
        assert check.ok == len(own.ok)


def test_rehash_mode_downloads_and_agrees(sandbox, world):
    platform = sandbox.platform()
    quick = verify_jobs(platform, _all(world))
    full = verify_jobs(platform, _all(world), rehash=True, workers=3)
    assert full.mode == "rehash"
    assert [(j.state, j.mismatched, j.missing, j.ok) for j in full.jobs] == [
        (j.state, j.mismatched, j.missing, j.ok) for j in quick.jobs
    ]
    assert [f.code for f in full.findings] == [CHECKSUM_MISMATCH, MISSING_SEGMENTS]
    assert full.findings[0].evidence["mode"] == "rehash"


def test_one_worker_and_duplicates_give_the_same_answer(sandbox, world):
    ids = [world.healthy, world.corrupt, world.healthy, world.corrupt]
    report = verify_jobs(sandbox.platform(), ids, workers=1)
    assert [(j.job_id, j.state) for j in report.jobs] == [
        (world.healthy, "passed"),
        (world.corrupt, "failed"),
    ]


@pytest.fixture
def verify_threads() -> Iterator[set[str]]:
    """The names of every pool thread seen alive while the test runs."""
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.update(
                t.name
                for t in threading.enumerate()
                if t.name.startswith(("verify", "ThreadPoolExecutor"))
            )
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    yield seen
    stop.set()
    watcher.join()


def test_all_jobs_share_one_bounded_pool(sandbox, world, verify_threads):
    report = verify_jobs(sandbox.platform(), [*_all(world), world.corrupt], workers=3)
    assert len(report.jobs) == 5
    assert 1 <= len(verify_threads) <= 3, verify_threads  # no pool per job
    assert all(name.startswith("verify") for name in verify_threads)


def test_a_throttled_bucket_is_an_error_state_and_the_run_goes_on(sandbox, world):
    fault = sandbox.inject("throttle", "--bucket", "exports-primary")
    try:
        report = verify_jobs(sandbox.platform(), [world.healthy, UNKNOWN, world.undelivered])
    finally:
        sandbox.clear(fault)
    healthy, unknown, undelivered = report.jobs
    assert healthy.state == "error" and "SlowDown" in (healthy.error or "")
    assert (unknown.state, undelivered.state) == ("not_found", "no_manifest")
    assert report.findings == [] and report.failed_job_ids == []


def test_an_unreachable_endpoint_is_an_error_state(sandbox, world, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    report = verify_jobs(sandbox.platform(), [world.healthy, UNKNOWN])
    assert [j.state for j in report.jobs] == ["error", "not_found"]
    assert "cannot reach" in (report.jobs[0].error or "")


def test_no_jobs_is_an_empty_report(sandbox):
    report = verify_jobs(sandbox.platform(), [])
    assert (report.jobs, report.findings, report.affected_files) == ([], [], [])


@pytest.mark.parametrize(("ids", "workers"), [("job-1", 8), ([""], 8), (["job-1"], 0)])
def test_bad_input_is_refused(sandbox, ids, workers):
    with pytest.raises(InvalidInput):
        verify_jobs(sandbox.platform(), ids, workers=workers)


def test_the_report_encodes_to_json_and_frames(sandbox, world):
    report = verify_jobs(sandbox.platform(), _all(world))
    doc = json.loads(json.dumps(codec.encode(report)))
    assert [j["state"] for j in doc["jobs"]][:3] == ["failed", "failed", "passed"]
    frame = report.frame()
    assert list(frame["state"]) == ["failed", "failed", "passed", "not_found", "no_manifest"]
    assert list(frame["mismatched"])[:2] == [1, 0]


def test_the_first_delivered_manifest_is_read_alone(sandbox, world):
    """A platform that sets its storage client up on first use sets it up once."""
    delivered = [world.corrupt, world.missing, world.healthy]

    class Watched(SandboxPlatform):
        """Notes, for each manifest read of a delivered job: how many such reads ran at
        once, and whether the storage client was still to be made."""

        def __init__(self, home) -> None:
            super().__init__(home)
            self.lock, self.running, self.calls = threading.Lock(), 0, []

        def manifest(self, job_id):
            if job_id not in delivered:
                return super().manifest(job_id)
            with self.lock:
                self.running += 1
                self.calls.append((self.running, self._s3 is None))
            try:
                time.sleep(0.05)  # long enough for the other workers to arrive
                return super().manifest(job_id)
            finally:
                with self.lock:
                    self.running -= 1

    platform = Watched(sandbox.home)
    report = verify_jobs(platform, [*delivered, UNKNOWN, world.undelivered], workers=8)
    assert [j.state for j in report.jobs] == [
        "failed",
        "failed",
        "passed",
        "not_found",
        "no_manifest",
    ]
    first, *others = platform.calls
    assert first == (1, True)  # alone, and it made the client
    assert others and not any(unmade for _, unmade in others)


def test_the_sandbox_names_its_storage_and_its_exportctl_shows_no_keys(sandbox):
    access = sandbox.platform().info().storage
    assert access is not None and access.client_credentials() is not None
    out = sandbox.run("exportctl", "info", "--output", "json", check=True).stdout
    shown = json.loads(out)["item"]["storage"]
    assert shown == {"endpoint_url": access.endpoint_url, "region": access.region}
    assert access.secret_access_key and access.secret_access_key not in out


def test_the_client_follows_the_platforms_storage_whatever_its_name(
    sandbox, world, monkeypatch, tmp_path
):
    """No AWS keys in the environment: the platform's own keys reach the storage."""

    class Renamed(SandboxPlatform):
        name = "acme"

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    report = verify_jobs(Renamed(sandbox.home), [world.healthy, world.corrupt])
    assert [j.state for j in report.jobs] == ["passed", "failed"]


def test_the_pieces_the_impact_sweep_shares_tally_outcomes():
    """``tally`` (with ``segment_check`` and ``queue_segments``) is what verify_jobs and the
    impact sweep both judge a delivery's segments with."""
    outcomes = [
        SegmentCheck(0, "k0", "ok", "x"),
        SegmentCheck(1, "k1", "mismatch", "x", "y"),
        SegmentCheck(2, "k2", "missing", "x"),
        StorageError("s3://b/k3: SlowDown (HTTP 503)", code="SlowDown"),
        StorageError("s3://b/k4: SlowDown (HTTP 503)", code="SlowDown"),
    ]
    found = tally(outcomes)
    assert (found.ok, found.mismatched, found.missing, len(found.failures)) == (
        1,
        ["k1"],
        ["k2"],
        2,
    )
    assert error_text(found.failures) == (
        "s3://b/k3: SlowDown (HTTP 503) (and 1 more segment(s) unchecked)"
    )
    assert error_text([]) is None
