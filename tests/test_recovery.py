"""Recovery verification on constructed stores, and checksums and re-exports in the real
sandbox."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from conftest import exportnb_cmd, wait_for
from constructed import NOW, make_world, minutes

from exportnb.core import codec
from exportnb.core.errors import InvalidInput
from exportnb.incident.steps.baseline import baseline
from exportnb.incident.steps.impact import ImpactSweep
from exportnb.incident.steps.recovery import (
    CHECKSUMS_UNVERIFIED,
    CONFIG_NOT_REVERTED,
    RECHECK_SAMPLE,
    RECOVERY_NOT_CONFIRMED,
    TENANTS_TO_NOTIFY,
    sample_text,
    verify_recovery,
)
from exportnb.platform.model import BULK_PAUSE_FLAG, FALLBACK_FLAG

DAY = timedelta(days=1)
WINDOW_START = NOW.replace(second=0) - minutes(14)  # the 15 minutes ending with NOW's minute


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    yield w
    w.platform.close()


def history(world, per_day: int = 20) -> None:
    """A healthy week: ``per_day`` successes in the window's minutes on each previous day."""
    for day in range(1, 8):
        world.many(WINDOW_START - day * DAY + minutes(5), per_day)


def verify(world, **options):
    base = baseline(world.platform, WINDOW_START, NOW)
    return verify_recovery(world.platform, now=NOW, baseline=base, **options)


def codes(result) -> list[str]:
    return [f.code for f in result.findings]


def test_recovered_when_the_window_is_back_to_baseline(world):
    history(world)
    for minute in range(15):
        world.many(WINDOW_START + minutes(minute) + timedelta(seconds=10), 2)
    r = verify(world)
    assert r.verdict == "recovered" and r.recovered and r.attempts == 30
    assert r.success_rate == 1.0 and r.baseline_rate == 1.0 and r.dips == []
    assert r.config_reverted and r.fallback is None and not r.bulk_paused
    assert r.checksums is None and r.tenants_to_notify == [] and r.findings == []
    frame = r.rates_frame()
    assert len(frame) == 15 and frame.index[0] == WINDOW_START and frame["total"].sum() == 30
    json.dumps(codec.encode(r), allow_nan=False)


def test_not_yet_while_the_rate_is_below_baseline(world):
    history(world)
    world.many(WINDOW_START + minutes(3), 25)
    world.many(WINDOW_START + minutes(10), 5, "failed")
    r = verify(world)
    assert r.verdict == "not_yet" and r.success_rate == pytest.approx(25 / 30)
    assert "below the baseline" in r.reason
    (finding,) = r.findings
    assert finding.code == RECOVERY_NOT_CONFIRMED and finding.severity == "warning"
    assert finding.evidence["attempts"] == 30 and finding.evidence["failed"] == 5


def test_one_minute_far_below_the_band_is_not_yet_recovered(world):
    history(world)
    world.many(WINDOW_START + minutes(2), 60)
    world.many(WINDOW_START + minutes(12), 3, "failed")
    r = verify(world, tolerance=0.05)
    assert r.success_rate == pytest.approx(60 / 63) and r.success_rate >= 1.0 - 0.05
    assert r.verdict == "not_yet" and r.dips == [WINDOW_START + minutes(12)]
    assert "far below" in r.reason
    # one failure in a minute is within what a healthy platform does
    world.job(WINDOW_START + minutes(13), "failed")
    world.many(WINDOW_START + minutes(13), 5)
    assert WINDOW_START + minutes(13) not in verify(world, tolerance=0.05).dips


def test_no_baseline_is_insufficient_data(world):
    world.many(WINDOW_START + minutes(1), 40)
    r = verify(world)
    assert r.verdict == "insufficient_data" and r.baseline_rate is None
    assert "no baseline" in r.reason and r.success_rate == 1.0
    (finding,) = r.findings
    assert finding.code == RECOVERY_NOT_CONFIRMED and finding.severity == "info"


