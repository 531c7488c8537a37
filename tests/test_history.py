"""Seeded history and planned jobs, on a real SQLite store."""

import dataclasses
import hashlib
import re
from datetime import UTC, datetime

import pytest

from exportnb.core.errors import InvalidInput, PreconditionFailed
from exportnb.platform.model import FINISHED, JobQuery
from exportnb.sandbox.history import (
    BACKGROUND_ERRORS,
    JobSpec,
    expected_jobs,
    job_ids,
    plan_jobs,
    seasonal_factor,
    seed_history,
)
from exportnb.sandbox.scenario import load_scenario
from exportnb.sandbox.store import Store

NOW = datetime(2024, 6, 12, 15, 0, tzinfo=UTC).timestamp()
VOLUME = 20_000
ID_RE = re.compile(r"^job-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def scenario():
    return dataclasses.replace(load_scenario("base"), volume=VOLUME)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, scenario):
    store = Store(tmp_path_factory.mktemp("history") / "store.db", create=True)
    calls = []
    report = seed_history(store, scenario, now=NOW, progress=lambda d, t: calls.append((d, t)))
    yield store, report, calls
    store.close()


def rows(store, sql, *args):
    return store.db.execute(sql, args).fetchall()


def test_counts_match_the_report(seeded):
    store, report, _ = seeded
    assert report.jobs == VOLUME == rows(store, "SELECT count(*) FROM jobs")[0][0]
    assert report.attempts == rows(store, "SELECT count(*) FROM attempts")[0][0]
    assert report.logs == rows(store, "SELECT count(*) FROM logs")[0][0]
    by_status = dict(rows(store, "SELECT status, count(*) FROM jobs GROUP BY status"))
    assert by_status == {k: v for k, v in report.by_status.items() if v}
    assert 0 < report.by_status["cancelled"] < VOLUME * 0.005


def test_reference_data_and_meta(seeded, scenario):
    store, report, _ = seeded
    assert store.tenants() == sorted(t.id for t in scenario.tenants)
    assert store.connectors()["snowflake"] == "warehouse"
    assert store.buckets()[0] == ("exports-primary", "primary", "us-east-1")
    assert store.get_meta("scenario") == "base"
    assert store.get_meta("seeded_at") == NOW
    assert store.get_meta("incident_start") == report.incident_start == NOW - 30 * 60


def test_every_job_is_finished_and_consistent_with_its_attempts(seeded):
    store, _, _ = seeded
    assert {r[0] for r in rows(store, "SELECT DISTINCT status FROM jobs")} <= set(FINISHED)
    mismatched = rows(
        store,
        """
        SELECT j.id FROM jobs j JOIN attempts a ON a.job_id = j.id
        GROUP BY j.id
        HAVING j.attempts != count(*) OR j.attempts != max(a.number)
            OR j.status != max(CASE WHEN a.number = j.attempts THEN a.status END)
            OR j.finished_at != max(a.finished_at) OR j.started_at != max(a.started_at)
    """,
    )
    assert mismatched == []
    assert rows(store, "SELECT count(*) FROM attempts WHERE finished_at <= started_at")[0][0] == 0
    assert rows(store, "SELECT max(attempts) FROM jobs")[0][0] == 2
    assert rows(store, "SELECT count(*) FROM jobs WHERE heartbeat_at IS NOT NULL")[0][0] == 0


def test_failed_jobs_carry_background_errors_and_logs(seeded):
    store, _, _ = seeded
    codes = {e.code for e in BACKGROUND_ERRORS}
    failed = rows(store, "SELECT id, error_code, error_message FROM jobs WHERE status = 'failed'")
    assert failed and all(code in codes and message for _, code, message in failed)
    lines = dict(rows(store, "SELECT job_id, count(*) FROM logs GROUP BY job_id"))
    assert all(2 <= lines[job_id] <= 4 for job_id, _, _ in failed)
    levels = {r[0] for r in rows(store, "SELECT DISTINCT level FROM logs")}
    assert levels == {"info", "warning", "error"}
    delivered = rows(
        store,
        "SELECT count(*) FROM jobs WHERE status = 'succeeded' AND delivered_bucket IS NOT bucket",
    )
    assert delivered[0][0] == 0
    assert (
        rows(
            store, "SELECT count(*) FROM jobs WHERE status = 'succeeded' AND error_code IS NOT NULL"
        )[0][0]
        == 0
    )


