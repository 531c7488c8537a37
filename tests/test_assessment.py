"""Assessment rules on constructed findings: each rule, ordering, de-duplication, a missing
fallback bucket, and a world whose buckets and tenants have other names."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from exportnb.core import codec
from exportnb.core.errors import InvalidInput
from exportnb.core.findings import (
    CHECKSUM_MISMATCH,
    CHUNK_TIMEOUTS,
    FAILURE_RATE_HIGH,
    FAILURES_CONCENTRATED,
    LATENCY_HIGH,
    MISSING_SEGMENTS,
    NETWORK_LOSS,
    NETWORK_UNREACHABLE,
    PERMISSION_DENIED,
    REPORTED_JOBS_UNKNOWN,
    STUCK_JOBS,
    THROTTLING,
    Finding,
)
from exportnb.incident.model import AssessmentContext
from exportnb.mitigation.assessment import assess

MB = 1_000_000
CONTEXT = AssessmentContext(export_bucket="exports-primary", fallback_bucket="exports-fallback")


@dataclass(frozen=True)
class Result:
    """Any step's result: only its findings matter to the assessment."""

    findings: list[Finding] = field(default_factory=list)


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
) -> Finding:
    return Finding(
        FAILURES_CONCENTRATED,
        "warning",
        f"90% of failed jobs ({len(job_ids)} of {len(job_ids)}) share error code {value}",
        "job_state",
        {
            "dimension": "error_code",
            "value": value,
            "share": 0.9,
            "count": len(job_ids),
            "buckets": buckets,
            "chunk_sizes": chunk_sizes,
            "error_codes": [value],
            "tenants": list(tenants),
            "job_ids": job_ids,
        },
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


def network(code: str, host: str) -> Finding:
    return Finding(
        code,
        "critical",
        f"30% packet loss to {host}",
        "network_path",
        {"host": host, "loss_pct": 30.0, "p95_ms": 151.0},
    )


def actions(assessment) -> list[str]:
    return [r.action for r in assessment.recommendations]


# Throttling ----------------------------------------------------------------------------
def test_throttling_redirects_to_the_fallback_and_retries_at_the_safe_concurrency():
    result = assess(Result([throttling("exports-primary")]), context=CONTEXT)
    fallback, retry = result.recommendations
    assert fallback.action == "fallback-bucket"
    assert fallback.params == {"bucket": "exports-fallback", "ttl": "30m"}
    assert fallback.command == "featurectl set export.fallback_bucket exports-fallback --ttl 30m"
    assert "exports-primary" in fallback.reason and "SlowDown" in fallback.reason
    assert retry.action == "retry"
    assert retry.params == {"status": "failed", "limit": 20, "concurrency": 1}
    assert retry.command == "exportctl retry --status failed --limit 20 --concurrency 1"
    assert "us-east-1" in retry.reason
    assert fallback.finding_codes == retry.finding_codes == [THROTTLING]
    assert fallback.priority < retry.priority


@pytest.mark.parametrize("code", ["SlowDown", "503"])
def test_failures_concentrated_on_slowdown_count_as_throttling(code):
    finding = concentrated(
        code, job_ids=["j1", "j2"], chunk_sizes=[64 * MB], buckets=["exports-primary"]
    )
    result = assess(finding, context=CONTEXT)
    assert actions(result) == ["pause-bulk", "fallback-bucket", "retry"]  # load and failures
    assert result.recommendations[1].finding_codes == [FAILURES_CONCENTRATED]


def test_no_fallback_bucket_configured_is_said_instead_of_recommending_one():
    context = AssessmentContext(export_bucket="exports-primary", fallback_bucket=None)
    result = assess(throttling("exports-primary"), context=context)
    (retry,) = result.recommendations
    assert retry.action == "retry"
    assert "No fallback bucket is configured" in retry.reason


def test_a_throttled_fallback_bucket_is_not_recommended():
    result = assess(throttling("exports-primary", "exports-fallback"), context=CONTEXT)
    assert actions(result) == ["retry"]
    assert "exports-fallback is impaired too" in result.recommendations[0].reason


def test_safe_concurrency_is_a_parameter():
    context = AssessmentContext("exports-primary", "exports-fallback", safe_concurrency=3)
    result = assess(throttling("exports-primary"), context=context)
    assert result.of_action("retry")[0].command.endswith("--concurrency 3")


# Chunk timeouts ------------------------------------------------------------------------
def test_timeouts_on_large_chunks_reduce_the_chunk_size_then_retry():
    sizes = [128 * MB, 256 * MB]
    finding = concentrated(
        "RequestTimeout", job_ids=["j-a", "j-b"], chunk_sizes=sizes, buckets=["exports-primary"]
    )
    result = assess(finding, context=CONTEXT)
    assert actions(result) == ["chunk-size", "retry"]
    change, retry = result.recommendations
    assert change.params == {"job_ids": ["j-a", "j-b"], "chunk_size": 50 * MB}
    assert change.command == (
        "exportctl update --job j-a --chunk-size 50MB\nexportctl update --job j-b --chunk-size 50MB"
    )
    assert "128MB" in change.reason and "256MB" in change.reason
    assert retry.params == {"job_ids": ["j-a", "j-b"], "concurrency": 2}
    assert retry.command == "exportctl retry --job j-a --job j-b --concurrency 2"


def test_timeouts_on_small_chunks_are_not_a_chunk_size_problem():
    sizes = [32 * MB, 256 * MB]
    finding = concentrated(
        "RequestTimeout", job_ids=["j-a", "j-b"], chunk_sizes=sizes, buckets=["exports-primary"]
    )
    result = assess(failure_rate(), finding, context=CONTEXT)
    assert actions(result) == ["investigate"]
    assert "RequestTimeout" in result.recommendations[0].reason


def test_a_chunk_timeouts_finding_works_the_same():
    finding = Finding(
        CHUNK_TIMEOUTS,
        "warning",
        "3 uploads of 256MB chunks timed out",
        "job_state",
        {"job_ids": ["j-x"], "chunk_sizes": [256 * MB]},
    )
    result = assess(finding, context=CONTEXT)
    assert actions(result) == ["chunk-size", "retry"]
    assert result.recommendations[0].params["job_ids"] == ["j-x"]


# Deliveries, network, stuck jobs ----------------------------------------------------------
def test_bad_deliveries_are_re_exported_and_their_tenants_notified():
    mismatch = bad_segments(CHECKSUM_MISMATCH, ["j1"], ["wonka"], "exports-primary")
    missing = bad_segments(MISSING_SEGMENTS, ["j2", "j1"], ["acme", "wonka"], "exports-primary")
    result = assess(Result([mismatch, missing]), context=CONTEXT)
    assert actions(result) == ["re-export", "notify-tenants"]
    export, notify = result.recommendations
    assert export.params == {"job_ids": ["j1", "j2"], "concurrency": 2}
    assert export.command == "exportctl retry --job j1 --job j2 --concurrency 2"
    assert notify.params["tenants"] == ["wonka", "acme"]
    assert notify.command == ""
    assert "s3://exports-primary/exports/wonka/j1/part-00001.bin" in notify.reason
    assert export.finding_codes == [CHECKSUM_MISMATCH, MISSING_SEGMENTS]


def test_network_findings_escalate_once():
    result = assess(
        network(NETWORK_LOSS, "10.214.9.2"),
        network(NETWORK_UNREACHABLE, "10.214.9.2"),
        context=CONTEXT,
    )
    (escalate,) = result.recommendations
    assert escalate.action == "escalate-network" and escalate.params == {"hosts": ["10.214.9.2"]}
    assert "30% packet loss" in escalate.reason
    assert escalate.finding_codes == [NETWORK_LOSS, NETWORK_UNREACHABLE]


def test_stuck_jobs_with_stale_heartbeats_are_retried():
    finding = stuck({"j-s1": "stale_heartbeat", "j-s2": "running_sla", "j-s3": "stale_heartbeat"})
    (retry,) = assess(finding, context=CONTEXT).recommendations
    assert retry.params == {"job_ids": ["j-s1", "j-s3"], "concurrency": 2}
    assert "stale heartbeats" in retry.reason
    assert "Left to run, with live heartbeats: j-s2." in retry.reason


def test_only_long_running_jobs_are_not_retried():
    assert assess(stuck({"j-s2": "running_sla"}), context=CONTEXT).recommendations == []


# Load, unexplained failures, storage -------------------------------------------------------
def test_failures_without_a_cause_are_investigated():
    (investigate,) = assess(failure_rate(), context=CONTEXT).recommendations
    assert investigate.action == "investigate"
    assert investigate.command == "exportctl list --status failed --limit 20"
    assert "12.0%" in investigate.reason


def test_high_load_with_failures_pauses_bulk_exports_first():
    result = assess(failure_rate(), latency_high(), context=CONTEXT)
    assert actions(result) == ["pause-bulk", "investigate"]
    assert result.recommendations[0].command == "exportctl pause bulk"
    assert result.recommendations[0].reason.startswith("Pause new bulk exports to reduce load")


def test_load_without_failures_does_not_pause():
    assert assess(latency_high(), context=CONTEXT).recommendations == []


def test_denied_storage_is_investigated_and_avoided():
    evidence = {"buckets": ["exports-primary"], "codes": ["AccessDenied"]}
    summary = "S3 denies access to exports-primary"
    finding = Finding(PERMISSION_DENIED, "critical", summary, "storage_health", evidence)
    result = assess(finding, context=CONTEXT)
    assert actions(result) == ["fallback-bucket", "investigate"]
    assert result.recommendations[1].params == {"buckets": ["exports-primary"]}


# Everything at once ------------------------------------------------------------------------
def test_ordering_and_dedupe_when_everything_happens_at_once():
    throttled = throttling("exports-primary")
    timeouts = concentrated(
        "RequestTimeout", job_ids=["j-a"], chunk_sizes=[256 * MB], buckets=["exports-eu"]
    )
    findings = [
        failure_rate(),
        throttled,
        timeouts,
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
    result = assess(Result(findings), Result([throttled]), throttled, None, context=CONTEXT)
    assert actions(result) == [
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
        concentrated(
            "RequestTimeout", job_ids=["x-91"], chunk_sizes=[40 * MB], buckets=["lake-drop-7"]
        ),
        bad_segments(MISSING_SEGMENTS, ["x-17"], ["zeta-corp"], "lake-drop-7"),
    ]
    result = assess(*findings, context=context)
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
    result = assess(Result(), None, context=CONTEXT)
    assert result.recommendations == [] and result.findings == []


def test_the_assessment_encodes_to_json_and_frames():
    result = assess(throttling("exports-primary"), context=CONTEXT)
    doc = json.loads(json.dumps(codec.encode(result)))
    assert [r["action"] for r in doc["recommendations"]] == ["fallback-bucket", "retry"]
    assert list(result.frame()["action"]) == ["fallback-bucket", "retry"]


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
    assert actions(assess(finding, context=CONTEXT))[0] == "pause-bulk"
    assert "pause-bulk" not in actions(assess(throttling("exports-primary"), context=CONTEXT))
