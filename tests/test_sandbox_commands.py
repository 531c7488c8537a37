"""The runbook's commands against a running sandbox: bad input, the command platform,
the environment, status and metrics."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest
from conftest import exportnb_cmd, wait_for

from exportnb.core.errors import InvalidInput, NotFound, StorageError
from exportnb.platform.command import CommandPlatform
from exportnb.platform.model import JobQuery


def a_failed_job(sandbox) -> str:
    jobs = sandbox.platform().list_jobs(JobQuery(status="failed", limit=1))
    return jobs[0].id


def audit_size(sandbox) -> int:
    return len(sandbox.platform().audit_log(limit=10_000))


def test_status_and_env(sandbox):
    status = json.loads(
        sandbox.run(*exportnb_cmd("sandbox", "status", "--json"), check=True).stdout
    )
    assert status["running"] and status["jobs"]["succeeded"] > 2000
    for name in ("EXPORT_BUCKET", "EXPORT_TARGET_HOST", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"):
        assert sandbox.env[name]
    assert Path(shutil.which("exportctl", path=sandbox.env["PATH"])).parent.name == "bin"
    head = sandbox.run("aws", "s3api", "head-bucket", "--bucket", sandbox.env["EXPORT_BUCKET"])
    assert head.returncode == 0, head.stderr


def test_installing_exportnb_puts_no_exportctl_on_path():
    import sys

    scripts = Path(sys.executable).parent
    assert not (scripts / "exportctl").exists() and not (scripts / "featurectl").exists()
    assert (scripts / "exportnb").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["exportctl", "show", "--job", "job-doesnotexist"], 3, "not found"),
        (["exportctl", "retry", "--job", "job-doesnotexist"], 3, "not found"),
        (["exportctl", "update", "--job", "JOB", "--chunk-size", "50XB"], 2, "invalid size"),
        (["exportctl", "update", "--job", "JOB", "--chunk-size", "-1MB"], 2, "invalid size"),
        (["exportctl", "retry", "--status", "failed", "--concurrency", "0"], 2, "concurrency"),
        (["exportctl", "retry", "--status", "failed", "--concurrency", "5"], 2, "maximum"),
        (["exportctl", "list", "--status", "exploded"], 2, "status"),
        (
            ["featurectl", "set", "export.fallback_bucket", "exports-fallback", "--ttl", "30x"],
            2,
            "TTL",
        ),
        (
            ["featurectl", "set", "export.fallback_bucket", "exports-fallback", "--ttl", "0m"],
            2,
            "TTL",
        ),
        (["featurectl", "set", "export.fallback_bucket", "exports-fallback"], 2, "TTL"),
        (
            ["featurectl", "set", "export.fallback_bucket", "no-such-bucket", "--ttl", "5m"],
            4,
            "does not exist",
        ),
        (["featurectl", "set", "export.turbo", "true"], 2, "unknown flag"),
        (["featurectl", "get", "export.turbo"], 2, "unknown flag"),
    ],
)
def test_bad_input_is_an_error_and_changes_nothing(sandbox, args, code, message):
    args = [a if a != "JOB" else a_failed_job(sandbox) for a in args]
    before = audit_size(sandbox), sandbox.platform().list_flags()
    result = sandbox.run(*args)
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert "Traceback" not in result.stderr
    assert (audit_size(sandbox), sandbox.platform().list_flags()) == before


@pytest.fixture(scope="module")
def delivered(sandbox) -> str:
    """A job the worker really delivered to S3."""
    out = sandbox.run(*exportnb_cmd("sandbox", "submit", "--json", "--size", "10MB"), check=True)
    (job_id,) = json.loads(out.stdout)
    wait_for(lambda: sandbox.platform().get_job(job_id).job.status == "succeeded", 60)
    return job_id


def test_an_unreachable_endpoint_is_an_error(sandbox, delivered):
    assert sandbox.run("exportctl", "verify", "--job", delivered).returncode == 0
    result = sandbox.run(
        "exportctl",
        "verify",
        "--job",
        delivered,
        extra_env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"},
    )
    assert result.returncode == 6
    assert result.stderr.startswith("Error: ") and "cannot reach" in result.stderr


@pytest.fixture
def command_platform(sandbox):
    bin_dir = Path(sandbox.env["EXPORTNB_HOME"]) / "sandbox" / "bin"
    env = {k: v for k, v in sandbox.env.items() if k != "EXPORTNB_OPERATOR"}
    return CommandPlatform(
        exportctl=str(bin_dir / "exportctl"), featurectl=str(bin_dir / "featurectl"), env=env
    )


def test_command_platform_reads_the_sandbox_through_its_commands(sandbox, command_platform):
    direct = sandbox.platform()
    failed = command_platform.list_jobs(JobQuery(status="failed", limit=20))
    assert [j.id for j in failed] == [j.id for j in direct.list_jobs(JobQuery(status="failed"))]
    detail = command_platform.get_job(failed[0].id)
    assert detail.job == direct.get_job(failed[0].id).job
    assert detail.attempts and detail.logs
    assert command_platform.info().export_bucket == sandbox.env["EXPORT_BUCKET"]
    with pytest.raises(NotFound):
        command_platform.get_job("job-doesnotexist")
    with pytest.raises(InvalidInput):
        command_platform.retry(status="failed", concurrency=0)


def test_command_platform_acts_and_the_audit_log_names_the_actor(sandbox, command_platform):
    fallback = sandbox.env["EXPORT_FALLBACK_BUCKET"]
    flag = command_platform.set_flag(
        "export.fallback_bucket", fallback, ttl=60, actor="carol", reason="INC-9"
    )
    assert flag.value == fallback and flag.set_by == "carol"
    assert command_platform.get_flag("export.fallback_bucket").value == fallback
    command_platform.unset_flag("export.fallback_bucket", actor="carol")
    assert command_platform.get_flag("export.fallback_bucket") is None
    history = command_platform.flag_history("export.fallback_bucket")
    assert [(e.action, e.actor) for e in history[-2:]] == [
        ("flag.set", "carol"),
        ("flag.unset", "carol"),
    ]


def test_command_platform_translates_storage_errors(command_platform, delivered):
    assert command_platform.verify(delivered).passed
    unreachable = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}
    broken = CommandPlatform(
        exportctl=command_platform.exportctl,
        featurectl=command_platform.featurectl,
        env={**command_platform.env, **unreachable},
    )
    with pytest.raises(StorageError, match="cannot reach"):
        broken.verify(delivered)


def test_metrics_cover_the_runbook_detection_rules(sandbox):
    from prometheus_client.parser import text_string_to_metric_families

    from exportnb.sandbox.state import read_state

    url = read_state(Path(sandbox.env["EXPORTNB_HOME"])).metrics_url
    with urllib.request.urlopen(url, timeout=5) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    for name in (
        "exportnb_job_attempts",
        "exportnb_job_duration_seconds",
        "exportnb_jobs",
        "exportnb_jobs_running",
        "exportnb_oldest_heartbeat_age_seconds",
    ):
        assert name in families, sorted(families)
    labels = {tuple(sorted(s.labels)) for s in families["exportnb_job_attempts"].samples}
    assert ("connector", "status", "storage") in labels
    assert os.environ.get("EXPORTNB_HOME")