def test_a_few_attempts_are_insufficient_data(world):
    history(world)
    world.many(WINDOW_START + minutes(1), 5)
    r = verify(world)
    assert r.verdict == "insufficient_data" and r.attempts == 5 and "only 5" in r.reason
    assert verify(world, min_attempts=5).verdict == "recovered"


def test_no_jobs_in_the_window(world):
    history(world)
    r = verify(world)
    assert r.verdict == "insufficient_data" and r.success_rate is None and r.attempts == 0


def test_flags_and_chunk_changes_still_in_effect_are_not_reverted(world):
    history(world)
    world.many(WINDOW_START + minutes(1), 30)
    a, b = world.job(NOW - minutes(40), "failed"), world.job(NOW - minutes(40), "failed")
    store, now = world.store, time.time()
    store.put_flag(
        FALLBACK_FLAG,
        "exports-fallback",
        actor="alice",
        now=now,
        expires_at=now + 1800,
        reason="primary throttled",
    )
    store.put_flag(BULK_PAUSE_FLAG, True, actor="alice", now=now, expires_at=None, reason="")
    world.platform.set_chunk_size(a, 50_000_000, actor="bob")
    world.platform.set_chunk_size(a, 64_000_000, actor="bob")  # reverted
    world.platform.set_chunk_size(b, 50_000_000, actor="bob")
    r = verify(world, incident_start=NOW - minutes(60))
    assert r.verdict == "recovered" and not r.config_reverted
    assert r.fallback is not None and r.fallback.value == "exports-fallback"
    assert r.fallback.expires_at is not None and r.bulk_paused
    assert [(c.job_id, c.old, c.new, c.current, c.reverted) for c in r.chunk_changes] == [
        (a, 64_000_000, 50_000_000, 64_000_000, True),
        (b, 64_000_000, 50_000_000, 50_000_000, False),
    ]
    assert r.chunk_changes[0].changed_by == "bob"
    items = [f.evidence["item"] for f in r.findings if f.code == CONFIG_NOT_REVERTED]
    assert items == [FALLBACK_FLAG, BULK_PAUSE_FLAG, "chunk_size"]

    world.platform.unset_flag(FALLBACK_FLAG, actor="alice")
    world.platform.resume_bulk(actor="alice")
    world.platform.set_chunk_size(b, 64_000_000, actor="bob")
    r = verify(world, incident_start=NOW - minutes(60))
    assert r.config_reverted and r.findings == [] and all(c.reverted for c in r.chunk_changes)


def test_re_exported_jobs_name_the_tenants_to_notify(world):
    history(world)
    world.many(WINDOW_START + minutes(1), 30)
    delivered = world.job(NOW - minutes(50), tenant="wonka")
    failed = world.job(NOW - minutes(50), "failed", tenant="acme")
    world.platform.retry(job_ids=[delivered, failed], concurrency=1, actor="carol")
    world.attempt(delivered, NOW - minutes(20), "succeeded")
    r = verify(world, incident_start=NOW - minutes(60))
    assert r.re_exported == [delivered] and r.tenants_to_notify == ["wonka"]
    (finding,) = [f for f in r.findings if f.code == TENANTS_TO_NOTIFY]
    assert finding.evidence["re_exported"] == [delivered]


