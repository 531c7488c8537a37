"""Each fault, injected into a running sandbox: its symptom through the platform interface
and the runbook's commands, the runbook's mitigation, and the recovery."""

from __future__ import annotations

import json
import time

import pytest
from conftest import exportnb_cmd, need, wait_for

from exportnb.platform.model import JobQuery


def submit(sandbox, *args: str) -> list[str]:
    out = sandbox.run(*exportnb_cmd("sandbox", "submit", "--json", *args), check=True).stdout
    return json.loads(out)


def finished(sandbox, job_id: str, timeout: float = 60.0):
    platform = sandbox.platform()

    def done():
        job = platform.get_job(job_id).job
        return job if job.status in ("succeeded", "failed") else None

    return wait_for(done, timeout)


def ctl_json(sandbox, *args: str) -> dict:
    result = sandbox.run(*args, "--output", "json")
    return json.loads(result.stdout)


def test_throttled_bucket_then_fallback_and_retry(sandbox):
    bucket, fallback = sandbox.env["EXPORT_BUCKET"], sandbox.env["EXPORT_FALLBACK_BUCKET"]
    fault = sandbox.inject("throttle", "--bucket", bucket)
    try:
        (job_id,) = submit(sandbox, "--size", "20MB", "--tenant", "wayne")
        job = finished(sandbox, job_id)
        assert (job.status, job.error_code) == ("failed", "SlowDown")
        head = sandbox.run("aws", "s3api", "head-bucket", "--bucket", bucket)
        assert head.returncode != 0 and "503" in head.stderr
        listed = ctl_json(sandbox, "exportctl", "list", "--status", "failed", "--limit", "20")
        assert job_id in [j["id"] for j in listed["items"]]

        sandbox.run(
            "featurectl", "set", "export.fallback_bucket", fallback, "--ttl", "30m", check=True
        )
        retry = ctl_json(sandbox, "exportctl", "retry", "--job", job_id, "--concurrency", "2")
        assert retry["item"]["queued"] == [job_id]
        wait_for(lambda: sandbox.platform().get_job(job_id).job.status == "succeeded", 60)
        job = sandbox.platform().get_job(job_id).job
        assert job.delivered_bucket == fallback and job.attempts == 2
        assert sandbox.run("exportctl", "verify", "--job", job_id).returncode == 0
        history = ctl_json(sandbox, "featurectl", "history", "export.fallback_bucket")
        assert history["items"][-1]["actor"] == "test-operator"
    finally:
        sandbox.clear(fault)
        sandbox.run("featurectl", "unset", "export.fallback_bucket")


def test_retry_without_the_cause_avoided_fails_again_with_the_same_error(sandbox):
    bucket = sandbox.env["EXPORT_BUCKET"]
    fault = sandbox.inject("throttle", "--bucket", bucket)
    try:
        (job_id,) = submit(sandbox, "--size", "10MB")
        assert finished(sandbox, job_id).error_code == "SlowDown"
        sandbox.run("exportctl", "retry", "--job", job_id, check=True)
        wait_for(lambda: sandbox.platform().get_job(job_id).job.attempts == 2, 30)
        job = finished(sandbox, job_id)
        assert (job.status, job.error_code) == ("failed", "SlowDown")
    finally:
        sandbox.clear(fault)


def test_large_chunks_time_out_until_the_chunk_size_is_reduced(sandbox):
    fault = sandbox.inject("timeout", "--min-chunk", "128MB", "--hold", "200ms")
    try:
        (job_id,) = submit(sandbox, "--size", "300MB", "--chunk-size", "256MB")
        job = finished(sandbox, job_id)
        assert (job.status, job.error_code) == ("failed", "RequestTimeout")
        (small,) = submit(sandbox, "--size", "30MB", "--chunk-size", "32MB")
        assert finished(sandbox, small).status == "succeeded"

        update = ctl_json(sandbox, "exportctl", "update", "--job", job_id, "--chunk-size", "50MB")
        assert update["item"]["new"] == 50_000_000
        sandbox.run("exportctl", "retry", "--job", job_id, check=True)
        wait_for(lambda: sandbox.platform().get_job(job_id).job.status == "succeeded", 60)
        manifest = sandbox.platform().manifest(job_id)
        assert len(manifest.segments) == 6 and manifest.total_bytes == 300_000_000
    finally:
        sandbox.clear(fault)


@pytest.mark.parametrize(("kind", "state"), [("corrupt", "mismatch"), ("missing", "missing")])
def test_bad_segments_are_found_by_verify_and_fixed_by_a_re_export(sandbox, kind, state):
    fault = sandbox.inject(kind, "--tenant", "wonka")
    try:
        (job_id,) = submit(sandbox, "--tenant", "wonka", "--size", "100MB", "--chunk-size", "32MB")
        (healthy,) = submit(sandbox, "--tenant", "acme", "--size", "100MB", "--chunk-size", "32MB")
        assert finished(sandbox, job_id).status == "succeeded"  # the platform does not notice
        assert finished(sandbox, healthy).status == "succeeded"
        result = sandbox.run("exportctl", "verify", "--job", job_id, "--output", "json")
        assert result.returncode == 10
        checks = json.loads(result.stdout)["items"][0]["checks"]
        assert [c["state"] for c in checks].count(state) == 1
        assert [c["state"] for c in checks].count("ok") == len(checks) - 1
        assert sandbox.run("exportctl", "verify", "--job", healthy).returncode == 0
        rehash = sandbox.platform().verify(job_id, rehash=True)
        assert len(getattr(rehash, "mismatched" if kind == "corrupt" else "missing")) == 1

        sandbox.run("exportctl", "retry", "--job", job_id, check=True)  # re-export
        wait_for(lambda: sandbox.platform().get_job(job_id).job.attempts == 2, 30)
        assert finished(sandbox, job_id).status == "succeeded"
        assert sandbox.run("exportctl", "verify", "--job", job_id).returncode == 0
    finally:
        sandbox.clear(fault)


