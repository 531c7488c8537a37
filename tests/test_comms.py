"""The status update and the audit summary, drafted from real results on constructed stores."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from constructed import FALLBACK, NOW, PRIMARY, make_world, minutes

from exportnb.core.errors import InvalidInput
from exportnb.core.findings import Finding
from exportnb.incident.model import AssessmentContext
from exportnb.incident.steps import checksums
from exportnb.incident.steps.baseline import baseline
from exportnb.incident.steps.comms import audit_summary, corrective_action, status_update
from exportnb.incident.steps.detection import detect
from exportnb.incident.steps.impact import DeliveryCheck, ImpactSweep
from exportnb.incident.steps.jobstate import job_state
from exportnb.incident.steps.recovery import verify_recovery
from exportnb.mitigation import assessment
from exportnb.platform.model import FALLBACK_FLAG, AuditEntry, JobQuery


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    yield w
    w.platform.close()


@pytest.fixture
def incident(world):
    """A throttled primary bucket: failures now, a fallback flag, a retry and a chunk change."""
    for day in range(1, 8):
        world.many(NOW - day * timedelta(days=1) - minutes(5), 10)
    world.many(NOW - minutes(4), 12, "failed", error_code="SlowDown", tenant="globex")
    world.many(NOW - minutes(3), 8)
    failed = world.platform.list_jobs(JobQuery(status="failed", limit=1))[0].id
    now = time.time()
    world.store.put_flag(
        FALLBACK_FLAG,
        FALLBACK,
        actor="alice",
        now=now,
        expires_at=now + 1800,
        reason="primary throttled",
    )
    world.platform.set_chunk_size(failed, 50_000_000, actor="bob", reason="timeouts")
    world.platform.retry(job_ids=[failed], concurrency=2, actor="bob")
    return world, failed


def report(job_id: str, tenant: str = "wonka") -> object:
    bad = checksums.JobCheck(job_id, tenant, PRIMARY, "failed", 3, ["t/seg-00001"], [])
    good = checksums.JobCheck("job-ok", "acme", PRIMARY, "passed", 4, [], [])
    return checksums.ChecksumReport("checksum", [bad, good], [])


def test_status_update_while_mitigating(incident):
    world, _ = incident
    detection = detect(world.platform, now=NOW)
    base = baseline(world.platform, NOW - minutes(15), NOW)
    recovery = verify_recovery(
        world.platform, now=NOW, baseline=base, incident_start=NOW - minutes(30), min_attempts=10
    )
    extra = Finding(
        "throttling", "warning", "exports-primary answers 503 SlowDown", "storage_health"
    )
    update = status_update(
        incident_id="INC-42",
        now=NOW,
        detection=detection,
        recovery=recovery,
        assessment=None,
        findings=[extra, *detection.findings],
        flags=world.platform.list_flags(),
        comms_lead="dana",
        operator="bob",
    )
    assert update.incident_id == "INC-42" and update.at == NOW
    assert update.next_update_at == NOW + minutes(15) and update.findings == []
    md, text = update.markdown, update.text
    assert md.startswith("## Export incident INC-42: status update 2024-06-11 14:30 UTC")
    assert "Mitigating" in md and recovery.verdict == "not_yet"
    assert f"{recovery.success_rate:.1%} vs baseline {recovery.baseline_rate:.1%}" in md
    assert "[critical] Failure rate 60.0%" in md  # detection's finding, listed once
    assert md.count("Failure rate 60.0% over") == 1
    assert md.index("[critical]") < md.index("[warning] exports-primary answers 503")
    assert f"`export.fallback_bucket` = `{FALLBACK}` (set by alice" in md and "expires" in md
    assert "chunk size of" in md and "→ 50MB (by bob)" in md
    assert "Comms lead: dana" in md and "Next update: 2024-06-11 14:45 UTC" in md
    assert "`" not in text and "export.fallback_bucket = exports-fallback" in text
    assert "Comms lead: dana" in text and "##" not in text


def test_status_update_lists_the_assessment_next_steps(incident):
    world, _ = incident
    state = job_state(world.platform, since=NOW - minutes(30), until=NOW)
    context = AssessmentContext(export_bucket=PRIMARY, fallback_bucket=FALLBACK)
    assessed = assessment.assess(state, context=context)
    assert assessed.recommendations
    update = status_update(
        incident_id="INC-42",
        now=NOW,
        detection=None,
        recovery=None,
        assessment=assessed,
        findings=state.findings,
        flags=[],
        comms_lead="",
        operator="bob",
        next_update_minutes=30,
    )
    first = sorted(assessed.recommendations, key=lambda r: r.priority)[0]
    assert f"- {first.action}: " in update.markdown
    assert "Comms lead: unassigned" in update.markdown
    assert update.next_update_at == NOW + minutes(30)


def test_status_update_with_nothing_known_yet():
    update = status_update(
        incident_id="INC-1",
        now=NOW.astimezone(timezone(timedelta(hours=2))),
        detection=None,
        recovery=None,
        assessment=None,
        findings=[],
        flags=[],
        comms_lead="dana",
        operator="",
    )
    assert update.at == NOW and update.at.tzinfo is UTC
    assert "No findings." in update.markdown and "None." in update.markdown
    with pytest.raises(InvalidInput, match="incident_id"):
        status_update(
            incident_id=" ",
            now=NOW,
            detection=None,
            recovery=None,
            assessment=None,
            findings=[],
            flags=[],
            comms_lead="",
            operator="",
        )
    with pytest.raises(InvalidInput, match="timezone-aware"):
        status_update(
            incident_id="INC-1",
            now=datetime(2024, 6, 11),
            detection=None,
            recovery=None,
            assessment=None,
            findings=[],
            flags=[],
            comms_lead="",
            operator="",
        )


def test_audit_summary_of_tenants_files_and_actions(incident):
    world, retried = incident
    state = job_state(world.platform, since=NOW - minutes(30), until=NOW)
    base = baseline(world.platform, NOW - minutes(15), NOW)
    recovery = verify_recovery(world.platform, now=NOW, baseline=base, min_attempts=10)
    actions = world.platform.audit_log(limit=100)
    summary = audit_summary(
        incident_id="INC-42",
        job_state=state,
        checksums=report("job-bad"),
        recovery=recovery,
        actions=actions,
    )
    assert summary.tenants == ["globex", "wonka"]
    assert summary.files == [f"s3://{PRIMARY}/t/seg-00001"]
    assert [a.split(": ", 1)[0].split()[-1] for a in summary.corrective_actions] == [
        "alice",
        "bob",
        "bob",
    ]
    set_flag, chunk, retry = summary.corrective_actions
    assert f"set `export.fallback_bucket` = `{FALLBACK}`, expires" in set_flag
    assert "(reason: primary throttled)" in set_flag
    assert f"changed the chunk size of {retried} from 64MB to 50MB" in chunk
    assert "retried 1 job(s)" in retry and retried in retry
    md = summary.markdown
    assert md.startswith("## Export incident INC-42: audit summary")
    assert "### Affected tenants (2)" in md and f"`s3://{PRIMARY}/t/seg-00001`" in md
    assert "### Corrective actions (3)" in md and "Failed jobs" in md and "SlowDown 11" in md
    assert summary.findings == []


def test_audit_summary_with_nothing_to_report():
    summary = audit_summary(
        incident_id="INC-7", job_state=None, checksums=None, recovery=None, actions=[]
    )
    assert summary.tenants == [] and summary.files == [] and summary.corrective_actions == []
    assert "None recorded." in summary.markdown and "### Outcome" not in summary.markdown


def swept(*damaged: tuple[str, str, int], total: int = 40, verified: int = 40) -> ImpactSweep:
    """An impact sweep that found these (job, tenant, attempt) deliveries damaged."""
    checks = [
        DeliveryCheck(job, attempt, tenant, "s3", PRIMARY, NOW, "failed", 2, 1, [f"{job}/p0"])
        for job, tenant, attempt in damaged
    ]
    return ImpactSweep(
        True,
        "customers reported job IDs",
        since=NOW - minutes(25),
        until=NOW,
        total=total,
        verified=verified,
        damaged=checks,
        affected_jobs=[c.job_id for c in checks],
        affected_tenants=sorted({c.tenant for c in checks}),
        files=[f for c in checks for f in c.files],
    )


def test_the_audit_summary_names_every_tenant_and_file_the_sweep_found():
    sweep = swept(("job-bad", "wonka", 1), ("job-s1", "hooli", 1), ("job-s2", "stark", 2))
    summary = audit_summary(
        incident_id="INC-9",
        job_state=None,
        checksums=report("job-bad"),
        impact=sweep,
        recovery=None,
        actions=[],
    )
    assert summary.tenants == ["hooli", "stark", "wonka"]
    assert summary.files == [
        f"s3://{PRIMARY}/t/seg-00001",
        f"s3://{PRIMARY}/job-bad/p0",
        f"s3://{PRIMARY}/job-s1/p0",
        f"s3://{PRIMARY}/job-s2/p0",
    ]
    assert (
        "Impact sweep since 2024-06-11 14:05 UTC: 40 of 40 deliveries verified; 3 damaged "
        "(3 jobs, 3 tenants), 0 unverified" in summary.markdown
    )
    partial = swept(("job-s1", "hooli", 1), total=9000, verified=5000)
    text = audit_summary(
        incident_id="INC-9",
        job_state=None,
        checksums=None,
        impact=partial,
        recovery=None,
        actions=[],
    ).markdown
    assert "partial: 5,000 of 9,000 deliveries verified" in text
    off = ImpactSweep(False, 'impact_sweep is "never"')
    text = audit_summary(
        incident_id="INC-9", job_state=None, checksums=None, impact=off, recovery=None, actions=[]
    ).markdown
    assert 'Impact sweep: not run (impact_sweep is "never")' in text


def test_corrective_action_lines():
    at = NOW
    unset = AuditEntry(1, at, "alice", "flag.unset", "export.bulk_paused", True, None)
    assert corrective_action(unset) == "2024-06-11 14:30 UTC alice: unset `export.bulk_paused`"
    pause = AuditEntry(
        2, at, "bob", "flag.set", "export.bulk_paused", None, {"value": True, "expires_at": None}
    )
    assert corrective_action(pause).endswith("set `export.bulk_paused` = `true`, no expiry")
    other = AuditEntry(3, at, "sandbox", "fault.inject", "throttle", None, {"buckets": ["b"]})
    assert "fault.inject throttle" in corrective_action(other)
