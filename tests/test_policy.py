"""Policy: what an automatic run may apply, and that re-running applies nothing twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from exportnb.core.config import Settings
from exportnb.core.errors import ConfigError, InvalidInput, PreconditionFailed
from exportnb.core.findings import FAILURE_RATE_HIGH, THROTTLING, Finding
from exportnb.incident.model import AssessmentContext
from exportnb.incident.steps.jobstate import JobState
from exportnb.incident.steps.storagehealth import BucketCheck, StorageHealth
from exportnb.mitigation import lifecycle as mitigations
from exportnb.mitigation import policy, registry
from exportnb.mitigation.assessment import assess
from exportnb.mitigation.journal import read_journal
from exportnb.platform.model import BULK_PAUSE_FLAG, FALLBACK_FLAG


def test_auto_apply_is_read_and_checked_from_config(tmp_path):
    assert Settings().auto_apply == ()
    settings = Settings.from_dict({"policy": {"auto_apply": ["pause-bulk", "retry", "retry"]}})
    assert settings.auto_apply == ("pause-bulk", "retry")
    for bad in (["pause-bulk", "reboot"], "pause-bulk", [1]):
        with pytest.raises(ConfigError, match=r"\[policy\]"):
            Settings.from_dict({"policy": {"auto_apply": bad}})
    path = tmp_path / "config.toml"
    path.write_text('[policy]\nauto_apply = ["fallback-bucket"]\n')
    assert Settings.load(path).auto_apply == ("fallback-bucket",)
    path.write_text('[policy]\nauto_apply = ["nope"]\n')
    with pytest.raises(ConfigError, match="unknown mitigation 'nope'"):
        Settings.load(path)


def test_decisions_by_mode(monkeypatch):
    monkeypatch.delenv(policy.MODE_ENV, raising=False)
    settings = Settings(auto_apply=("pause-bulk",))
    assert policy.allows("retry", "interactive", settings)
    assert policy.allows("pause-bulk", "auto", settings)
    assert not policy.allows("retry", "auto", settings)
    assert not policy.decide("retry", "interactive", settings=settings).allowed
    assert policy.decide("retry", "interactive", confirmed=True, settings=settings).allowed
    denied = policy.decide("retry", "auto", confirmed=True, settings=settings)
    assert not denied.allowed and "auto_apply" in denied.reason
    with pytest.raises(InvalidInput):
        policy.allows("retry", "sometimes", settings)
    with pytest.raises(InvalidInput):
        policy.allows("reboot", "interactive", settings)


def test_an_unattended_environment_forces_auto(monkeypatch):
    monkeypatch.setenv(policy.MODE_ENV, "auto")
    settings = Settings(auto_apply=())
    decision = policy.decide("pause-bulk", "interactive", confirmed=True, settings=settings)
    assert not decision.allowed and decision.mode == "auto"


def findings(bucket: str) -> list[Finding]:
    evidence = {"buckets": [bucket], "regions": ["eu-west-1"]}
    return [
        Finding(THROTTLING, "critical", f"S3 throttles {bucket}", "storage_health", evidence),
        Finding(FAILURE_RATE_HIGH, "critical", "9% of exports fail", "detection", {}),
    ]


def healthy(fallback: str) -> StorageHealth:
    """HeadBucket answered 200 for the fallback bucket: it may be recommended."""
    return StorageHealth([BucketCheck(fallback, True, 200, None, None, 3.0, "ok", "OK")], [])


def test_auto_mode_applies_only_what_policy_allows_and_only_once(sandbox, monkeypatch):
    monkeypatch.delenv(policy.MODE_ENV, raising=False)
    bucket, fallback = sandbox.env["EXPORT_BUCKET"], sandbox.env["EXPORT_FALLBACK_BUCKET"]
    context = AssessmentContext(export_bucket=bucket, fallback_bucket=fallback)
    settings = Settings(auto_apply=("pause-bulk",), max_retry_concurrency=4)
    assessment = assess(findings(bucket), healthy(fallback), context=context, settings=settings)
    assert {"pause-bulk", "fallback-bucket", "retry"} <= set(assessment.actions)
    platform = sandbox.platform()
    try:
        first = mitigations.auto_apply(
            platform, "INC-auto", assessment, operator="alert", settings=settings
        )
        by_action = {o.action: o for o in first}
        assert by_action["pause-bulk"].status == "applied"
        assert by_action["fallback-bucket"].status == "not_allowed"
        assert by_action["fallback-bucket"].plan.commands[0].startswith("featurectl set")
        assert by_action["retry"].status in ("not_allowed", "refused")
        assert platform.get_flag(BULK_PAUSE_FLAG).set_by == "alert"
        assert platform.get_flag(FALLBACK_FLAG) is None

        again = mitigations.auto_apply(
            platform, "INC-auto", assessment, operator="alert", settings=settings
        )
        assert {o.action: o.status for o in again}["pause-bulk"] == "already_applied"
        sets = [
            e
            for e in platform.flag_history(BULK_PAUSE_FLAG)
            if e.action == "flag.set" and e.reason.startswith("INC-auto ")
        ]
        assert len(sets) == 1
        applies = [e for e in read_journal("INC-auto") if e.kind == "apply"]
        assert [e.action for e in applies] == ["pause-bulk"]
        skips = {(e.action, e.outcome) for e in read_journal("INC-auto") if e.kind == "skip"}
        assert ("fallback-bucket", "not_allowed") in skips
        assert ("pause-bulk", "already_applied") in skips
    finally:
        platform.resume_bulk(actor="test")


def test_interactive_is_forced_to_auto_in_an_unattended_run(sandbox, monkeypatch):
    monkeypatch.setenv(policy.MODE_ENV, "auto")
    platform = sandbox.platform()
    settings = Settings(auto_apply=())
    p = mitigations.plan(platform, "INC-unattended", "pause-bulk", settings=settings)
    outcome = mitigations.apply(platform, p, confirmed=True, settings=settings)
    assert outcome.status == "not_allowed" and platform.get_flag(BULK_PAUSE_FLAG) is None
    monkeypatch.delenv(policy.MODE_ENV)
    with pytest.raises(PreconditionFailed, match="not confirmed"):
        mitigations.apply(platform, p, settings=settings)


AUTO_CELL = """
import json, os
from exportnb.mitigation import lifecycle as mitigations
from exportnb.mitigation.assessment import assess
from exportnb.incident.model import AssessmentContext
from exportnb.incident.steps.storagehealth import BucketCheck, StorageHealth
from exportnb.core.findings import Finding
from exportnb.platform import get_platform

