"""Bringing sandboxes up and down, and a sandbox on an S3 endpoint it did not start."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import QUIET_SCENARIO, exportnb_cmd, wait_for

from exportnb.platform import storage


def run(home, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "EXPORTNB_HOME": str(home), **(env or {})}
    full.pop("AWS_ENDPOINT_URL", None)
    return subprocess.run(
        exportnb_cmd(*args), env=full, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def external_s3():
    """A separate moto server process: an S3 endpoint the sandbox did not start."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(answers, 20)
    yield url
    proc.terminate()
    proc.wait(10)


def test_lifecycle_and_errors_when_not_running(tmp_path):
    scenario = tmp_path / "quiet.toml"
    scenario.write_text(QUIET_SCENARIO)
    assert run(tmp_path, "sandbox", "status").returncode == 5
    env = run(tmp_path, "sandbox", "env")
    assert env.returncode == 5 and env.stderr.startswith("Error: the sandbox is not running")
    bad = run(tmp_path, "sandbox", "up", "--scenario", "no-such-scenario")
    assert bad.returncode == 3 and "Error:" in bad.stderr
    assert not (tmp_path / "sandbox" / "state.json").exists()

    up = run(tmp_path, "sandbox", "up", "--scenario", str(scenario), "--json")
    assert up.returncode == 0, up.stderr
    state = json.loads(up.stdout)
    try:
        again = run(tmp_path, "sandbox", "up", "--scenario", str(scenario))
        assert again.returncode == 4 and "already running" in again.stderr
        assert run(tmp_path, "sandbox", "status").returncode == 0
    finally:
        assert run(tmp_path, "sandbox", "down").returncode == 0
    wait_for(lambda: not _alive(state["pid"]), 15)
    assert run(tmp_path, "sandbox", "status").returncode == 5


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sandbox_on_an_endpoint_it_did_not_start(tmp_path, external_s3):
    scenario = tmp_path / "quiet.toml"
    scenario.write_text(QUIET_SCENARIO)
    creds = {
        "AWS_ACCESS_KEY_ID": "ext",
        "AWS_SECRET_ACCESS_KEY": "ext-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    up = run(
        tmp_path,
        "sandbox",
        "up",
        "--scenario",
        str(scenario),
        "--s3-endpoint",
        external_s3,
        "--json",
        env=creds,
    )
    assert up.returncode == 0, up.stderr
    try:
        assert json.loads(up.stdout)["s3_endpoint"] == external_s3
        throttle = run(
            tmp_path, "sandbox", "fault", "inject", "throttle", "--bucket", "exports-primary"
        )
        assert throttle.returncode == 4 and "embedded S3" in throttle.stderr
        out = run(tmp_path, "sandbox", "submit", "--json", "--size", "10MB", env=creds)
        (job_id,) = json.loads(out.stdout)
        os.environ["EXPORTNB_HOME"], old = str(tmp_path), os.environ.get("EXPORTNB_HOME")
        try:
            from exportnb.sandbox.platform import SandboxPlatform

            platform = SandboxPlatform(tmp_path)
            wait_for(lambda: platform.get_job(job_id).job.status == "succeeded", 60)
            manifest_key = platform.store.latest_manifest(job_id)[2]
        finally:
            if old is None:
                os.environ.pop("EXPORTNB_HOME")
            else:
                os.environ["EXPORTNB_HOME"] = old
        s3 = storage.client(external_s3, credentials=creds)
        listed = s3.list_objects_v2(Bucket="exports-primary", Prefix=manifest_key.rsplit("/", 1)[0])
        assert len(listed["Contents"]) == 2  # one 10MB segment and the manifest
    finally:
        run(tmp_path, "sandbox", "down")
    time.sleep(0.1)
