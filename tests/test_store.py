"""The job store on a real SQLite file."""

import time

import pytest

from exportnb.core.errors import NotFound
from exportnb.platform.model import JobQuery
from exportnb.sandbox.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store.db", create=True)
    with s.transaction() as db:
        db.execute("INSERT INTO buckets VALUES ('primary', 'primary', 'us-east-1')")
    yield s
    s.close()


def make(store, n, *, kind="adhoc", t0=1_000_000.0, prefix="job"):
    for i in range(n):
        store.create_job(
            job_id=f"{prefix}-{i}",
            tenant="acme",
            connector="s3",
            bucket="primary",
            kind=kind,
            chunk_size=64_000_000,
            size=100_000_000,
            created_at=t0 + i,
        )


def test_missing_store_is_not_found(tmp_path):
    with pytest.raises(NotFound):
        Store(tmp_path / "nope.db")


def test_claim_runs_oldest_first_and_holds_bulk_while_paused(store):
    make(store, 1, kind="bulk", prefix="bulk")
    make(store, 1, t0=2_000_000.0)
    assert store.claim(now=10.0, bulk_paused=True).id == "job-0"
    assert store.claim(now=10.0, bulk_paused=True) is None
    job = store.claim(now=11.0, bulk_paused=False)
    assert (job.id, job.status, job.attempts) == ("bulk-0", "running", 1)


def test_finish_rolls_up_per_minute_and_refuses_a_closed_attempt(store):
    make(store, 2)
    a = store.claim(now=60.0, bulk_paused=False)
    b = store.claim(now=61.0, bulk_paused=False)
    assert store.finish(a.id, 1, status="succeeded", finished_at=125.0, bucket="primary")
    assert store.finish(
        b.id, 1, status="failed", finished_at=130.0, bucket="primary", error_code="SlowDown"
    )
    assert not store.finish(a.id, 1, status="failed", finished_at=131.0, bucket="primary")
    counts = {(c.minute.timestamp(), c.status): c.count for c in store.status_counts(0, 1e9)}
    assert counts == {(120.0, "failed"): 1, (120.0, "succeeded"): 1}
    failed = store.list_jobs(JobQuery(status="failed"))
    assert [j.error_code for j in failed] == ["SlowDown"]


def test_retry_batch_concurrency_bounds_claims(store):
    make(store, 5)
    for _ in range(5):
        job = store.claim(now=1.0, bulk_paused=False)
        store.finish(job.id, 1, status="failed", finished_at=2.0, bucket="primary")
    queued, skipped = store.requeue(
        [f"job-{i}" for i in range(5)] + ["ghost"],
        batch="b1",
        concurrency=2,
        actor="t",
        now=3.0,
        abandon_before=0.0,
    )
    assert len(queued) == 5 and skipped == {"ghost": "not found"}
    claimed = [store.claim(now=4.0, bulk_paused=False) for _ in range(3)]
    assert claimed[2] is None and store.batch_running_peak("b1") == 2
    store.finish(claimed[0].id, 2, status="succeeded", finished_at=5.0, bucket="primary")
    assert store.claim(now=6.0, bulk_paused=False) is not None


def test_requeue_takes_a_running_job_only_when_its_heartbeat_is_stale(store):
    make(store, 1)
    store.claim(now=100.0, bulk_paused=False)
    queued, skipped = store.requeue(
        ["job-0"], batch="b", concurrency=1, actor="t", now=101.0, abandon_before=50.0
    )
    assert queued == [] and "live heartbeat" in skipped["job-0"]
    queued, _ = store.requeue(
        ["job-0"], batch="c", concurrency=1, actor="t", now=200.0, abandon_before=150.0
    )
    assert queued == ["job-0"]
    assert store.attempts("job-0")[0].error_code == "HeartbeatLost"


def test_latency_percentiles_are_nearest_rank(store):
    make(store, 100)
    for i in range(100):
        job = store.claim(now=0.0, bulk_paused=False)
        store.finish(
            job.id,
            1,
            status="succeeded",
            finished_at=float(i + 1),
            bucket="primary",
            started_at=0.0,
        )
    (window,) = store.latency(0, 1000, per_minute=False)
    assert (window.count, window.p50, window.p95, window.p99) == (100, 50.0, 95.0, 99.0)
    (empty,) = store.latency(5000, 6000, per_minute=False)
    assert empty.count == 0 and empty.p95 is None
    per_minute = store.latency(0, 1000, per_minute=True)
    assert [m.count for m in per_minute] == [59, 41]


def test_flags_expire_with_an_audit_entry(store):
    now = time.time()
    store.put_flag(
        "export.fallback_bucket", "fb", actor="alice", now=now, expires_at=now + 10, reason="INC-1"
    )
    assert store.flag("export.fallback_bucket", now + 5).value == "fb"
    assert store.flag("export.fallback_bucket", now + 11) is None
    assert store.expire_flags(now + 11) == 1
    history = store.audit_entries(target="export.fallback_bucket")
    assert [(e.action, e.actor) for e in history] == [("flag.set", "alice"), ("flag.expire", "ttl")]
    assert history[0].new["value"] == "fb" and history[1].old == "fb"


def test_fault_hits_are_kept_with_the_attempt_they_struck(store):
    from exportnb.sandbox.faults import FaultHit

    make(store, 1)
    store.claim(now=10.0, bulk_paused=False)
    store.record_fault_hit(
        FaultHit("timeout", "s3proxy", 12.0, "primary", "k", "job-0", "acme", 1, 0, 64, 50)
    )
    store.record_fault_hit(FaultHit("throttle", "s3proxy", 20.0, "primary"))
    (timeout,) = store.fault_hits(until=15.0)
    assert (timeout.connector, timeout.chunk_size, timeout.limit) == ("s3", 64_000_000, 50)
    assert [h.kind for h in store.fault_hits()] == ["timeout", "throttle"]
    assert store.fault_hits()[1].job_id is None