bucket, fallback = os.environ["EXPORT_BUCKET"], os.environ["EXPORT_FALLBACK_BUCKET"]
found = [Finding("throttling", "critical", "S3 throttles", "storage_health", {"buckets": [bucket]}),
         Finding("failure_rate_high", "critical", "9% fail", "detection", {})]
health = StorageHealth([BucketCheck(fallback, True, 200, None, None, 3.0, "ok", "OK")], [])
context = AssessmentContext(export_bucket=bucket, fallback_bucket=fallback)
outcomes = mitigations.auto_apply(get_platform(), incident_id,
                                  assess(found, health, context=context), operator=operator)
print(json.dumps({o.action: o.status for o in outcomes}))
"""


def auto_notebook(path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('incident_id = ""\noperator = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(AUTO_CELL)]
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["kernelspec"] = kernel
    nbformat.write(nb, path)
    return path


def statuses(record) -> dict:
    import json

    import nbformat

    from exportnb.record.model import NOTEBOOK

    nb = nbformat.read(record.path(NOTEBOOK), as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    return json.loads(text.strip().splitlines()[-1])


def test_re_executing_a_notebook_or_its_archived_record_applies_nothing_twice(sandbox, tmp_path):
    from exportnb.record.model import NOTEBOOK
    from exportnb.run import runner

    config = sandbox.home / "config.toml"
    original = config.read_text()
    config.write_text(original + '\n[policy]\nauto_apply = ["pause-bulk"]\n')
    platform = sandbox.platform()
    how = {
        "incident_id": "INC-nb",
        "env": sandbox.env,
        "archive": str(tmp_path / "archive"),
        "operator": "alertmanager",
    }
    try:
        first = runner.run(auto_notebook(tmp_path / "auto.ipynb"), **how)
        assert first.status == "succeeded", first.error
        assert statuses(first)["pause-bulk"] == "applied"
        assert statuses(first)["fallback-bucket"] == "not_allowed"
        second = runner.run(tmp_path / "auto.ipynb", **how)
        archived = runner.run(first.path(NOTEBOOK), **how)
        for record in (second, archived):
            assert statuses(record)["pause-bulk"] == "already_applied"
            assert statuses(record)["fallback-bucket"] == "not_allowed"
        sets = [
            e
            for e in platform.flag_history(BULK_PAUSE_FLAG)
            if e.action == "flag.set" and e.reason.startswith("INC-nb ")
        ]
        assert len(sets) == 1 and sets[0].actor == "alertmanager"
        assert platform.get_flag(FALLBACK_FLAG) is None
    finally:
        config.write_text(original)
        platform.resume_bulk(actor="test")


def test_a_decision_policy_made_is_journaled_once_not_at_every_run(sandbox, monkeypatch):
    monkeypatch.delenv(policy.MODE_ENV, raising=False)
    bucket, fallback = sandbox.env["EXPORT_BUCKET"], sandbox.env["EXPORT_FALLBACK_BUCKET"]
    context = AssessmentContext(export_bucket=bucket, fallback_bucket=fallback)
    settings = Settings(auto_apply=(), max_retry_concurrency=4)
    assessment = assess(findings(bucket), healthy(fallback), context=context, settings=settings)
    platform = sandbox.platform()
    for _ in range(3):  # an open incident re-run every 15 minutes
        outcomes = mitigations.auto_apply(
            platform, "INC-quiet", assessment, operator="alert", settings=settings
        )
        by_action = {o.action: o for o in outcomes}
        assert by_action["fallback-bucket"].status == "not_allowed"
        assert by_action["fallback-bucket"].plan.commands[0].startswith("featurectl set")
    declined = [
        (e.kind, e.action) for e in read_journal("INC-quiet") if e.action == "fallback-bucket"
    ]
    assert declined == [("plan", "fallback-bucket"), ("skip", "fallback-bucket")]
    assert platform.get_flag(FALLBACK_FLAG) is None


@pytest.mark.parametrize("max_ttl", [600.0, 3600.0, 24 * 3600.0])
@pytest.mark.parametrize("cap", [1, 3, 8])
def test_recommended_values_pass_the_guardrails_of_the_limits(max_ttl, cap):
    now = datetime(2024, 6, 11, 14, 30, tzinfo=UTC)
    state = JobState(now - timedelta(hours=5), now, [], 130, False, [], {}, {}, {}, [])
    settings = Settings(max_retry_concurrency=cap, max_flag_ttl=max_ttl)
    context = AssessmentContext(export_bucket="b", fallback_bucket="f", safe_concurrency=2)
    for extra in ([], findings("b")):
        stale = Finding("stuck_jobs", "warning", "1 stuck", "detection", {"job_ids": ["j1"]})
        assessed = assess(extra, stale, healthy("f"), state, context=context, settings=settings)
        for rec in assessed.recommendations:
            mitigation = registry.find(rec.action)
            if mitigation is not None:
                mitigation.normalize(rec.params, settings)  # never refused by the limits
            if rec.action == "retry":
                assert 1 <= rec.params["concurrency"] <= cap
        for rec in assessed.of_action("fallback-bucket"):
            assert rec.evidence["ttl"]["seconds"] <= max_ttl
