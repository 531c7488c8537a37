import pytest

from exportnb.core.errors import InvalidInput
from exportnb.sandbox.faults import FaultSet, parse_fault


def test_timeout_fault_normalizes_sizes_and_hold():
    fault = parse_fault("timeout", {"min_chunk": "128MB", "hold": "500ms"})
    assert fault.params == {"min_chunk": 128_000_000, "hold": 0.5}


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("flood", {}, "unknown fault"),
        ("throttle", {}, "buckets is required"),
        ("timeout", {}, "min_chunk is required"),
        ("timeout", {"min_chunk": "50XB"}, "invalid size"),
        ("corrupt", {"rate": 2}, "rate"),
        ("stuck", {"max_attempt": 0}, "max_attempt"),
        ("network", {}, "latency, loss"),
        ("network", {"loss": 120}, "percentage"),
        ("throttle", {"buckets": ["a"], "rate": 1}, "unknown parameter"),
    ],
)
def test_bad_faults_are_refused(kind, params, message):
    with pytest.raises(InvalidInput, match=message):
        parse_fault(kind, params)


def test_worker_faults_respect_scope_rate_and_attempt():
    fault = parse_fault("corrupt", {"tenants": ["acme"], "rate": 1.0})
    faults = FaultSet((fault,))
    hit = dict(tenant="acme", connector="s3", bucket="b", attempt=1)
    assert faults.worker_hits(job_id="job-1", **hit) == {"corrupt"}
    assert faults.worker_hits(job_id="job-1", **{**hit, "attempt": 2}) == set()
    assert faults.worker_hits(job_id="job-1", **{**hit, "tenant": "other"}) == set()


def test_rate_hits_about_that_share_of_jobs():
    fault = parse_fault("missing", {"rate": 0.3})
    hits = sum(
        fault.hits(job_id=f"job-{i}", tenant="t", connector="c", bucket="b", attempt=1)
        for i in range(2000)
    )
    assert 0.25 < hits / 2000 < 0.35


def test_timeout_threshold_is_the_strictest_covering_the_bucket():
    faults = FaultSet(
        (
            parse_fault("timeout", {"min_chunk": "256MB"}),
            parse_fault("timeout", {"min_chunk": "128MB", "buckets": ["primary"]}),
        )
    )
    assert faults.timeout_threshold("primary")[0] == 128_000_000
    assert faults.timeout_threshold("other")[0] == 256_000_000
