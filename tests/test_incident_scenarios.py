"""The template, run under papermill on a real kernel against every sandbox scenario: the
findings and recommendations must match the faults the scenario injected, and follow the
data when the faults land on other tenants and buckets."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Sandbox, exportnb_cmd, need, start_sandbox

from exportnb.core import findings as codes
from exportnb.platform.registry import local_environment
from exportnb.run.runner import run
from exportnb.sandbox.state import read_state

OTHER_WORLD = """
extends = "base"
description = "faults on the secondary bucket and other tenants"
volume = 20000
[incident]
reported_jobs = 2
faults = [
    { kind = "throttle", buckets = ["exports-eu"] },
    { kind = "corrupt", tenants = ["hooli", "wayne"], rate = 1.0 },
]
"""


def incident(tmp_path: Path, scenario: str, name: str) -> Iterator[tuple[Sandbox, object]]:
    home = tmp_path / name
    sandbox = start_sandbox(home, scenario)
    try:
        found = local_environment(home)
        assert found is not None
        env, defaults = found
        record = run(
            incident_id=f"INC-{name}",
            env=env,
            defaults=defaults,
            archive=str(tmp_path / "archive"),
            cell_timeout=300,
        )
        yield sandbox, record
    finally:
        sandbox.run(*exportnb_cmd("sandbox", "down"))


def step(record, name: str) -> dict:
    (found,) = [r["result"] for r in record.results if r["step"] == name]
    return found


def summary(record) -> tuple[set[str], dict[str, dict]]:
    assert record.status == "succeeded", record.error
    found = {f.code for f in record.findings()}
    actions = {r["action"]: r for r in step(record, "assessment")["recommendations"]}
    return found, actions


def evidence(record, code: str) -> list[dict]:
    return [f.evidence for f in record.findings() if f.code == code]


def test_throttled_bucket(tmp_path):
    for _, record in incident(tmp_path, "throttled-bucket", "throttle"):
        found, actions = summary(record)
        assert {codes.FAILURE_RATE_HIGH, codes.THROTTLING} <= found
        assert evidence(record, codes.THROTTLING)[0]["buckets"] == ["exports-primary"]
        assert actions["fallback-bucket"]["params"]["bucket"] == "exports-fallback"
        assert actions["retry"]["params"]["concurrency"] <= 2
        assert codes.CHUNK_TIMEOUTS not in found and codes.CHECKSUM_MISMATCH not in found


def test_large_chunk_timeouts(tmp_path):
    for _, record in incident(tmp_path, "large-chunk-timeouts", "timeouts"):
        found, actions = summary(record)
        assert codes.CHUNK_TIMEOUTS in found
        (timeouts,) = evidence(record, codes.CHUNK_TIMEOUTS)
        assert timeouts["threshold"] >= 128 * 2**20
        assert "chunk-size" in actions and codes.THROTTLING not in found


def test_customer_reported_checksums(tmp_path):
    for _, record in incident(tmp_path, "customer-checksums", "checksums"):
        found, actions = summary(record)
        assert found & {codes.CHECKSUM_MISMATCH, codes.MISSING_SEGMENTS}
        reported = set(record.job_ids)
        assert len(reported) == 3
        failed = {j["job_id"] for j in step(record, "checksums")["jobs"] if j["state"] == "failed"}
        assert reported <= failed
        tenants = set(actions["notify-tenants"]["params"]["tenants"])
        assert tenants and tenants <= {"globex", "initech"}
        assert "re-export" in actions and codes.THROTTLING not in found


def test_stuck_jobs(tmp_path):
    for _, record in incident(tmp_path, "stuck-jobs", "stuck"):
        found, actions = summary(record)
        assert codes.STUCK_JOBS in found
        stuck = step(record, "detection")["stuck"]
        assert stuck and {s["job"]["connector"] for s in stuck} == {"bigquery"}
        assert "retry" in actions


def test_mixed(tmp_path):
    for sandbox, record in incident(tmp_path, "mixed", "mixed"):
        found, actions = summary(record)
        assert {codes.THROTTLING, codes.CHUNK_TIMEOUTS} <= found
        assert evidence(record, codes.THROTTLING)[0]["buckets"] == ["exports-eu"]
        if read_state(sandbox.home).path_emulated:
            assert codes.NETWORK_LATENCY in found and "escalate-network" in actions
        assert {"fallback-bucket", "chunk-size"} <= set(actions)


def test_a_healthy_platform_raises_no_alarm(tmp_path):
    for _, record in incident(tmp_path, "base", "healthy"):
        found, actions = summary(record)
        assert not found & {
            codes.FAILURE_RATE_HIGH,
            codes.THROTTLING,
            codes.CHUNK_TIMEOUTS,
            codes.CHECKSUM_MISMATCH,
            codes.MISSING_SEGMENTS,
            codes.STUCK_JOBS,
        }
        assert not {"fallback-bucket", "chunk-size", "re-export"} & set(actions)


def test_the_diagnosis_follows_the_data_not_the_names(tmp_path):
    scenario = tmp_path / "other-world.toml"
    scenario.write_text(OTHER_WORLD)
    for _, record in incident(tmp_path, str(scenario), "other"):
        found, actions = summary(record)
        assert evidence(record, codes.THROTTLING)[0]["buckets"] == ["exports-eu"]
        assert codes.CHECKSUM_MISMATCH in found
        tenants = set(actions["notify-tenants"]["params"]["tenants"])
        assert tenants and tenants <= {"hooli", "wayne"}
        assert actions["fallback-bucket"]["params"]["bucket"] == "exports-fallback"


@pytest.fixture(autouse=True)
def _components():
    need(shutil.which("mtr") is not None, "mtr is not installed (make test installs mtr-tiny)")
