"""The template, run under papermill on a real kernel against every sandbox scenario: the
findings and recommendations must match the faults the scenario injected, and follow the
data when the faults land on other tenants and buckets. Where deliveries are damaged, the
impact sweep must name every one ``exportctl verify`` finds in its window, whichever jobs
the checksum step's sample picked."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Sandbox, exportnb_cmd, need, start_sandbox

from exportnb.core import codec
from exportnb.core import findings as codes
from exportnb.incident.steps.impact import IMPACT_PARTIAL, ImpactSweep
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


def step(record, name: str, kind: str | None = None) -> dict:
    (found,) = [
        r["result"] for r in record.results if r["step"] == name and kind in (None, r.get("kind"))
    ]
    return found


def sweep_of(record) -> ImpactSweep:
    return codec.decode(ImpactSweep, step(record, "checksums", "impact-sweep/v1"))


def damaged(sandbox: Sandbox, sweep: ImpactSweep) -> dict[str, str]:
    """Job -> tenant of every job ``exportctl verify`` finds damaged among all those that
    delivered in the sweep's window (the sandbox's own listing of it)."""
    assert sweep.since is not None and sweep.until is not None
    listed = sandbox.platform().deliveries(sweep.since, sweep.until, limit=100_000)
    assert listed.complete
    tenants = {d.job_id: d.tenant for d in listed.items}
    jobs = [arg for job in sorted(tenants) for arg in ("--job", job)]
    out = sandbox.run("exportctl", "verify", *jobs, "--output", "json").stdout
    bad = [v["job_id"] for v in json.loads(out)["items"] if not _passed(v)]
    return {job: tenants[job] for job in bad}


def _passed(verification: dict) -> bool:
    return verification["error"] is None and all(c["state"] == "ok" for c in verification["checks"])


def every_damaged_delivery_is_named(sandbox: Sandbox, record) -> dict[str, str]:
    """The sweep ran over its whole window and names exactly what exportctl verify finds;
    re-export and notify-tenants cover all of it. Returns the damaged jobs' tenants."""
    sweep = sweep_of(record)
    assert sweep.ran and not sweep.partial, sweep.coverage
    assert IMPACT_PARTIAL not in {f.code for f in record.findings()}
    truth = damaged(sandbox, sweep)
    assert truth and set(sweep.affected_jobs) == set(truth)
    assert set(sweep.affected_tenants) == set(truth.values())
    _, actions = summary(record)
    assert set(truth) <= set(actions["re-export"]["params"]["job_ids"])
    assert set(actions["notify-tenants"]["params"]["tenants"]) == set(truth.values())
    assert set(truth.values()) <= set(step(record, "recovery")["tenants_to_notify"])
    audit = step(record, "communication", "audit-summary/v1")
    assert set(truth.values()) <= set(audit["tenants"]) and set(sweep.files) <= set(audit["files"])
    return truth


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
    for sandbox, record in incident(tmp_path, "customer-checksums", "checksums"):
        found, actions = summary(record)
        assert found & {codes.CHECKSUM_MISMATCH, codes.MISSING_SEGMENTS}
        reported = set(record.job_ids)
        assert len(reported) == 3
        checks = step(record, "checksums", "checksum-report/v1")
        failed = {j["job_id"] for j in checks["jobs"] if j["state"] == "failed"}
        assert reported <= failed
        truth = every_damaged_delivery_is_named(sandbox, record)
        assert reported <= set(truth) and set(truth.values()) <= {"globex", "initech"}
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
    for sandbox, record in incident(tmp_path, str(scenario), "other"):
        found, actions = summary(record)
        assert evidence(record, codes.THROTTLING)[0]["buckets"] == ["exports-eu"]
        assert codes.CHECKSUM_MISMATCH in found
        truth = every_damaged_delivery_is_named(sandbox, record)  # not a sample's luck
        assert set(truth.values()) <= {"hooli", "wayne"}
        assert actions["fallback-bucket"]["params"]["bucket"] == "exports-fallback"


@pytest.fixture(autouse=True)
def _components():
    need(shutil.which("mtr") is not None, "mtr is not installed (make test installs mtr-tiny)")