def test_no_segments_or_manifests(seeded):
    store, _, _ = seeded
    assert rows(store, "SELECT count(*) FROM segments") == [(0,)]
    assert rows(store, "SELECT count(*) FROM manifests") == [(0,)]


def test_success_rate_is_the_baseline(seeded, scenario):
    store, report, _ = seeded
    counts: dict[str, int] = {}
    for c in store.status_counts(NOW - 8 * 86400, NOW):
        counts[c.status] = counts.get(c.status, 0) + c.count
    rate = counts["succeeded"] / (counts["succeeded"] + counts["failed"])
    assert rate == pytest.approx(scenario.baseline_success, abs=0.002)
    assert report.success_rate == pytest.approx(rate)
    jobs_failed = report.by_status["failed"] / VOLUME
    assert 0.001 < jobs_failed < 0.008


def test_minute_counts_equal_the_attempts(seeded):
    store, _, _ = seeded
    direct: dict[tuple[int, str], int] = {}
    for finished, status in rows(store, "SELECT finished_at, status FROM attempts"):
        key = (int(finished // 60) * 60, status)
        direct[key] = direct.get(key, 0) + 1
    rolled = {(m, s): n for m, s, n in rows(store, "SELECT minute, status, n FROM minute_counts")}
    assert rolled == direct


def test_history_lies_before_the_incident(seeded, scenario):
    store, report, _ = seeded
    first, last_created = rows(store, "SELECT min(created_at), max(created_at) FROM jobs")[0]
    last_finished = rows(store, "SELECT max(finished_at) FROM attempts")[0][0]
    assert NOW - scenario.days * 86400 <= first
    assert last_created < last_finished < report.incident_start
    assert report.incident_start - last_finished < 600


def test_business_hours_are_busier_than_night(seeded):
    store, _, _ = seeded
    hours = dict(
        rows(
            store,
            "SELECT CAST(created_at % 86400 / 3600 AS INTEGER), count(*) FROM jobs GROUP BY 1",
        )
    )
    business = sum(hours[h] for h in range(12, 17)) / 5
    night = sum(hours[h] for h in range(0, 5)) / 5
    assert business > 2.5 * night


def test_failures_rise_a_little_with_load(seeded):
    store, _, _ = seeded
    share = dict(
        rows(
            store,
            """
        SELECT CAST(started_at % 86400 / 3600 AS INTEGER) BETWEEN 11 AND 17,
               avg(status = 'failed') FROM attempts GROUP BY 1""",
        )
    )
    assert share[1] > share[0]


def test_ids_are_unique_well_formed_and_deterministic(seeded, scenario, tmp_path):
    store, _, _ = seeded
    ids = [r[0] for r in rows(store, "SELECT id FROM jobs ORDER BY id")]
    assert len(set(ids)) == VOLUME and all(ID_RE.match(i) for i in ids)
    assert sorted(job_ids(scenario.seed, VOLUME)) == ids
    assert job_ids(scenario.seed, 3, first=5) == job_ids(scenario.seed, 8)[5:]
    assert job_ids(scenario.seed + 1, 3) != job_ids(scenario.seed, 3)
    again = Store(tmp_path / "again.db", create=True)
    seed_history(again, scenario, now=NOW)
    assert digest(again) == digest(store)
    again.close()


def digest(store):
    h = hashlib.sha256()
    for table, key in (
        ("jobs", "id"),
        ("attempts", "job_id, number"),
        ("logs", "id"),
        ("minute_counts", "minute, status"),
    ):
        for row in rows(store, f"SELECT * FROM {table} ORDER BY {key}"):
            h.update(repr(row).encode())
    return h.hexdigest()


def test_progress_is_reported_up_to_the_total(seeded):
    _, _, calls = seeded
    assert calls[-1] == (VOLUME, VOLUME)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_seeding_twice_is_refused(seeded, scenario):
    store, _, _ = seeded
    with pytest.raises(PreconditionFailed, match="empty"):
        seed_history(store, scenario, now=NOW)


def test_store_queries_answer_on_history(seeded, scenario):
    store, report, _ = seeded
    failed = store.list_jobs(JobQuery(status="failed", limit=20))
    assert len(failed) == 20 and all(j.status == "failed" and j.error_code for j in failed)
    created = [j.created_at for j in failed]
    assert created == sorted(created, reverse=True)
    start = report.incident_start
    (week,) = store.latency(start - 7 * 86400, start, per_minute=False)
    assert week.count == report.attempts - report.attempts_by_status["cancelled"]
    assert 3 < week.p50 < week.p95 < week.p99
    assert week.p95 < scenario.latency_slo
    series = store.latency(start - 3600, start, per_minute=True)
    assert 50 <= len(series) <= 61 and all(p.count > 0 for p in series)
    minutes = {c.minute for c in store.status_counts(start - 3600, start)}
    assert len(minutes) >= 50


def test_chunk_sizes_follow_the_connector(seeded, scenario):
    store, _, _ = seeded
    used = rows(store, "SELECT connector, chunk_size FROM jobs GROUP BY 1, 2")
    for connector, size in used:
        assert size in {c.size for c in scenario.chunk_choices(connector)}
    assert {c for c, s in used if s == 256 * 2**20} == {"snowflake", "bigquery", "redshift"}


def test_plan_jobs_follows_the_model(scenario):
    start = NOW
    end = start + 86400
    planned = plan_jobs(scenario, start, end, rng_seed=7, id_prefix="a1")
    assert all(isinstance(j, JobSpec) and start <= j.created_at < end for j in planned)
    assert [j.created_at for j in planned] == sorted(j.created_at for j in planned)
    expected = expected_jobs(scenario, start, end)
    assert expected == pytest.approx(VOLUME / scenario.days, rel=0.01)
    assert abs(len(planned) - expected) < 5 * expected**0.5
    assert planned == plan_jobs(scenario, start, end, rng_seed=7, id_prefix="a1")
    assert planned != plan_jobs(scenario, start, end, rng_seed=8, id_prefix="a1")


def test_plan_jobs_rate_in_a_busy_and_a_quiet_window(scenario):
    noon = datetime(2024, 6, 12, 13, 30, tzinfo=UTC).timestamp()
    night = datetime(2024, 6, 12, 2, 0, tzinfo=UTC).timestamp()
    busy = len(plan_jobs(scenario, noon, noon + 4 * 3600, rng_seed=1, id_prefix="b0"))
    quiet = len(plan_jobs(scenario, night, night + 4 * 3600, rng_seed=1, id_prefix="b0"))
    assert busy > 2.5 * quiet
    per_minute = scenario.jobs_per_minute * float(seasonal_factor(noon + 7200))
    assert busy / 240 == pytest.approx(per_minute, rel=0.15)


def test_planned_ids_never_collide(seeded, scenario):
    store, _, _ = seeded
    planned = plan_jobs(scenario, NOW - 1800, NOW, rng_seed=1, id_prefix="01")
    more = plan_jobs(
        scenario, NOW, NOW + 1800, rng_seed=2, id_prefix="01", first_index=len(planned)
    )
    other = plan_jobs(scenario, NOW - 1800, NOW, rng_seed=1, id_prefix="02")
    ids = [j.id for j in planned + more + other]
    assert len(ids) == len(set(ids)) and all(ID_RE.match(i) for i in ids)
    assert store.existing_job_ids(ids) == set()


def test_plan_jobs_checks_its_namespace(scenario):
    with pytest.raises(InvalidInput, match="reserved"):
        plan_jobs(scenario, NOW, NOW + 60, rng_seed=1, id_prefix="00")
    with pytest.raises(InvalidInput, match="two lowercase hex digits"):
        plan_jobs(scenario, NOW, NOW + 60, rng_seed=1, id_prefix="live")
    with pytest.raises(InvalidInput, match="rng_seed"):
        plan_jobs(scenario, NOW, NOW + 60, rng_seed=-1, id_prefix="0a")
    assert plan_jobs(scenario, NOW, NOW, rng_seed=1, id_prefix="0a") == []
