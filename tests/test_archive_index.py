"""The archive index: what it holds of each record, how it keeps up, and how it rebuilds."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from archive_records import T0, bundle, journal_bundle, make_record, save

from exportnb.archive import index
from exportnb.archive.index import Index, Query
from exportnb.archive.store import LocalArchive
from exportnb.core.errors import InvalidInput, NotFound, StorageError
from exportnb.record.facts import RecordFacts
from exportnb.run import runner

NOTEBOOKS = Path(__file__).parent / "notebooks"


pytestmark = pytest.mark.usefixtures("home")  # a fresh $EXPORTNB_HOME (conftest)


@pytest.fixture
def store(tmp_path) -> LocalArchive:
    return LocalArchive(tmp_path / "archive")


def ids(found) -> list[str]:
    return [r.record_id for r in found]


@pytest.fixture
def world(store, home):
    """Two incidents: INC-1 (three runs, a journal with a mitigation) and INC-2 (one run)."""
    at = [T0 + timedelta(hours=h) for h in range(4)]
    dana = [journal_bundle(home, "INC-1", [("fallback-bucket", "dana")])]
    made = [
        make_record(
            "INC-1",
            at=at[0],
            job_ids=["job-a", "job-b"],
            tenants=["acme", "globex"],
            status="failed",
        ),
        make_record(
            "INC-1",
            at=at[1],
            job_ids=["job-b"],
            tenants=["globex"],
            findings=[("throttling", "critical"), ("failures_concentrated", "warning")],
            extra=dana,
        ),
        make_record(
            "INC-1", at=at[2], job_ids=["job-c"], tenants=["acme"], findings=[], extra=dana
        ),
        make_record(
            "INC-2",
            at=at[3],
            job_ids=["job-z"],
            tenants=["wayne"],
            buckets=["exports-eu"],
            plan_applied=["pause-bulk"],
            operator="erin",
        ),
    ]
    return [save(store, record, files) for record, files in made]


# What the index holds ----------------------------------------------------------------------
def test_facts_of_a_record_come_from_its_results(world):
    facts = RecordFacts.of(world[0])
    assert facts.job_ids == ["job-a", "job-b"] and facts.tenants == ["acme", "globex"]
    assert facts.buckets == ["exports-primary"]
    assert facts.files == ["s3://exports-primary/exports/job-a/part-0.bin"]
    assert [f.code for f in facts.findings] == ["failure_rate_high"]
    assert facts.mitigations == []


def test_applied_mitigations_come_from_the_journal_and_from_the_plan(world):
    journaled = RecordFacts.of(world[1]).mitigations
    assert [(m.action, m.operator, m.source, m.seq) for m in journaled] == [
        ("fallback-bucket", "dana", "journal", 2)
    ]
    assert journaled[0].params == {"bucket": "exports-fallback"} and journaled[0].at is not None
    planned = RecordFacts.of(world[3]).mitigations
    assert [(m.action, m.operator, m.source, m.at) for m in planned] == [
        ("pause-bulk", "erin", "plan", world[3].ended_at)
    ]


def test_a_trail_bundle_and_odd_shapes_are_read_or_passed_over(home):
    entries = journal_bundle(home, "INC-5", [("retry", "fay")])["result"]["entries"]
    odd = [
        bundle(
            "job_state",
            "JobState",
            {
                "job_ids": "job-q",
                "tenants": [1, None, "ok"],
                "latest": "nope",
                "by_bucket": {"b1": 3},
            },
        ),
        bundle("mitigations", "Trail", {"entries": [*entries, "junk", {"kind": "result"}]}),
        {"step": "x", "type": "JobState", "result": ["not", "an", "object"]},
    ]
    record, _ = make_record("INC-5", job_ids=[], tenants=[], buckets=[], extra=odd)
    facts = RecordFacts.of(record)
    assert facts.job_ids == ["job-q"] and facts.tenants == ["ok"] and facts.buckets == ["b1"]
    assert [(m.action, m.operator) for m in facts.mitigations] == [("retry", "fay")]


# Search --------------------------------------------------------------------------------------
def test_search_by_each_filter(store, world):
    assert ids(index.search(store)) == ids(world)
    assert ids(index.search(store, incident="INC-1")) == ids(world[:3])
    assert ids(index.search(store, job_id="job-b")) == ids(world[:2])
    assert ids(index.search(store, tenant="acme")) == [world[0].record_id, world[2].record_id]
    assert ids(index.search(store, bucket="exports-eu")) == [world[3].record_id]
    assert ids(index.search(store, status="failed")) == [world[0].record_id]
    assert ids(index.search(store, finding="throttling")) == [world[1].record_id]
    since, until = T0 + timedelta(hours=1), T0 + timedelta(hours=3)
    assert ids(index.search(store, since=since, until=until)) == ids(world[1:3])
    assert ids(index.search(store, incident="INC-1", tenant="globex", limit=1)) == [
        world[0].record_id
    ]
    assert index.search(store, job_id="job-none") == []


def test_versions_count_an_incidents_records_in_start_order(store, world):
    found = index.search(store, incident="INC-1")
    assert [(r.version, r.chain_seq) for r in found] == [(1, 1), (2, 2), (3, 3)]
    earlier, files = make_record("INC-1", at=T0 - timedelta(hours=1), job_ids=["job-0"])
    save(store, earlier, files)  # archived last, started first
    found = index.search(store, incident="INC-1")
    assert (found[0].record_id, found[0].version) == (earlier.record_id, 1)
    assert [r.version for r in found] == [1, 2, 3, 4]
    assert [r.version for r in index.search(store, incident="INC-2")] == [1]


def test_mitigations_of_an_incident_count_once(store, world):
    done = index.mitigations(store, incident="INC-1")
    assert [(m.action, m.operator, m.source) for m in done] == [
        ("fallback-bucket", "dana", "journal")
    ]
    every = index.mitigations(store)  # by time: the journal's entries were written now
    assert [m.action for m in every] == ["pause-bulk", "fallback-bucket"]
    assert index.facts(world[1].record_id, store).mitigations == done


def test_bad_queries_are_refused(store):
    for bad in (
        {"incident": "../x"},
        {"status": "running"},
        {"limit": 0},
        {"since": T0, "until": T0},
    ):
        with pytest.raises(InvalidInput):
            index.search(store, **bad)
    with pytest.raises(NotFound):
        index.facts("INC-1/20240501T120000Z-00000000", store)


def test_times_on_the_command_line():
    now = datetime(2024, 5, 31, 12, 0, tzinfo=UTC)
    assert index.parse_time("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    assert index.parse_time("2024-05-01T12:30Z") == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert index.parse_time("30d", now=now) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="neither a time"):
        index.parse_time("last tuesday")


# Keeping up, and rebuilding --------------------------------------------------------------------
def test_records_written_without_the_runner_are_found_through_the_chain(store, world):
    record, files = make_record("INC-3", at=T0 + timedelta(days=1), job_ids=["job-new"])
    LocalArchive(store.root).write(record.record_id, files)  # another process, no hook
    assert ids(index.search(store, job_id="job-new")) == [record.record_id]


def test_a_run_is_indexed_when_it_is_saved(home):
    record = runner.run(NOTEBOOKS / "succeeds.ipynb", incident_id="INC-R", job_ids=["job-r1"])
    found = index.search(job_id="job-r1")
    assert ids(found) == [record.record_id] and found[0].findings["critical"] == 1
    assert found[0].summary().location == record.location
    assert (home / "index.sqlite").is_file()


def test_reindex_rebuilds_the_same_index_and_finds_unchained_records(store, world, home):
    before = index.search(store)
    legacy, files = make_record("INC-0", at=T0 - timedelta(days=1), job_ids=["job-old"])
    store._put(legacy.record_id, files)  # archived before there was a chain
    (home / "index.sqlite").unlink()
    done = index.reindex(store)
    assert done.records == 5 and done.unchained == [legacy.record_id]
    assert done.head is not None and done.head.seq == 4
    after = index.search(store)
    assert after[0].record_id == legacy.record_id and after[0].chain_seq is None
    assert after[1:] == before


def test_a_broken_record_json_is_left_out_and_reported(store, world):
    path = Path(world[2].path("record.json"))
    path.chmod(0o644)
    path.write_text("{not json")
    done = index.reindex(store)
    assert done.records == 3 and list(done.unreadable) == [world[2].record_id]


def test_an_index_of_an_unknown_schema_is_refused(home):
    home.mkdir(parents=True)
    with sqlite3.connect(home / "index.sqlite") as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(StorageError, match="schema version 99"):
        Index()


def test_query_where_is_parameterised():
    where, args = Query(job_id="x' OR 1=1 --", tenant="t").where()
    assert "x'" not in where and args == ("x' OR 1=1 --", "t")
