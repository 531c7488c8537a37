"""Job state on constructed stores: the latest failures, categories, samples, concentration."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from constructed import MB, NOW, PRIMARY, SECONDARY, make_world, minutes

from exportnb.core import codec
from exportnb.core.config import Settings
from exportnb.core.errors import InvalidInput
from exportnb.core.findings import CHUNK_TIMEOUTS, FAILURES_CONCENTRATED
from exportnb.incident.model import AssessmentContext
from exportnb.incident.steps.jobstate import job_state
from exportnb.mitigation.assessment import assess

SINCE = NOW - minutes(30)


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    yield w
    w.platform.close()


def by_dimension(state) -> dict[str, dict]:
    concentrated = [f for f in state.findings if f.code == FAILURES_CONCENTRATED]
    return {f.evidence["dimension"]: f.evidence for f in concentrated}


def test_no_failed_jobs_is_an_empty_result(world):
    world.many(NOW - minutes(5), 10)
    state = job_state(world.platform, since=SINCE, until=NOW)
    assert state.total_failed == 0 and state.latest == [] and state.categories == []
    assert state.by_error == {} and state.samples == [] and state.findings == []
    assert state.failing_buckets == [] and state.failing_job_ids == []
    frame = state.frame()
    assert frame.empty and list(frame.columns) == [
        "connector",
        "bucket",
        "error_code",
        "count",
        "first_seen",
        "last_seen",
        "tenants",
    ]
    json.dumps(codec.encode(state), allow_nan=False)


def test_throttling_concentrated_on_one_bucket(world):
    slow = world.many(
        NOW - minutes(10),
        8,
        "failed",
        error_code="SlowDown",
        logs=3,
        error_message="503 SlowDown: Please reduce your request rate.",
    )
    newest = world.job(
        NOW - minutes(9),
        "failed",
        tenant="globex",
        error_code="SlowDown",
        logs=3,
        error_message="503 SlowDown",
    )
    other = world.job(
        NOW - minutes(4),
        "failed",
        bucket=SECONDARY,
        connector="gcs",
        error_code="AccessDenied",
        logs=2,
        tenant="hooli",
    )
    world.many(NOW - minutes(4), 20, bucket=SECONDARY)  # succeeded: not in the job state
    state = job_state(world.platform, since=SINCE, until=NOW, limit=5, sample_logs=2)
    assert state.total_failed == 10 and len(state.latest) == 5
    assert state.latest[0].id == other  # the newest failure first
    assert state.by_error == {"SlowDown": 9, "AccessDenied": 1}
    assert state.by_bucket == {PRIMARY: 9, SECONDARY: 1} and state.failing_buckets[0] == PRIMARY
    assert state.by_connector == {"s3": 9, "gcs": 1}
    top = state.categories[0]
    assert (top.connector, top.bucket, top.error_code, top.count) == ("s3", PRIMARY, "SlowDown", 9)
    assert top.tenants == ["acme", "globex"]
    assert top.first_seen == NOW - minutes(10) and top.last_seen == NOW - minutes(9)
    found = by_dimension(state)
    assert set(found) == {"error_code", "bucket"}  # every job, failed or not, went through s3
    assert found["bucket"]["traffic_share"] == pytest.approx(9 / 30)
    assert found["bucket"]["p_value"] < 0.01
    evidence = found["error_code"]
    assert (evidence["value"], evidence["count"], evidence["share"]) == ("SlowDown", 9, 0.9)
    assert evidence["buckets"] == [PRIMARY] and evidence["chunk_sizes"] == [64 * MB]
    # the samples cover both error codes, the most frequent first, with their logs
    assert [s.error_code for s in state.samples] == ["SlowDown", "AccessDenied"]
    assert state.samples[0].job_id == newest and len(state.samples[0].logs) == 3
    assert newest not in slow
    assert "SlowDown" in state.samples[0].logs[0].message
    assert state.frame().iloc[0]["count"] == 9


def test_timeouts_only_on_large_chunks_show_in_the_evidence(world):
    for size in (256 * MB, 256 * MB, 128 * MB, 256 * MB, 128 * MB, 256 * MB):
        world.job(
            NOW - minutes(3),
            "failed",
            connector="snowflake",
            chunk_size=size,
            error_code="RequestTimeout",
        )
    world.many(NOW - minutes(3), 5, chunk_size=32 * MB)
    state = job_state(world.platform, since=SINCE, until=NOW)
    evidence = by_dimension(state)["error_code"]
    assert evidence["value"] == "RequestTimeout" and evidence["share"] == 1.0
    assert evidence["chunk_sizes"] == [128 * MB, 256 * MB]
    assert evidence["chunk_size_counts"] == {str(128 * MB): 2, str(256 * MB): 4}
    assert evidence["connectors"] == ["snowflake"]
    (timeouts,) = [f for f in state.findings if f.code == CHUNK_TIMEOUTS]
    assert timeouts.evidence["threshold"] == 128 * MB and timeouts.evidence["share_below"] == 0
    assert len(timeouts.evidence["job_ids"]) == 6


def test_timeouts_on_every_chunk_size_are_not_blamed_on_chunks(world):
    for size in (256 * MB, 32 * MB, 64 * MB, 256 * MB, 32 * MB, 128 * MB):
        world.job(NOW - minutes(3), "failed", chunk_size=size, error_code="RequestTimeout")
    world.many(NOW - minutes(3), 5, chunk_size=32 * MB)
    state = job_state(world.platform, since=SINCE, until=NOW)
    assert CHUNK_TIMEOUTS not in [f.code for f in state.findings]


def test_scattered_or_few_failures_are_not_concentrated(world):
    for code, bucket, connector in (
        ("SlowDown", PRIMARY, "s3"),
        ("AccessDenied", SECONDARY, "gcs"),
        ("InternalError", PRIMARY, "sftp"),
    ):
        world.many(
            NOW - minutes(5), 3, "failed", error_code=code, bucket=bucket, connector=connector
        )
    state = job_state(world.platform, since=SINCE, until=NOW)
    assert state.total_failed == 9 and state.findings == []
    assert job_state(world.platform, since=SINCE, until=NOW, concentration=0.3).findings == []


def test_a_bucket_is_concentrated_only_beyond_its_share_of_the_traffic(world):
    world.many(NOW - minutes(5), 16, "failed", error_code="InternalError")  # primary
    world.many(NOW - minutes(5), 2, "failed", error_code="AccessDenied", bucket=SECONDARY)
    world.many(NOW - minutes(5), 40)  # the primary takes most of the traffic
    world.many(NOW - minutes(5), 10, bucket=SECONDARY)
    state = job_state(world.platform, since=SINCE, until=NOW)
    assert state.by_bucket == {PRIMARY: 16, SECONDARY: 2}
    assert "bucket" not in by_dimension(state)  # 89% of the failures, 82% of the traffic
    world.many(NOW - minutes(4), 60, bucket=SECONDARY)  # now the primary has 56 of 128 jobs
    found = by_dimension(job_state(world.platform, since=SINCE, until=NOW))
    assert found["bucket"]["value"] == PRIMARY
    assert found["bucket"]["traffic_share"] == pytest.approx(56 / 128)
    assert job_state(world.platform, since=SINCE, until=NOW, min_failures=17).findings == []


def test_the_window_is_when_the_jobs_failed(world):
    world.job(SINCE - minutes(5), "failed")  # failed before the window
    late = world.job(NOW - minutes(1), "failed", duration=40 * 60)  # created before `since`
    world.job(NOW + minutes(5), "failed")  # after `until`
    state = job_state(world.platform, since=SINCE, until=NOW)
    assert state.failing_job_ids == [late]
    assert job_state(world.platform, since=SINCE, until=NOW, lookback_minutes=0).total_failed == 0


def test_a_retried_job_is_counted_where_it_failed_last(world):
    job_id = world.job(SINCE - minutes(120), "failed", error_code="SlowDown")
    world.platform.retry(job_ids=[job_id], concurrency=1, actor="test")
    world.attempt(job_id, NOW - minutes(2), "failed", error_code="RequestTimeout")
    state = job_state(world.platform, since=SINCE, until=NOW, lookback_minutes=180)
    assert state.by_error == {"RequestTimeout": 1} and state.latest[0].attempts == 2


def test_scan_limit_truncates(world):
    world.many(NOW - minutes(2), 6, "failed")
    state = job_state(world.platform, since=SINCE, until=NOW, scan_limit=4)
    assert state.truncated and state.total_failed == 4
    assert not job_state(world.platform, since=SINCE, until=NOW).truncated


def test_times_in_any_zone(world):
    world.many(NOW - minutes(2), 2, "failed")
    tokyo = timezone(timedelta(hours=9))
    state = job_state(world.platform, since=SINCE.astimezone(tokyo), until=NOW.astimezone(tokyo))
    assert state.total_failed == 2 and state.since.tzinfo is UTC
    with pytest.raises(InvalidInput, match="timezone-aware"):
        job_state(world.platform, since=datetime(2024, 6, 11), until=NOW)
    with pytest.raises(InvalidInput, match="limit"):
        job_state(world.platform, since=SINCE, until=NOW, limit=0)


# What each chunk size did: the evidence a safe chunk size is chosen from -------------------
MIB = 2**20


def _timeouts_and_successes(world, *, succeeded_chunk: int | None) -> list[str]:
    """Uploads of 32MiB and 64MiB chunks time out on the primary; jobs smaller than their
    chunk size succeed (they never sent a full chunk); ``succeeded_chunk`` jobs succeed."""
    timed_out = [
        world.job(
            NOW - minutes(5 + n % 3),
            "failed",
            chunk_size=size,
            size=300 * MB,
            error_code="RequestTimeout",
            error_message="400 RequestTimeout",
        )
        for n, size in enumerate([32 * MIB] * 4 + [64 * MIB] * 3)
    ]
    world.many(NOW - minutes(4), 6, chunk_size=32 * MIB, size=20 * MB)  # a 20MB request
    world.many(NOW - minutes(4), 2, chunk_size=64 * MIB, size=80 * MB, bucket=SECONDARY)
    if succeeded_chunk:
        world.many(NOW - minutes(3), 9, chunk_size=succeeded_chunk, size=300 * MB)
    return timed_out


def test_timeout_findings_carry_what_each_chunk_size_did_per_bucket(world):
    timed_out = _timeouts_and_successes(world, succeeded_chunk=16 * MIB)
    state = job_state(world.platform, since=SINCE, until=NOW)
    evidence = by_dimension(state)["error_code"]
    (outcome,) = evidence["chunk_outcomes"]
    assert outcome == {
        "bucket": PRIMARY,
        "timed_out": {str(32 * MIB): 4, str(64 * MIB): 3},
        "succeeded": {str(16 * MIB): 9},  # not the 20MB exports with 32MiB chunks
        "job_ids": [j.id for j in state.latest if j.id in timed_out],
    }
    assert evidence["window"] == {"since": "2024-06-11T14:00:30Z", "until": "2024-06-11T14:30:30Z"}
    (chunks,) = [f for f in state.findings if f.code == CHUNK_TIMEOUTS]
    assert chunks.evidence["chunk_outcomes"] == evidence["chunk_outcomes"]
    assert "chunk_outcomes" not in by_dimension(state).get("bucket", {})


def test_the_assessment_of_that_job_state_recommends_the_size_that_succeeded(world):
    timed_out = _timeouts_and_successes(world, succeeded_chunk=16 * MIB)
    state = job_state(world.platform, since=SINCE, until=NOW)
    context = AssessmentContext(export_bucket=PRIMARY, fallback_bucket=None)
    result = assess(state, context=context, settings=Settings())
    (change,) = result.of_action("chunk-size")
    assert change.params["chunk_size"] == 16 * MIB  # not the runbook's 50MB: 32MiB timed out
    assert sorted(change.params["job_ids"]) == sorted(timed_out)
    assert "uploads of 32MiB (4 jobs), 64MiB (3 jobs) timed out" in change.reason
    assert "was 16MiB (9 jobs)" in change.reason


def test_when_every_chunk_size_times_out_no_size_is_recommended(world):
    _timeouts_and_successes(world, succeeded_chunk=None)
    state = job_state(world.platform, since=SINCE, until=NOW)
    (outcome,) = by_dimension(state)["error_code"]["chunk_outcomes"]
    assert outcome["succeeded"] == {}
    context = AssessmentContext(export_bucket=PRIMARY, fallback_bucket=None)
    result = assess(state, context=context, settings=Settings())
    assert "chunk-size" not in result.actions
    (investigate,) = result.of_action("investigate")
    assert f"No safe chunk size is known for {PRIMARY}" in investigate.reason
    assert all("--chunk-size" not in r.command for r in result.recommendations)
