"""Detection on constructed stores, and against the real sandbox with a throttled bucket."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from conftest import exportnb_cmd, wait_for
from constructed import NOW, make_world, minutes

from exportnb.core import codec
from exportnb.core.errors import InvalidInput
from exportnb.core.findings import (
    FAILURE_RATE_HIGH,
    FAILURES_CONCENTRATED,
    LATENCY_HIGH,
    REPORTED_JOBS_UNKNOWN,
    STUCK_JOBS,
)
from exportnb.incident.steps.detection import detect
from exportnb.incident.steps.jobstate import job_state


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    yield w
    w.platform.close()


def codes(result) -> list[str]:
    return [f.code for f in result.findings]


def encodes(result) -> None:
    json.dumps(codec.encode(result), allow_nan=False)


def test_no_jobs_in_the_window(world):
    d = detect(world.platform, now=NOW, history_minutes=30)
    assert d.failure_rate is None and not d.breached and d.insufficient_data
    assert len(d.rolling) == 30 and d.rolling[-1].minute == NOW.replace(second=0)
    assert d.latency.count == 0 and d.latency.p95 is None and not d.latency_breached
    assert d.stuck == [] and d.reported == [] and d.findings == []
    assert d.rates_frame()["total"].sum() == 0 and d.latency_frame()["p95"].isna().all()
    encodes(d)


def test_all_jobs_failed_is_critical_with_its_evidence(world):
    world.many(NOW - minutes(3), 12, "failed", error_code="SlowDown")
    d = detect(world.platform, now=NOW)
    assert d.breached and d.failure_rate == 1.0 and (d.attempts, d.failed) == (12, 12)
    (finding,) = d.findings
    assert finding.code == FAILURE_RATE_HIGH and finding.severity == "critical"
    assert finding.step == "detection"
    assert {k: finding.evidence[k] for k in ("rate", "threshold", "attempts", "failed")} == {
        "rate": 1.0,
        "threshold": 0.02,
        "attempts": 12,
        "failed": 12,
    }
    encodes(d)


def test_a_few_attempts_are_insufficient_data(world):
    world.many(NOW - minutes(2), 3, "failed")
    world.job(NOW - minutes(2))
    d = detect(world.platform, now=NOW)
    assert d.failure_rate == 0.75 and d.insufficient_data and not d.breached
    assert FAILURE_RATE_HIGH not in codes(d)
    assert detect(world.platform, now=NOW, min_attempts=4).breached


def test_the_threshold_is_a_parameter_and_strictly_exceeded(world):
    world.many(NOW - minutes(1), 49)
    world.job(NOW - minutes(1), "failed")
    assert detect(world.platform, now=NOW).failure_rate == pytest.approx(0.02)
    assert not detect(world.platform, now=NOW).breached  # 2% is not above 2%
    assert detect(world.platform, now=NOW, threshold=0.01).breached


def test_rolling_rate_shows_an_earlier_breach_that_is_over(world):
    world.many(NOW - minutes(40), 10, "failed")
    world.many(NOW - minutes(5), 20)
    d = detect(world.platform, now=NOW, history_minutes=60)
    assert not d.breached and d.failure_rate == 0.0
    by_minute = {p.minute: p for p in d.rolling}
    failing = by_minute[(NOW - minutes(40)).replace(second=0)]
    assert failing.failed == 10 and failing.rolling_failure_rate == 1.0
    after = by_minute[(NOW - minutes(31)).replace(second=0)]  # 9 minutes later: still inside
    assert after.total == 0 and after.window_failed == 10
    gone = by_minute[(NOW - minutes(30)).replace(second=0)]  # the failures left the window
    assert gone.rolling_failure_rate is None
    frame = d.rates_frame()
    assert frame["rolling_failure_rate"].max() == 1.0 and frame["failed"].sum() == 10


def test_cancelled_attempts_are_not_failures(world):
    world.many(NOW - minutes(1), 10, "cancelled")
    world.many(NOW - minutes(1), 10)
    d = detect(world.platform, now=NOW)
    assert d.failure_rate == 0.0 and d.attempts == 10


def test_latency_above_twice_the_slo(world):
    world.many(NOW - minutes(2), 10, duration=30.0)
    world.many(NOW - minutes(1), 2, duration=400.0)
    d = detect(world.platform, now=NOW, latency_slo=60.0)
    assert d.latency.count == 12 and d.latency.p50 == pytest.approx(30.0)
    assert d.latency.p95 == pytest.approx(400.0) and d.latency_limit == 120.0
    (finding,) = [f for f in d.findings if f.code == LATENCY_HIGH]
    assert finding.evidence["p95"] == pytest.approx(400.0) and finding.evidence["limit"] == 120.0
    frame = d.latency_frame()
    assert frame.loc[(NOW - minutes(1)).replace(second=0), "p99"] == pytest.approx(400.0)
    assert not detect(world.platform, now=NOW, latency_slo=300.0).latency_breached


def test_stuck_jobs_by_runtime_and_by_stale_heartbeat(world):
    long_running = world.running(NOW - minutes(25), heartbeat=NOW - timedelta(seconds=5))
    silent = world.running(NOW - minutes(3), heartbeat=NOW - minutes(2))
    world.running(NOW - minutes(1), heartbeat=NOW - timedelta(seconds=2))  # healthy
    d = detect(world.platform, now=NOW, running_sla=1200, stale_heartbeat=30)
    assert [(s.job.id, s.reason) for s in d.stuck] == [
        (silent, "stale_heartbeat"),
        (long_running, "running_sla"),
    ]
    assert d.stuck[0].age_seconds == pytest.approx(120.0)
    assert d.stuck[1].age_seconds == pytest.approx(1500.0)
    (finding,) = [f for f in d.findings if f.code == STUCK_JOBS]
    assert finding.evidence["job_ids"] == [silent, long_running]
    assert finding.evidence["reasons"][silent] == "stale_heartbeat"
    assert [s.job.id for s in detect(world.platform, now=NOW, stale_heartbeat=600).stuck] == [
        long_running
    ]


def test_reported_job_ids_found_or_not_never_an_error(world):
    known = world.job(NOW - minutes(30), "failed", error_code="ChecksumMismatch", tenant="wonka")
    d = detect(
        world.platform, now=NOW, reported_jobs=[known, "job-doesnotexist", " ", known, "../etc"]
    )
    assert [(r.job_id, r.found) for r in d.reported] == [
        (known, True),
        ("job-doesnotexist", False),
        ("../etc", False),
    ]
    assert (d.reported[0].tenant, d.reported[0].status) == ("wonka", "failed")
    (finding,) = [f for f in d.findings if f.code == REPORTED_JOBS_UNKNOWN]
    assert finding.evidence["job_ids"] == ["job-doesnotexist", "../etc"]
    assert d.unknown_reported == ["job-doesnotexist", "../etc"]


def test_times_in_any_zone_give_the_same_detection(world):
    world.many(NOW - minutes(3), 12, "failed")
    local = detect(world.platform, now=NOW.astimezone(timezone(timedelta(hours=9))))
    assert local.now == NOW and local.now.tzinfo is UTC and local.breached
    assert local.rolling == detect(world.platform, now=NOW).rolling
    with pytest.raises(InvalidInput, match="timezone-aware"):
        detect(world.platform, now=datetime(2024, 6, 11, 14, 30))
    with pytest.raises(InvalidInput, match="threshold"):
        detect(world.platform, now=NOW, threshold=2)
    with pytest.raises(InvalidInput, match="window_minutes"):
        detect(world.platform, now=NOW, window_minutes=0)


# Against the real sandbox ------------------------------------------------------------------
def submit(sandbox, *args: str) -> list[str]:
    out = sandbox.run(*exportnb_cmd("sandbox", "submit", "--json", *args), check=True).stdout
    return json.loads(out)


def test_a_throttled_bucket_in_the_real_sandbox_is_detected_and_categorized(sandbox):
    bucket = sandbox.env["EXPORT_BUCKET"]
    injected = sandbox.run(
        *exportnb_cmd("sandbox", "fault", "inject", "--json", "throttle", "--bucket", bucket),
        check=True,
    )
    fault = json.loads(injected.stdout)["id"]
    time.sleep(0.6)  # the daemon re-reads faults every 0.25s
    start = datetime.now(UTC)
    try:
        ids = submit(sandbox, "--count", "12", "--size", "5MB", "--chunk-size", "32MB")
        elsewhere = submit(sandbox, "--count", "10", "--size", "5MB", "--bucket", "exports-eu")
        platform = sandbox.platform()
        wait_for(lambda: all(platform.get_job(j).job.status == "failed" for j in ids), timeout=60)
        wait_for(lambda: all(platform.get_job(j).job.status == "succeeded" for j in elsewhere))
        now = datetime.now(UTC)
        d = detect(platform, now=now, reported_jobs=[ids[0], "job-000000000000"])
        assert d.breached and d.failed >= 12 and d.failure_rate > 0.3
        assert FAILURE_RATE_HIGH in codes(d) and REPORTED_JOBS_UNKNOWN in codes(d)
        assert d.reported[0].found and d.reported[0].error_code == "SlowDown"

        state = job_state(platform, since=start - timedelta(seconds=1), until=now)
        assert set(ids) <= set(state.failing_job_ids) and state.failing_buckets[0] == bucket
        assert state.by_error["SlowDown"] >= 12 and not state.truncated
        by_dimension = {f.evidence["dimension"]: f for f in state.findings}
        assert {"error_code", "bucket"} <= set(by_dimension)  # exports-eu kept succeeding
        assert by_dimension["bucket"].evidence["value"] == bucket
        assert all(f.code == FAILURES_CONCENTRATED for f in state.findings)
        slowdown = by_dimension["error_code"].evidence
        assert slowdown["value"] == "SlowDown" and slowdown["buckets"] == [bucket]
        assert slowdown["share"] >= 0.6 and slowdown["count"] >= 12
        assert state.samples and state.samples[0].error_code == "SlowDown"
        assert any("SlowDown" in line.message for line in state.samples[0].logs)
        encodes(d)
        encodes(state)
        assert math.isclose(d.threshold, 0.02)
    finally:
        sandbox.run(*exportnb_cmd("sandbox", "fault", "clear", str(fault)), check=True)
