"""Assessment rules on constructed findings and results: each rule, ordering, de-duplication,
a missing or unhealthy fallback bucket, a world whose buckets and tenants have other names,
and every recommended value chosen from the evidence (chunk size, retry batch and
concurrency, fallback TTL, the hop where the loss starts), never from the runbook's examples
where they do not fit."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from exportnb.core import codec
from exportnb.core.config import Settings
from exportnb.core.errors import InvalidInput
from exportnb.core.findings import (
    CHECKSUM_MISMATCH,
    CHUNK_TIMEOUTS,
    FAILURE_RATE_HIGH,
    FAILURES_CONCENTRATED,
    LATENCY_HIGH,
    MISSING_SEGMENTS,
    NETWORK_LATENCY,
    NETWORK_LOSS,
    NETWORK_UNREACHABLE,
    PERMISSION_DENIED,
    REPORTED_JOBS_UNKNOWN,
    STUCK_JOBS,
    THROTTLING,
    Finding,
)
from exportnb.core.quantities import parse_ttl
from exportnb.incident.model import AssessmentContext
from exportnb.incident.steps.detection import Detection
from exportnb.incident.steps.jobstate import JobState
from exportnb.incident.steps.storagehealth import BucketCheck, StorageHealth
from exportnb.mitigation import assessment as assessment_module
from exportnb.mitigation.assessment import Assessment
from exportnb.platform.model import LatencyPercentiles

MB = 1_000_000
MIB = 2**20
CONTEXT = AssessmentContext(export_bucket="exports-primary", fallback_bucket="exports-fallback")
SETTINGS = Settings(max_retry_concurrency=6, max_flag_ttl=24 * 3600)
NOW = datetime(2024, 6, 11, 14, 30, tzinfo=UTC)


def assess(*results, context=CONTEXT, settings=SETTINGS):
    """The assessment with fixed limits (never this machine's config.toml)."""
    return assessment_module.assess(*results, context=context, settings=settings)


@dataclass(frozen=True)
class Result:
    """Any step's result: only its findings matter to the assessment."""

    findings: list[Finding] = field(default_factory=list)


def checked(ok: tuple[str, ...] = ("exports-primary", "exports-fallback"), **bad: str):
    """Storage health: HeadBucket 200 on ``ok``; ``bad`` maps a bucket to its verdict."""
    answers = {
        "throttled": (503, "SlowDown"),
        "missing": (404, "NoSuchBucket"),
        "permission": (403, "AccessDenied"),
    }
    checks = [BucketCheck(b, True, 200, None, "us-east-1", 4.2, "ok", "OK") for b in ok]
    for bucket, verdict in bad.items():
        status, code = answers[verdict]
        checks.append(BucketCheck(bucket, False, status, code, None, 9.0, verdict, code))
    return StorageHealth(checks, [])


def failed_jobs(count: int, minutes: float = 30, *, capped: bool = False) -> JobState:
    """A job state that counted ``count`` failed jobs over the last ``minutes``."""
    return JobState(
        since=NOW - timedelta(minutes=minutes),
        until=NOW,
        latest=[],
        total_failed=count,
        truncated=capped,
        categories=[],
        by_connector={},
        by_bucket={},
        by_error={},
        samples=[],
    )


def attempts(p50: float) -> Detection:
    """A detection whose window's attempts took ``p50`` seconds (median)."""
    latency = LatencyPercentiles(NOW - timedelta(minutes=10), NOW, 500, p50, p50 * 2, p50 * 3)
    return Detection(NOW, 10, 0.02, 0.2, [], True, latency, 120.0, [], [], [])


def throttling(*buckets: str, region: str = "us-east-1") -> Finding:
    return Finding(
        THROTTLING,
        "critical",
        f"S3 is throttling {', '.join(buckets)} in {region} (SlowDown)",
        "storage_health",
        {"buckets": list(buckets), "codes": ["SlowDown"], "regions": [region], "statuses": [503]},
    )


def concentrated(
    value: str,
    *,
    job_ids: list[str],
    chunk_sizes: list[int],
    buckets: list[str],
    tenants: list[str] = (),
    outcomes: list[dict] | None = None,
) -> Finding:
    evidence = {
        "dimension": "error_code",
        "value": value,
        "share": 0.9,
        "count": len(job_ids),
        "buckets": buckets,
        "chunk_sizes": chunk_sizes,
        "error_codes": [value],
        "tenants": list(tenants),
        "job_ids": job_ids,
    }
    if outcomes is not None:
        window = {"since": "2024-06-11T14:00:00Z", "until": "2024-06-11T14:30:00Z"}
        evidence |= {"chunk_outcomes": outcomes, "window": window}
    return Finding(
        FAILURES_CONCENTRATED,
        "warning",
        f"90% of failed jobs ({len(job_ids)} of {len(job_ids)}) share error code {value}",
        "job_state",
        evidence,
    )


def outcome(bucket: str, timed_out: dict[int, int], succeeded: dict[int, int], job_ids: list[str]):
    """One bucket's ``chunk_outcomes`` entry, as the job-state step writes it."""
    return {
        "bucket": bucket,
        "timed_out": {str(k): v for k, v in timed_out.items()},
        "succeeded": {str(k): v for k, v in succeeded.items()},
        "job_ids": job_ids,
    }


def timeouts(outcomes: list[dict]) -> Finding:
    """Failures concentrated on RequestTimeout, with what each chunk size did per bucket."""
    job_ids = [j for o in outcomes for j in o["job_ids"]]
    sizes = sorted({int(s) for o in outcomes for s in o["timed_out"]})
    buckets = [o["bucket"] for o in outcomes]
    return concentrated(
        "RequestTimeout", job_ids=job_ids, chunk_sizes=sizes, buckets=buckets, outcomes=outcomes
    )


def failure_rate(rate: float = 0.12) -> Finding:
    return Finding(
        FAILURE_RATE_HIGH,
        "critical",
        f"Failure rate {rate:.1%} is above the 2.0% threshold",
        "detection",
        {"rate": rate, "threshold": 0.02},
    )


def latency_high() -> Finding:
    return Finding(
        LATENCY_HIGH,
        "warning",
        "p95 export latency 190s is above 2× the SLO",
        "detection",
        {"p95": 190.0, "limit": 120.0},
    )


def stuck(reasons: dict[str, str]) -> Finding:
    return Finding(
        STUCK_JOBS,
        "warning",
        f"{len(reasons)} job(s) stuck in running",
        "detection",
        {"job_ids": list(reasons), "reasons": reasons, "ages": dict.fromkeys(reasons, 99.0)},
    )


def bad_segments(code: str, job_ids: list[str], tenants: list[str], bucket: str) -> Finding:
    keys = [f"exports/{t}/{j}/part-00001.bin" for j, t in zip(job_ids, tenants, strict=True)]
    return Finding(
        code,
        "critical",
        f"{len(keys)} segment(s) of {len(job_ids)} job(s) are bad",
        "checksums",
        {
            "job_ids": job_ids,
            "tenants": tenants,
            "keys": keys,
            "buckets": [bucket],
            "files": [f"s3://{bucket}/{k}" for k in keys],
        },
    )


def network(code: str, host: str, hops: list[tuple[str, float]] | None = None) -> Finding:
    """A network finding; ``hops`` as (host, loss %) from the first hop to the destination."""
    evidence = {"host": host, "loss_pct": 30.0, "p95_ms": 151.0, "threshold_pct": 1.0}
    if hops is not None:
        evidence["hops"] = [
            {"index": i, "host": h, "loss_pct": loss, "p95_ms": 10.0}
            for i, (h, loss) in enumerate(hops, start=1)
        ]
    return Finding(code, "critical", f"30% packet loss to {host}", "network_path", evidence)


# Throttling, the fallback bucket and its TTL -------------------------------------------------
def test_throttling_redirects_to_a_healthy_fallback_and_retries_at_the_safe_concurrency():
    result = assess(Result([throttling("exports-primary")]), checked(), failed_jobs(12))
    fallback, retry = result.recommendations
    assert fallback.action == "fallback-bucket"
    assert fallback.params == {"bucket": "exports-fallback", "ttl": "30m"}  # 30 minutes so far
    assert fallback.command == "featurectl set export.fallback_bucket exports-fallback --ttl 30m"
    assert "exports-primary" in fallback.reason and "SlowDown" in fallback.reason
    assert "HeadBucket on exports-fallback answered 200" in fallback.reason
    assert fallback.evidence["fallback_check"]["verdict"] == "ok"
    assert retry.action == "retry"
    assert retry.params == {"status": "failed", "limit": 12, "concurrency": 1}
    assert retry.command == "exportctl retry --status failed --limit 12 --concurrency 1"
    assert "us-east-1" in retry.reason and "12 job(s) failed" in retry.reason
    assert "remain" not in retry.reason
    assert retry.evidence["concurrency"] == {"value": 1, "basis": "throttled", "max": 6}
    assert fallback.finding_codes == retry.finding_codes == [THROTTLING]
    assert fallback.priority < retry.priority


def test_45_failed_jobs_are_retried_in_batches_of_20():
    result = assess(throttling("exports-primary"), checked(), failed_jobs(45))
    (retry,) = result.of_action("retry")
    assert retry.params == {"status": "failed", "limit": 20, "concurrency": 1}
    assert retry.command == "exportctl retry --status failed --limit 20 --concurrency 1"
    assert "45 job(s) failed" in retry.reason and "25 remain" in retry.reason
    assert retry.evidence["retry_batch"] | {"window": None} == {
        "failed_jobs": 45,
        "at_least": False,
        "batch": 20,
        "remaining": 25,
        "window": None,
    }


def test_a_capped_job_state_says_at_least():
    (retry,) = assess(throttling("b"), failed_jobs(5000, capped=True)).of_action("retry")
    assert "at least 5000 job(s) failed" in retry.reason and "at least 4980 remain" in retry.reason


def test_without_a_job_state_the_batch_is_the_runbooks_and_says_so():
    (retry,) = assess(throttling("exports-primary"), checked()).of_action("retry")
    assert retry.params["limit"] == 20
    assert "how many jobs failed is not known" in retry.reason


def test_no_failed_jobs_no_status_retry():
    result = assess(throttling("exports-primary"), checked(), failed_jobs(0))
    assert result.actions == ["fallback-bucket"]


@pytest.mark.parametrize("verdict", ["throttled", "missing", "permission"])
def test_an_unhealthy_fallback_bucket_is_not_recommended(verdict):
    health = checked(("exports-primary",), **{"exports-fallback": verdict})
    result = assess(throttling("exports-primary"), health, failed_jobs(8))
    assert result.actions == ["retry"]
    reason = result.recommendations[0].reason
    assert "The fallback bucket exports-fallback is not healthy: HeadBucket answered" in reason
    assert verdict in reason


def test_an_unchecked_fallback_bucket_is_not_recommended():
    for health in (None, checked(("exports-primary",))):
        result = assess(throttling("exports-primary"), health, failed_jobs(8))
        assert result.actions == ["retry"]
        reason = result.recommendations[0].reason
        assert "exports-fallback was not checked with HeadBucket" in reason


def test_the_ttl_is_the_time_to_retry_the_backlog_when_that_is_longer():
    # 40 minutes so far; 45 failed jobs, 1 at a time, 60s each: 45 minutes to retry them
    result = assess(throttling("exports-primary"), checked(), failed_jobs(45, 40), attempts(60))
    (fallback,) = result.of_action("fallback-bucket")
    assert fallback.params["ttl"] == "45m"
    assert "the incident has lasted 40m so far" in fallback.reason
    assert "45 round(s) x the p50 attempt duration of 60s = 45m" in fallback.reason
    ttl = fallback.evidence["ttl"]
    assert (ttl["elapsed_s"], ttl["drain_s"], ttl["seconds"]) == (2400, 2700, 2700)


def test_the_ttl_is_rounded_up_to_a_quarter_hour():
    result = assess(throttling("exports-primary"), checked(), failed_jobs(3, 50), attempts(20))
    (fallback,) = result.of_action("fallback-bucket")
    assert fallback.params["ttl"] == "1h"  # 50 minutes so far, rounded up
    assert "the longer, 50m, rounded up to a quarter hour, is 1h" in fallback.reason


@pytest.mark.parametrize("minutes", [5, 30, 95, 600, 3000])
@pytest.mark.parametrize("maximum", ["20m", "2h", "24h"])
def test_the_ttl_never_exceeds_the_maximum(minutes, maximum):
    settings = Settings(max_flag_ttl=parse_ttl(maximum))
    result = assess(
        throttling("exports-primary"),
        checked(),
        failed_jobs(40, minutes),
        attempts(30),
        settings=settings,
    )
    (fallback,) = result.of_action("fallback-bucket")
    ttl = parse_ttl(fallback.params["ttl"])
    assert 0 < ttl <= settings.max_flag_ttl
    assert ttl >= min(minutes * 60, settings.max_flag_ttl)  # lasts at least as long again
    if ttl == settings.max_flag_ttl and ttl < minutes * 60:
        assert "capped at the maximum" in fallback.reason


def test_without_duration_or_backlog_the_ttl_is_the_runbooks_within_the_maximum():
    (fallback,) = assess(throttling("exports-primary"), checked()).of_action("fallback-bucket")
    assert fallback.params["ttl"] == "30m" and "neither the incident's duration" in fallback.reason
    short = assess(throttling("x"), checked(), settings=Settings(max_flag_ttl=600))
    assert short.of_action("fallback-bucket")[0].params["ttl"] == "10m"


@pytest.mark.parametrize("code", ["SlowDown", "503"])
def test_failures_concentrated_on_slowdown_count_as_throttling(code):
    finding = concentrated(
        code, job_ids=["j1", "j2"], chunk_sizes=[64 * MB], buckets=["exports-primary"]
    )
    result = assess(finding, checked())
    assert result.actions == ["pause-bulk", "fallback-bucket", "retry"]  # load and failures
    assert result.recommendations[1].finding_codes == [FAILURES_CONCENTRATED]


def test_no_fallback_bucket_configured_is_said_instead_of_recommending_one():
    context = AssessmentContext(export_bucket="exports-primary", fallback_bucket=None)
    result = assess(throttling("exports-primary"), checked(), context=context)
    (retry,) = result.recommendations
    assert retry.action == "retry"
    assert "No fallback bucket is configured" in retry.reason


def test_a_throttled_fallback_bucket_is_not_recommended():
    result = assess(throttling("exports-primary", "exports-fallback"), checked())
    assert result.actions == ["retry"]
    assert "exports-fallback is impaired too" in result.recommendations[0].reason


# Retry concurrency ---------------------------------------------------------------------------
def test_safe_concurrency_is_a_parameter():
    context = AssessmentContext("exports-primary", "exports-fallback", safe_concurrency=3)
    result = assess(throttling("exports-primary"), checked(), context=context)
    assert result.of_action("retry")[0].command.endswith("--concurrency 3")


def test_concurrency_follows_the_throttling_evidence():
    jobs = {"j-s1": "stale_heartbeat"}
    calm = assess(stuck(jobs)).of_action("retry")[0]
    assert calm.params["concurrency"] == 6  # nothing throttles: the policy's maximum
    assert "the policy's maximum ([limits] max_retry_concurrency)" in calm.reason
    slow = assess(stuck(jobs), latency_high()).of_action("retry")[0]
    assert slow.params["concurrency"] == 2 and "exports are slow" in slow.reason
    throttled = assess(stuck(jobs), throttling("exports-primary")).of_action("retry")
    assert {r.params["concurrency"] for r in throttled} == {1}
    low_cap = assess(stuck(jobs), settings=Settings(max_retry_concurrency=1))
    assert low_cap.of_action("retry")[0].params["concurrency"] == 1


# Chunk timeouts --------------------------------------------------------------------------------
def test_16mib_succeeds_32mib_times_out_recommends_16mib_not_50mb():
    finding = timeouts(
        [outcome("exports-primary", {32 * MIB: 12, 64 * MIB: 7}, {16 * MIB: 30}, ["j-a", "j-b"])]
    )
    result = assess(finding, checked(), failed_jobs(19))
    assert result.actions == ["chunk-size", "retry"]
    change, retry = result.recommendations
    assert change.params == {"job_ids": ["j-a", "j-b"], "chunk_size": 16 * MIB}
    assert change.params["chunk_size"] <= 16 * MIB and change.params["chunk_size"] != 50 * MB
    assert change.command == (
        "exportctl update --job j-a --chunk-size 16MiB\n"
        "exportctl update --job j-b --chunk-size 16MiB"
    )
    assert "uploads of 32MiB (12 jobs), 64MiB (7 jobs) timed out" in change.reason
    assert "succeeded there below 32MiB was 16MiB (30 jobs)" in change.reason
    assert "the runbook's 50MB is not below 32MiB and is larger than 16MiB" in change.reason
    assert "between 2024-06-11 14:00:00 UTC and 2024-06-11 14:30:00 UTC" in change.reason
    recorded = change.evidence["chunk_sizes"]["exports-primary"]
    assert recorded["smallest_timed_out"] == 32 * MIB and recorded["largest_succeeded"] == 16 * MIB
    assert recorded["largest_succeeded_jobs"] == 30 and recorded["chosen"] == 16 * MIB
    assert recorded["timed_out"] == {str(32 * MIB): 12, str(64 * MIB): 7}
    assert change.evidence["window"]["since"] == "2024-06-11T14:00:00Z"
    assert retry.params == {"job_ids": ["j-a", "j-b"], "concurrency": 6}
    assert retry.command == "exportctl retry --job j-a --job j-b --concurrency 6"


def test_the_runbooks_50mb_where_it_is_below_the_timeouts_and_succeeded_sizes():
    finding = timeouts(
        [outcome("exports-primary", {128 * MIB: 9, 256 * MIB: 4}, {64 * MIB: 40}, ["j-a"])]
    )
    (change,) = assess(finding).of_action("chunk-size")
    assert change.params["chunk_size"] == 50 * MB
    assert "the runbook's 50MB is below 128MiB and no larger than 64MiB" in change.reason


def test_successes_at_or_above_the_smallest_timeout_do_not_count():
    succeeded = {16 * MIB: 3, 32 * MIB: 2, 64 * MIB: 8}
    finding = timeouts([outcome("b", {32 * MIB: 5}, succeeded, ["j"])])
    (change,) = assess(finding).of_action("chunk-size")
    assert change.params["chunk_size"] == 16 * MIB


def test_when_even_the_smallest_size_times_out_no_size_is_recommended():
    finding = timeouts(
        [outcome("exports-primary", {32 * MIB: 10, 64 * MIB: 12}, {64 * MIB: 1}, ["j-a", "j-b"])]
    )
    result = assess(failure_rate(), finding)
    assert "chunk-size" not in result.actions and "retry" not in result.actions
    (investigate,) = result.recommendations
    assert investigate.action == "investigate"
    assert "No safe chunk size is known for exports-primary" in investigate.reason
    assert "uploads of 32MiB (10 jobs), 64MiB (12 jobs) timed out" in investigate.reason
    assert "(only 64MiB, not below it)" in investigate.reason
    assert investigate.params == {"buckets": ["exports-primary"], "job_ids": ["j-a", "j-b"]}
    assert "--chunk-size" not in investigate.command
    assert investigate.evidence["chunk_sizes"]["exports-primary"]["chosen"] is None


def test_each_bucket_gets_its_own_safe_size():
    finding = timeouts(
        [
            outcome("exports-primary", {32 * MIB: 6}, {16 * MIB: 20}, ["p1", "p2"]),
            outcome("exports-eu", {128 * MIB: 5}, {64 * MIB: 9}, ["e1"]),
            outcome("exports-far", {8 * MIB: 5}, {}, ["f1"]),
        ]
    )
    result = assess(finding)
    sizes = {r.params["chunk_size"]: r.params["job_ids"] for r in result.of_action("chunk-size")}
    assert sizes == {16 * MIB: ["p1", "p2"], 50 * MB: ["e1"]}
    (retry,) = result.of_action("retry")  # one retry of the changed jobs
    assert retry.params["job_ids"] == ["e1", "p1", "p2"]
    (investigate,) = result.of_action("investigate")
    assert investigate.params["job_ids"] == ["f1"] and "exports-far" in investigate.reason


def test_timeouts_without_chunk_outcomes_recommend_no_size():
    """An older job state's finding: the sizes that timed out, none known to succeed."""
    sizes = [32 * MB, 256 * MB]
    finding = concentrated(
        "RequestTimeout", job_ids=["j-a", "j-b"], chunk_sizes=sizes, buckets=["exports-primary"]
    )
    result = assess(failure_rate(), finding)
    assert result.actions == ["investigate"]
    assert "No safe chunk size is known for exports-primary" in result.recommendations[0].reason
    assert "RequestTimeout" in result.recommendations[0].reason


def test_a_chunk_timeouts_finding_works_the_same():
    finding = Finding(
        CHUNK_TIMEOUTS,
        "warning",
        "3 uploads of 256MB chunks timed out",
        "job_state",
        {
            "job_ids": ["j-x"],
            "chunk_sizes": [256 * MB],
            "buckets": ["b"],
            "chunk_outcomes": [outcome("b", {256 * MB: 3}, {32 * MB: 4}, ["j-x"])],
        },
    )
    result = assess(finding)
    assert result.actions == ["chunk-size", "retry"]
    assert result.recommendations[0].params == {"job_ids": ["j-x"], "chunk_size": 32 * MB}
    assert "in the window uploads of 256MB (3 jobs)" in result.recommendations[0].reason


# Deliveries, network, stuck jobs ----------------------------------------------------------
def test_bad_deliveries_are_re_exported_and_their_tenants_notified():
    mismatch = bad_segments(CHECKSUM_MISMATCH, ["j1"], ["wonka"], "exports-primary")
    missing = bad_segments(MISSING_SEGMENTS, ["j2", "j1"], ["acme", "wonka"], "exports-primary")
    result = assess(Result([mismatch, missing]))
    assert result.actions == ["re-export", "notify-tenants"]
    export, notify = result.recommendations
    assert export.params == {"job_ids": ["j1", "j2"], "concurrency": 2}
    assert export.command == "exportctl retry --job j1 --job j2 --concurrency 2"
    assert notify.params["tenants"] == ["wonka", "acme"]
    assert notify.command == ""
    assert "s3://exports-primary/exports/wonka/j1/part-00001.bin" in notify.reason
    assert export.finding_codes == [CHECKSUM_MISMATCH, MISSING_SEGMENTS]


def test_network_findings_escalate_once_naming_the_hop_where_the_loss_starts():
    path = [("10.213.9.1", 0.0), ("10.214.0.1", 40.0), ("10.214.9.2", 30.0)]
    result = assess(
        network(NETWORK_LOSS, "10.214.9.2", path),
        network(NETWORK_LATENCY, "10.214.9.2", path),
    )
    (escalate,) = result.recommendations
    assert escalate.action == "escalate-network"
    assert escalate.params == {"hosts": ["10.214.9.2"], "hop": 2, "hop_host": "10.214.0.1"}
    assert "the loss starts at hop 2 (10.214.0.1, 40.0% lost)" in escalate.reason
    assert "30% packet loss" in escalate.reason
    assert escalate.evidence["loss_onset"]["index"] == 2
    assert escalate.finding_codes == [NETWORK_LOSS, NETWORK_LATENCY]


def test_a_hop_that_drops_probes_while_later_hops_answer_is_not_where_the_loss_starts():
    path = [("10.213.9.1", 100.0), ("10.214.0.1", 0.0), ("10.214.0.7", 20.0), ("t", 25.0)]
    (escalate,) = assess(network(NETWORK_LOSS, "t", path)).recommendations
    assert (escalate.params["hop"], escalate.params["hop_host"]) == (3, "10.214.0.7")


def test_the_onset_the_network_step_found_is_used_as_it_is():
    finding = network(NETWORK_UNREACHABLE, "10.214.9.2", [("r", 0.0), ("10.214.9.2", 100.0)])
    finding.evidence["loss_onset"] = {"index": 2, "host": "10.214.9.2", "loss_pct": 100.0}
    (escalate,) = assess(finding).recommendations
    assert escalate.params["hop"] == 2 and "hop 2 (10.214.9.2, 100.0% lost)" in escalate.reason


def test_latency_alone_names_no_hop():
    finding = network(NETWORK_LATENCY, "10.214.9.2", [("r", 0.0), ("10.214.9.2", 0.0)])
    (escalate,) = assess(finding).recommendations
    assert escalate.params == {"hosts": ["10.214.9.2"]}
    assert "no hop loses more than the threshold" in escalate.reason


def test_stuck_jobs_with_stale_heartbeats_are_retried():
    finding = stuck({"j-s1": "stale_heartbeat", "j-s2": "running_sla", "j-s3": "stale_heartbeat"})
    (retry,) = assess(finding).recommendations
    assert retry.params == {"job_ids": ["j-s1", "j-s3"], "concurrency": 6}
    assert "stale heartbeats" in retry.reason
    assert "Left to run, with live heartbeats: j-s2." in retry.reason


def test_only_long_running_jobs_are_not_retried():
    assert assess(stuck({"j-s2": "running_sla"})).recommendations == []


# Load, unexplained failures, storage -------------------------------------------------------
def test_failures_without_a_cause_are_investigated():
    (investigate,) = assess(failure_rate()).recommendations
    assert investigate.action == "investigate"
    assert investigate.command == "exportctl list --status failed --limit 20"
    assert "12.0%" in investigate.reason


def test_high_load_with_failures_pauses_bulk_exports_first():
    result = assess(failure_rate(), latency_high())
    assert result.actions == ["pause-bulk", "investigate"]
    assert result.recommendations[0].command == "exportctl pause bulk"
    assert result.recommendations[0].reason.startswith("Pause new bulk exports to reduce load")


def test_load_without_failures_does_not_pause():
    assert assess(latency_high()).recommendations == []


def test_denied_storage_is_investigated_and_avoided():
    evidence = {"buckets": ["exports-primary"], "codes": ["AccessDenied"]}
    summary = "S3 denies access to exports-primary"
    finding = Finding(PERMISSION_DENIED, "critical", summary, "storage_health", evidence)
    result = assess(finding, checked(("exports-fallback",)), failed_jobs(4, 20))
    assert result.actions == ["fallback-bucket", "investigate"]
    assert result.recommendations[0].params == {"bucket": "exports-fallback", "ttl": "30m"}
    assert result.recommendations[1].params == {"buckets": ["exports-primary"]}


# Everything at once ------------------------------------------------------------------------
def test_ordering_and_dedupe_when_everything_happens_at_once():
    throttled = throttling("exports-primary")
    timed_out = timeouts([outcome("exports-eu", {256 * MB: 3}, {64 * MB: 5}, ["j-a"])])
    findings = [
        failure_rate(),
        throttled,
        timed_out,
        stuck({"j-s": "stale_heartbeat", "j-a": "stale_heartbeat"}),
        bad_segments(CHECKSUM_MISMATCH, ["j-c"], ["wonka"], "exports-primary"),
        network(NETWORK_LOSS, "10.214.9.2"),
        Finding(
            REPORTED_JOBS_UNKNOWN,
            "warning",
            "1 reported job unknown",
            "detection",
            {"job_ids": ["nope"]},
        ),
    ]
    result = assess(Result(findings), Result([throttled]), throttled, None, checked())
    assert result.actions == [
        "pause-bulk",
        "fallback-bucket",
        "chunk-size",
        "escalate-network",
        "retry",
        "retry",
        "re-export",
        "notify-tenants",
    ]
    priorities = [r.priority for r in result.recommendations]
    assert priorities == sorted(priorities)
    status_retry, job_retry = result.of_action("retry")
    assert status_retry.params["status"] == "failed"
    assert job_retry.params == {"job_ids": ["j-a", "j-s"], "concurrency": 1}  # throttled: safe
    assert job_retry.finding_codes == [FAILURES_CONCENTRATED, STUCK_JOBS]
    assert result.recommendations[1].reason.count("S3 is throttling") == 1
    keys = [(r.action, json.dumps(r.params, sort_keys=True)) for r in result.recommendations]
    assert len(keys) == len(set(keys))
    assert result.considered[:3] == [FAILURE_RATE_HIGH, THROTTLING, FAILURES_CONCENTRATED]


def test_a_different_world_gets_the_analogous_recommendations():
    context = AssessmentContext(
        export_bucket="lake-drop-7",
        fallback_bucket="lake-spare",
        retry_concurrency=3,
        safe_concurrency=2,
        chunk_size=20 * MB,
    )
    findings = [
        failure_rate(0.3),
        throttling("lake-drop-7", region="ap-south-1"),
        timeouts([outcome("lake-drop-7", {40 * MB: 2}, {25 * MB: 7}, ["x-91"])]),
        bad_segments(MISSING_SEGMENTS, ["x-17"], ["zeta-corp"], "lake-drop-7"),
    ]
    health = checked(("lake-spare",), **{"lake-drop-7": "throttled"})
    result = assess(*findings, health, failed_jobs(9, 20), context=context)
    by_action = {r.action: r for r in result.recommendations}
    assert by_action["fallback-bucket"].params == {"bucket": "lake-spare", "ttl": "30m"}
    assert "lake-drop-7" in by_action["fallback-bucket"].reason
    assert "ap-south-1" in result.of_action("retry")[0].reason
    assert by_action["chunk-size"].command == "exportctl update --job x-91 --chunk-size 20MB"
    assert by_action["notify-tenants"].params["tenants"] == ["zeta-corp"]
    assert by_action["re-export"].command == "exportctl retry --job x-17 --concurrency 2"
    text = json.dumps(codec.encode(result))
    for built_in in ("exports-primary", "exports-fallback", "acme", "wonka"):
        assert built_in not in text


def test_no_findings_no_recommendations():
    result = assess(Result(), None)
    assert result.recommendations == [] and result.findings == []


def test_the_assessment_encodes_to_json_and_frames():
    result = assess(throttling("exports-primary"), checked(), failed_jobs(45))
    doc = json.loads(json.dumps(codec.encode(result), allow_nan=False))
    assert [r["action"] for r in doc["recommendations"]] == ["fallback-bucket", "retry"]
    assert doc["recommendations"][1]["evidence"]["retry_batch"]["remaining"] == 25
    assert list(result.frame()["action"]) == ["fallback-bucket", "retry"]
    assert codec.decode(Assessment, doc) == result
    assert Assessment.KIND == "assessment/v1"


def test_a_recorded_assessment_from_before_evidence_reads_back():
    doc = {
        "recommendations": [
            {
                "action": "retry",
                "reason": "why",
                "params": {"status": "failed", "limit": 20, "concurrency": 2},
                "finding_codes": ["throttling"],
                "command": "exportctl retry --status failed --limit 20 --concurrency 2",
                "priority": 50,
            }
        ],
        "findings": [],
        "considered": ["throttling"],
    }
    (old,) = codec.decode(Assessment, doc).recommendations
    assert old.evidence == {} and old.params["limit"] == 20


def test_the_same_data_gives_the_same_assessment():
    def results() -> list:
        return [
            throttling("exports-primary"),
            timeouts([outcome("exports-primary", {32 * MIB: 3}, {16 * MIB: 2}, ["j"])]),
            network(NETWORK_LOSS, "t", [("r", 0.0), ("t", 30.0)]),
            checked(),
            failed_jobs(45, 37),
            attempts(12.5),
        ]

    first, again = assess(*results()), assess(*results())
    assert json.dumps(codec.encode(first)) == json.dumps(codec.encode(again))
    recommended = {(r.action, json.dumps(r.params, sort_keys=True)) for r in first.recommendations}
    reordered = assess(*reversed(results())).recommendations
    assert {(r.action, json.dumps(r.params, sort_keys=True)) for r in reordered} == recommended


@pytest.mark.parametrize(
    "kwargs",
    [
        {"retry_concurrency": 0},
        {"safe_concurrency": True},
        {"chunk_size": -1},
        {"fallback_bucket": " "},
    ],
)
def test_a_bad_context_is_refused(kwargs):
    with pytest.raises(InvalidInput):
        AssessmentContext(**{"export_bucket": "b", "fallback_bucket": "f", **kwargs})


def test_failures_concentrated_on_slowdown_are_load_and_failures_at_once():
    finding = concentrated(
        "SlowDown", job_ids=["j1"], chunk_sizes=[64 * MB], buckets=["exports-primary"]
    )
    assert assess(finding).actions[0] == "pause-bulk"
    assert "pause-bulk" not in assess(throttling("exports-primary")).actions
