"""The incident template under papermill with a policy: applied once, however often it runs.

A throttled bucket (the default scenario) makes the assessment recommend pausing bulk
exports and the fallback bucket; ``[policy] auto_apply`` allows both. The template runs
twice, and its archived record is executed once more; featurectl's history (the
runbook's own tool) shows each flag set exactly once, and the records' audit trails
show the same two applied results.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from conftest import Sandbox, exportnb_cmd, start_sandbox

from exportnb.platform.registry import local_environment
from exportnb.record.model import NOTEBOOK
from exportnb.run import runner

INCIDENT = "INC-policy-1"


@pytest.fixture(scope="module")
def throttled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    home = tmp_path_factory.mktemp("policy-home")
    box = start_sandbox(home, "default")
    config = home / "config.toml"
    config.write_text(
        config.read_text() + '\n[policy]\nauto_apply = ["pause-bulk", "fallback-bucket"]\n'
    )
    try:
        yield box
    finally:
        subprocess.run(
            exportnb_cmd("sandbox", "down"), env=box.env, capture_output=True, timeout=60
        )


def flag_sets(box: Sandbox, key: str) -> list[dict]:
    out = box.run("featurectl", "history", key, "--output", "json", check=True).stdout
    entries = json.loads(out)["items"]  # an AuditLog document (exportnb.dev/v1)
    return [e for e in entries if e["action"] == "flag.set" and INCIDENT in e["reason"]]


def applied(record) -> list[str]:
    trails = [r["result"] for r in record.results if r.get("type") == "Trail"]
    return [a["action"] for a in trails[-1]["applied"]]


def plan_outcomes(record) -> dict[str, str]:
    plans = [r["result"] for r in record.results if r.get("type") == "MitigationPlan"]
    return {o["action"]: o["status"] for o in plans[-1]["outcomes"]}


def test_policy_applies_once_across_runs_and_re_execution(throttled, tmp_path):
    found = local_environment(throttled.home)
    assert found is not None
    env, defaults = found
    how = {
        "incident_id": INCIDENT,
        "env": {**env, "EXPORTNB_HOME": str(throttled.home)},
        "defaults": defaults,
        "archive": str(tmp_path / "archive"),
        "operator": "alertmanager",
    }
    first = runner.run(**how)
    assert first.status == "succeeded", first.error
    outcomes = plan_outcomes(first)
    assert outcomes["pause-bulk"] == "applied" and outcomes["fallback-bucket"] == "applied"
    assert outcomes.get("retry", "not_allowed") == "not_allowed"  # policy leaves it to people
    assert applied(first) == ["pause-bulk", "fallback-bucket"]

    second = runner.run(**how)
    archived = runner.run(first.path(NOTEBOOK), **how)
    for record in (second, archived):
        assert record.status == "succeeded", record.error
        assert set(plan_outcomes(record).values()) <= {"already_applied", "not_allowed"}
        assert applied(record) == ["pause-bulk", "fallback-bucket"]
    assert len(flag_sets(throttled, "export.fallback_bucket")) == 1
    assert len(flag_sets(throttled, "export.bulk_paused")) == 1