def test_stuck_job_shows_a_stale_heartbeat_and_is_retried(sandbox):
    fault = sandbox.inject("stuck", "--connector", "redshift")
    try:
        (job_id,) = submit(
            sandbox, "--connector", "redshift", "--size", "100MB", "--chunk-size", "32MB"
        )
        platform = sandbox.platform()
        wait_for(lambda: platform.get_job(job_id).job.status == "running", 30)
        early = sandbox.run("exportctl", "retry", "--job", job_id, "--output", "json")
        assert "live heartbeat" in json.dumps(json.loads(early.stdout))
        # the test config makes heartbeats stale after 3s
        wait_for(
            lambda: time.time() - platform.get_job(job_id).job.heartbeat_at.timestamp() > 3.5, 30
        )
        job = platform.get_job(job_id).job
        assert job.status == "running"
        stuck = platform.list_jobs(JobQuery(status="running", limit=50))
        assert job_id in [j.id for j in stuck]
        sandbox.run("exportctl", "retry", "--job", job_id, check=True)
        wait_for(lambda: platform.get_job(job_id).job.status == "succeeded", 60)
        attempts = platform.get_job(job_id).attempts
        assert [a.error_code for a in attempts] == ["HeartbeatLost", None]
    finally:
        sandbox.clear(fault)


def test_network_loss_on_the_target_path_fails_transfers_until_it_clears(sandbox):
    from exportnb.sandbox.state import read_state

    state = read_state(sandbox.home)
    need(state.path_emulated, "the network path emulator needs CAP_NET_ADMIN (root)")
    fault = sandbox.inject("network", "--loss", "100")
    try:
        (job_id,) = submit(sandbox, "--connector", "sftp", "--size", "10MB")
        job = finished(sandbox, job_id)
        assert (job.status, job.error_code) == ("failed", "ConnectTimeout")
        if sandbox.run("which", "mtr").returncode == 0:
            report = sandbox.run("mtr", "-r", "-n", "-c", "3", "-i", "0.2", state.target_host)
            last_hop = report.stdout.strip().splitlines()[-1]
            assert "100.0" in last_hop.split()[2], report.stdout
    finally:
        sandbox.clear(fault)
    sandbox.run("exportctl", "retry", "--job", job_id, check=True)
    wait_for(lambda: sandbox.platform().get_job(job_id).job.status == "succeeded", 60)


def test_paused_bulk_exports_wait_in_the_queue(sandbox):
    sandbox.run("exportctl", "pause", "bulk", check=True)
    try:
        (bulk,) = submit(sandbox, "--kind", "bulk", "--size", "10MB")
        (adhoc,) = submit(sandbox, "--kind", "adhoc", "--size", "10MB")
        assert finished(sandbox, adhoc).status == "succeeded"
        assert sandbox.platform().get_job(bulk).job.status == "queued"
    finally:
        sandbox.run("exportctl", "resume", "bulk", check=True)
    assert finished(sandbox, bulk).status == "succeeded"


def test_flags_expire_at_their_ttl(sandbox):
    fallback = sandbox.env["EXPORT_FALLBACK_BUCKET"]
    sandbox.run("featurectl", "set", "export.fallback_bucket", fallback, "--ttl", "2s", check=True)
    assert sandbox.run("featurectl", "get", "export.fallback_bucket").returncode == 0
    wait_for(lambda: sandbox.run("featurectl", "get", "export.fallback_bucket").returncode == 3, 10)
    history = ctl_json(sandbox, "featurectl", "history", "export.fallback_bucket")
    assert history["items"][-1]["action"] == "flag.expire"


def test_retry_concurrency_bound_is_never_exceeded(sandbox):
    fault = sandbox.inject("throttle", "--bucket", "exports-eu")
    try:
        ids = submit(sandbox, "--count", "6", "--bucket", "exports-eu", "--size", "5MB")
        for job_id in ids:
            finished(sandbox, job_id)
    finally:
        sandbox.clear(fault)
    platform = sandbox.platform()
    result = platform.retry(job_ids=[*ids], concurrency=2, actor="test")
    for job_id in ids:  # slow them down so overlap is observable
        platform.store.db.execute("UPDATE jobs SET bytes = 160000000 WHERE id = ?", (job_id,))
    peak = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        peak = max(peak, platform.store.batch_running_peak(result.batch))
        statuses = {platform.get_job(j).job.status for j in ids}
        if statuses <= {"succeeded", "failed"}:
            break
        time.sleep(0.05)
    assert peak == 2
    assert {platform.get_job(j).job.status for j in ids} == {"succeeded"}