def test_a_sample_of_the_affected_jobs_is_rechecked_and_every_swept_tenant_notified(world):
    """The runbook re-checks affected jobs: a fixed sample (the first given), its size said;
    the tenants to notify are every tenant the impact sweep found damaged, sampled or not."""
    history(world)
    world.many(WINDOW_START + minutes(1), 30)
    affected = [f"job-gone-{n:02d}" for n in range(30)]
    sweep = ImpactSweep(True, "test", affected_jobs=affected, affected_tenants=["hooli", "wayne"])
    r = verify(world, affected_jobs=[*affected, affected[0]], impact=sweep)
    assert (r.rechecked, r.affected) == (RECHECK_SAMPLE, 30)
    assert r.checksums is not None
    assert [j.job_id for j in r.checksums.jobs] == affected[:RECHECK_SAMPLE]
    assert r.tenants_to_notify == ["hooli", "wayne"]
    (notify,) = [f for f in r.findings if f.code == TENANTS_TO_NOTIFY]
    assert "damaged deliveries" in notify.summary
    assert sample_text(r) == f"a sample of {RECHECK_SAMPLE} of 30 affected jobs re-checked"
    small = verify(world, affected_jobs=affected[:3], sample=5)
    assert (small.rechecked, small.affected) == (3, 3)
    assert sample_text(small) == "all 3 affected job(s) re-checked"
    with pytest.raises(InvalidInput, match="sample"):
        verify(world, affected_jobs=affected, sample=0)


def test_times_in_any_zone_and_bad_parameters(world):
    history(world)
    world.many(WINDOW_START + minutes(1), 30)
    base = baseline(world.platform, WINDOW_START, NOW)
    local = verify_recovery(
        world.platform, now=NOW.astimezone(timezone(timedelta(hours=-7))), baseline=base
    )
    assert local.verdict == "recovered" and local.now == NOW and local.now.tzinfo is UTC
    with pytest.raises(InvalidInput, match="timezone-aware"):
        verify_recovery(world.platform, now=datetime(2024, 6, 11, 14), baseline=base)
    with pytest.raises(InvalidInput, match="tolerance"):
        verify_recovery(world.platform, now=NOW, baseline=base, tolerance=5)


# Against the real sandbox ------------------------------------------------------------------
def test_checksums_and_a_re_export_in_the_real_sandbox(sandbox):
    injected = sandbox.run(
        *exportnb_cmd("sandbox", "fault", "inject", "--json", "corrupt", "--tenant", "wonka"),
        check=True,
    )
    fault = json.loads(injected.stdout)["id"]
    time.sleep(0.6)  # the daemon re-reads faults every 0.25s
    platform = sandbox.platform()
    try:
        submit = ("submit", "--json", "--tenant", "wonka", "--size", "40MB", "--chunk-size", "16MB")
        out = sandbox.run(*exportnb_cmd("sandbox", *submit), check=True)
        (job_id,) = json.loads(out.stdout)
        wait_for(lambda: platform.get_job(job_id).job.status == "succeeded", 60)
        start = datetime.now(UTC) - minutes(1)
        now = datetime.now(UTC)
        base = baseline(platform, now - minutes(15), now)
        r = verify_recovery(
            platform, now=now, baseline=base, affected_jobs=[job_id], incident_start=start
        )
        assert r.checksums is not None and r.checksums.failed_job_ids == [job_id]
        assert r.tenants_to_notify == ["wonka"] and CHECKSUMS_UNVERIFIED in codes(r)
        (unverified,) = [f for f in r.findings if f.code == CHECKSUMS_UNVERIFIED]
        assert "(all 1 affected job(s) re-checked)" in unverified.summary

        platform.retry(job_ids=[job_id], concurrency=1, actor="test-operator")  # re-export
        wait_for(lambda: platform.get_job(job_id).job.attempts == 2, 30)
        wait_for(lambda: platform.get_job(job_id).job.status == "succeeded", 60)
        now = datetime.now(UTC)
        r = verify_recovery(
            platform, now=now, baseline=base, affected_jobs=[job_id], incident_start=start
        )
        assert r.checksums is not None and r.checksums.failed_job_ids == []
        assert r.re_exported == [job_id] and r.tenants_to_notify == ["wonka"]
        assert CHECKSUMS_UNVERIFIED not in codes(r) and TENANTS_TO_NOTIFY in codes(r)
        json.dumps(codec.encode(r), allow_nan=False)
    finally:
        sandbox.run(*exportnb_cmd("sandbox", "fault", "clear", str(fault)), check=True)
