"""The impact sweep against the real sandbox (moto behind its fault proxy): every delivery of
a window verified, the same damage ``exportctl verify`` finds on every job, the cap's partial
finding, S3 errors and a timeout leaving deliveries unverified (never passed), bad input
refused; and what the sweep's result feeds: the platform's listing, the assessment's
re-export and notify-tenants, the record's facts and the archive's search."""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import nbformat
import pytest
from archive_records import make_record, save
from conftest import Sandbox, exportnb_cmd, wait_for
from nbclient import NotebookClient

from exportnb.archive import index
from exportnb.archive.store import LocalArchive
from exportnb.core import codec
from exportnb.core.errors import InvalidInput, StorageError
from exportnb.core.findings import CHECKSUM_MISMATCH, MISSING_SEGMENTS
from exportnb.incident.model import AssessmentContext, open_incident, validated
from exportnb.incident.steps import impact
from exportnb.incident.steps.baseline import Baseline
from exportnb.incident.steps.impact import (
    IMPACT_PARTIAL,
    IMPACT_UNSWEPT,
    ImpactSweep,
    SweepProgress,
    impact_sweep,
    print_progress,
)
from exportnb.incident.steps.recovery import RECHECK_SAMPLE, verify_recovery
from exportnb.mitigation.assessment import assess
from exportnb.notebook import display, views
from exportnb.platform import Platform
from exportnb.record.facts import RecordFacts
from exportnb.sandbox.platform import SandboxPlatform

SIZE = ("--size", "40MB", "--chunk-size", "10MB")  # 4 segments each


def submit(sandbox: Sandbox, tenant: str, count: int, *extra: str) -> list[str]:
    args = ("--tenant", tenant, "--count", str(count), *SIZE, *extra)
    out = sandbox.run(*exportnb_cmd("sandbox", "submit", "--json", *args), check=True).stdout
    return list(json.loads(out))


class World:
    """Deliveries made in ``[since, until)``: damaged ones of two tenants, healthy ones of a
    third on two buckets."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.platform = sandbox.platform()
        self.since = datetime.now(UTC)
        faults = [
            sandbox.inject("corrupt", "--tenant", "umbrella"),
            sandbox.inject("missing", "--tenant", "hooli"),
        ]
        try:
            self.corrupt = submit(sandbox, "umbrella", 3)
            self.missing = submit(sandbox, "hooli", 2)
            self.healthy = submit(sandbox, "acme", 3)
            self.eu = submit(sandbox, "stark", 2, "--bucket", "exports-eu")
            wait_for(self.all_delivered, 90)
        finally:
            for fault in faults:
                sandbox.clear(fault)
        self.until = datetime.now(UTC)

    @property
    def submitted(self) -> list[str]:
        return [*self.corrupt, *self.missing, *self.healthy, *self.eu]

    def all_delivered(self) -> bool:
        return all(self.platform.get_job(j).job.status == "succeeded" for j in self.submitted)

    def sweep(self, **how) -> ImpactSweep:
        return impact_sweep(self.platform, since=self.since, until=self.until, **how)

    def exportctl_damage(self, job_ids: list[str]) -> dict[str, list[str]]:
        """``exportctl verify`` on every job: the mismatched or missing keys of each bad one."""
        jobs = [arg for job in job_ids for arg in ("--job", job)]
        out = self.sandbox.run("exportctl", "verify", *jobs, "--output", "json").stdout
        items = json.loads(out)["items"]
        bad = {v["job_id"]: [c["key"] for c in v["checks"] if c["state"] != "ok"] for v in items}
        return {job: keys for job, keys in bad.items() if keys}


@pytest.fixture(scope="module")
def world(sandbox) -> World:
    return World(sandbox)


def delivered_jobs(world: World) -> list[str]:
    """Every job that delivered in the window, as the sandbox's store has it."""
    rows = world.platform.store.db.execute(
        "SELECT DISTINCT job_id FROM manifests WHERE created_at >= ? AND created_at < ?",
        (world.since.timestamp(), world.until.timestamp()),
    )
    return sorted(r[0] for r in rows)


# Every delivery, the same damage as exportctl verify ----------------------------------------
def test_the_sweep_finds_every_damaged_delivery_exportctl_finds(world):
    sweep = world.sweep(reason="a test")
    jobs = delivered_jobs(world)
    assert set(world.submitted) <= set(jobs)  # live traffic may have delivered too
    truth = world.exportctl_damage(jobs)
    assert set(truth) == {*world.corrupt, *world.missing}
    assert sorted(sweep.affected_jobs) == sorted(truth)
    assert sorted(sweep.files) == sorted(
        f"s3://exports-primary/{key}" for keys in truth.values() for key in keys
    )
    assert (sweep.ran, sweep.total, sweep.verified, sweep.listed) == (
        True,
        len(jobs),
        len(jobs),
        len(jobs),
    )
    assert sweep.passed == len(jobs) - len(truth) and not sweep.partial and not sweep.unverified
    assert sweep.coverage == f"{len(jobs)} of {len(jobs)} deliveries verified"
    assert sweep.affected_tenants == ["hooli", "umbrella"]
    assert sweep.affected_buckets == ["exports-primary"]
    assert sweep.counts("tenant") == {"umbrella": 3, "hooli": 2}
    assert sweep.counts("attempt") == {"1": 5}
    times = sorted(c.delivered_at for c in sweep.damaged)
    assert (sweep.first_damaged.delivered_at, sweep.last_damaged.delivered_at) == (
        times[0],
        times[-1],
    )
    assert [f.code for f in sweep.findings] == [CHECKSUM_MISMATCH, MISSING_SEGMENTS]
    mismatch, missing = sweep.findings
    assert sorted(mismatch.evidence["job_ids"]) == sorted(world.corrupt)
    assert sorted(missing.evidence["job_ids"]) == sorted(world.missing)
    assert mismatch.evidence["tenants"] == ["umbrella"] and missing.evidence["tenants"] == ["hooli"]
    assert sweep.segments == 4 * len(jobs)  # each checked, the missing ones too (404)


def test_the_sandbox_lists_deliveries_and_reads_manifests_in_one_query_each(world):
    platform = world.platform
    statements: list[str] = []
    platform.store.db.set_trace_callback(statements.append)
    try:
        listed = platform.deliveries(world.since, world.until, limit=1000)
        assert len(statements) == 1
        manifests = platform.manifests(listed.items)
        assert len(statements) == 2
    finally:
        platform.store.db.set_trace_callback(None)
    assert listed.complete and listed.total == len(listed.items) == len(delivered_jobs(world))
    assert [d.delivered_at for d in listed.items] == sorted(d.delivered_at for d in listed.items)
    for delivery in listed.items:  # the store's manifest is the one S3 holds
        assert manifests[delivery] == platform.manifest(delivery.job_id)
    first = platform.deliveries(world.since, world.until, limit=2)
    assert first.items == listed.items[:2] and first.total == listed.total and not first.complete


def test_the_default_platform_methods_agree_with_the_sandbox(world):
    """``Platform.deliveries``/``manifests`` built on list_jobs and manifest (the command
    platform's for now) find the same deliveries, each job's latest."""
    platform = world.platform
    default = Platform.deliveries(platform, world.since, world.until, limit=1000)
    own = platform.deliveries(world.since, world.until, limit=1000)
    assert sorted(d.job_id for d in default.items) == sorted(d.job_id for d in own.items)
    assert all(d.attempt is None for d in default.items) and default.exact
    read = Platform.manifests(platform, default.items)
    assert all(read[d].job_id == d.job_id for d in default.items)
    wrong = replace(default.items[0], attempt=7)
    assert "latest delivery" in str(Platform.manifests(platform, [wrong])[wrong])


def test_one_bounded_pool_and_one_client_for_every_delivery(world, monkeypatch):
    made: list[int] = []
    real = impact.checksum_client

    def client(platform, *, pool=8):
        made.append(pool)
        return real(platform, pool=pool)

    monkeypatch.setattr(impact, "checksum_client", client)
    seen: set[str] = set()
    sweep = world.sweep(workers=3, progress=lambda _: seen.update(threads()))
    assert made == [3] and sweep.verified == sweep.total > 3
    assert seen and all(name.startswith("sweep") for name in seen) and len(seen) <= 3


def threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith(("sweep", "ThreadPool"))}


# Partial: the cap, S3 errors, a timeout ---------------------------------------------------------
def test_the_cap_gives_a_partial_finding_never_a_silent_sample(world):
    total = len(delivered_jobs(world))
    sweep = world.sweep(cap=3)
    assert (sweep.listed, sweep.verified, sweep.total, sweep.capped) == (3, 3, total, True)
    assert sweep.partial and sweep.coverage == f"partial: 3 of {total} deliveries verified"
    (partial,) = [f for f in sweep.findings if f.code == IMPACT_PARTIAL]
    assert f"partial: 3 of {total} deliveries verified" in partial.summary
    assert "cap of 3 deliveries was reached" in partial.summary
    assert partial.evidence["capped"] and partial.evidence["verified_until"] == codec.encode(
        sweep.verified_until
    )
    oldest = world.platform.deliveries(world.since, world.until, limit=3).items
    assert sweep.verified_until == oldest[-1].delivered_at  # the oldest first
    for finding in sweep.findings:
        if finding.code in (CHECKSUM_MISMATCH, MISSING_SEGMENTS):
            assert finding.evidence["sweep"]["partial"] and "partial" in finding.summary


def test_s3_errors_leave_deliveries_unverified_not_passed(world, monkeypatch):
    monkeypatch.setattr(impact, "BREAKER", 3)  # after 3 errors in a row, stop asking
    fault = world.sandbox.inject("throttle", "--bucket", "exports-eu")
    try:
        sweep = world.sweep(workers=1)
    finally:
        world.sandbox.clear(fault)
    unverified = {c.job_id: c for c in sweep.unverified}
    assert set(unverified) == set(world.eu)
    assert all(c.state == "unverified" and c.ok == 0 for c in unverified.values())
    errors = " ".join(c.error or "" for c in unverified.values())
    assert "SlowDown" in errors and "not checked: 3 requests in a row" in errors
    total = len(delivered_jobs(world))
    assert (sweep.verified, sweep.passed) == (total - 2, total - 2 - 5)
    assert sorted(sweep.affected_jobs) == sorted([*world.corrupt, *world.missing])
    (partial,) = [f for f in sweep.findings if f.code == IMPACT_PARTIAL]
    assert f"partial: {total - 2} of {total} deliveries verified" in partial.summary
    assert sorted(partial.evidence["unverified_job_ids"]) == sorted(world.eu)
    assert "storage or manifest errors" in partial.summary and not sweep.capped


class Forgetful(SandboxPlatform):
    """Answers for no delivery's manifest."""

    def manifests(self, deliveries):
        return {}


class Unreachable(SandboxPlatform):
    """Cannot read manifests at all."""

    def manifests(self, deliveries):
        raise StorageError("GetObject: cannot reach the S3 endpoint", code="EndpointUnreachable")


@pytest.mark.parametrize(
    ("platform_class", "why"),
    [(Forgetful, "returned no manifest"), (Unreachable, "cannot reach the S3 endpoint")],
)
def test_deliveries_whose_manifests_cannot_be_read_are_unverified(world, platform_class, why):
    began = time.monotonic()
    sweep = impact_sweep(
        platform_class(world.sandbox.home), since=world.since, until=world.until, timeout=60
    )
    assert time.monotonic() - began < 30  # not left waiting for the timeout
    assert sweep.verified == sweep.passed == 0 and len(sweep.unverified) == sweep.total
    assert all(why in (c.error or "") for c in sweep.unverified)
    assert sweep.partial and not sweep.timed_out and sweep.damaged == []


def test_a_timeout_leaves_what_is_left_unverified(world):
    sweep = world.sweep(timeout=0.001)
    assert sweep.timed_out and sweep.partial
    assert sweep.verified + len(sweep.unverified) == sweep.listed == sweep.total
    assert sweep.passed + len(sweep.damaged) == sweep.verified
    assert all("timed out" in (c.error or "") for c in sweep.unverified)
    assert any(f.code == IMPACT_PARTIAL and "a timeout" in f.summary for f in sweep.findings)


# Bad input, not running, progress ---------------------------------------------------------------
NOW = datetime(2024, 6, 11, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "how",
    [
        {"cap": 0},
        {"cap": -5},
        {"cap": True},
        {"cap": "10"},
        {"cap": 10**9},
        {"decision": "maybe"},
        {"workers": 0},
        {"timeout": 0},
        {"since": NOW, "until": NOW},
        {"since": NOW.replace(tzinfo=None)},
    ],
)
def test_bad_arguments_are_refused(world, how):
    window = {"since": NOW - timedelta(hours=1), "until": NOW}
    with pytest.raises(InvalidInput):
        impact_sweep(world.platform, **{**window, **how})


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"impact_sweep_cap": 0}, "out of range"),
        ({"impact_sweep_cap": -1}, "out of range"),
        ({"impact_sweep_cap": 2.5}, "whole number"),
        ({"impact_sweep_margin": "soon"}, "not a duration"),
        ({"impact_sweep_margin": "-15m"}, "not a duration"),
        ({"impact_sweep_margin": 15}, "must be a string"),
        ({"impact_sweep": "sometimes"}, "impact_sweep"),
    ],
)
def test_bad_parameters_are_refused_before_anything_is_read(parameters, message, monkeypatch):
    monkeypatch.setenv("EXPORTNB_PLATFORM", "no-such-platform")  # never reached
    with pytest.raises(InvalidInput, match=message):
        open_incident(**parameters)


def test_margins_are_durations():
    assert validated({})["impact_sweep_margin"] == 900.0
    assert validated({"impact_sweep_margin": "1h30m"})["impact_sweep_margin"] == 5400.0
    assert validated({"impact_sweep_margin": "0"})["impact_sweep_margin"] == 0.0


def test_a_sweep_not_needed_says_why_and_one_turned_off_warns(world):
    window = {"since": world.since, "until": world.until}
    quiet = impact_sweep(world.platform, **window, decision="not_needed", reason="nothing")
    assert (quiet.ran, quiet.reason, quiet.findings, quiet.partial) == (False, "nothing", [], False)
    off = impact_sweep(world.platform, **window, decision="turned_off", reason="never, but")
    (unswept,) = off.findings
    assert unswept.code == IMPACT_UNSWEPT and unswept.severity == "warning"
    body = display.bundle("checksums", off)["text/html"]
    assert "Not run: never, but" in body


def test_progress_is_reported_as_it_goes_and_ends_done(world):
    seen: list[SweepProgress] = []
    sweep = world.sweep(progress=seen.append)
    assert seen[0].done == 0 and seen[-1].finished and seen[-1].done == sweep.listed
    assert seen[-1].damaged == len(sweep.damaged) and seen[-1].segments == sweep.segments
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    stream = io.StringIO()
    print_progress(stream)(seen[-1])
    assert stream.getvalue().startswith("\rImpact sweep done:") and stream.getvalue().endswith("\n")


def test_progress_in_a_kernel_is_one_line_updated_in_place():
    """No widgets: one display, updated by its ID, so the saved notebook keeps the last."""
    source = (
        "from exportnb.incident.steps.impact import SweepProgress\n"
        "from exportnb.notebook.display import sweep_progress\n"
        "report = sweep_progress()\n"
        "for done in (0, 40, 80):\n"
        "    report(SweepProgress(done, 80, done // 40, 0, done * 4, done / 10))\n"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    (shown,) = nb.cells[0].outputs
    assert shown.output_type == "display_data"
    assert shown.data["text/plain"] == (
        "Impact sweep done: 80 of 80 deliveries checked (320 segments), 2 damaged, "
        "0 unverified, 8.0 s"
    )
    assert "<em>Impact sweep done" in shown.data["text/html"]


# Who uses it: the assessment, the notebook, the record, the archive ------------------------------
def test_re_export_and_notify_cover_every_damaged_delivery_and_say_when_partial(world):
    context = AssessmentContext(export_bucket="exports-primary", fallback_bucket=None)
    full = assess(world.sweep(), context=context)
    export, notify = full.of_action("re-export")[0], full.of_action("notify-tenants")[0]
    assert sorted(export.params["job_ids"]) == sorted([*world.corrupt, *world.missing])
    assert sorted(notify.params["tenants"]) == ["hooli", "umbrella"]
    assert "may be larger" not in notify.reason
    capped = assess(world.sweep(cap=3), context=context)
    notify = capped.of_action("notify-tenants")[0]
    assert "The impact may be larger" in notify.reason and "partial: 3 of" in notify.reason
    assert IMPACT_PARTIAL in notify.finding_codes


def test_the_view_and_the_record(world):
    sweep = world.sweep(cap=3)
    shown = display.bundle("checksums", sweep, command="exportctl verify --job <job-id>")
    html = shown["text/html"]
    assert "Impact sweep" in html and "partial: 3 of" in html
    assert "Where the damage concentrates" in html
    recorded = shown[display.RESULT_MIMETYPE]
    assert recorded["kind"] == "impact-sweep/v1" and "type" not in recorded
    assert views.render_recorded(recorded) == views.render(sweep)
    assert codec.decode(ImpactSweep, json.loads(json.dumps(recorded["result"]))) == sweep


def test_the_archive_finds_the_swept_jobs_and_tenants(world, home, tmp_path):
    sweep = world.sweep()
    result = display.result_record("checksums", sweep)
    record, files = make_record(
        "INC-SWEEP", job_ids=["job-other"], tenants=["acme"], extra=[result]
    )
    facts = RecordFacts.of(record)
    assert {*world.corrupt, *world.missing} <= set(facts.job_ids)
    assert {"hooli", "umbrella"} <= set(facts.tenants) and set(sweep.files) <= set(facts.files)
    store = LocalArchive(str(tmp_path / "archive"))
    save(store, record, files)
    for job_id in [*world.corrupt, *world.missing]:
        assert [r.record_id for r in index.search(store, job_id=job_id)] == [record.record_id]
    assert [r.record_id for r in index.search(store, tenant="hooli")] == [record.record_id]


def test_recovery_rechecks_a_sample_and_notifies_every_swept_tenant(world):
    sweep = world.sweep()
    baseline = Baseline(world.since, world.until, 7, 0, [], None)
    recovery = verify_recovery(
        world.platform,
        now=world.until,
        baseline=baseline,
        affected_jobs=[*sweep.affected_jobs, *world.healthy],
        impact=sweep,
        sample=2,
    )
    assert (recovery.rechecked, recovery.affected) == (2, len(sweep.affected_jobs) + 3)
    assert [j.job_id for j in recovery.checksums.jobs] == sweep.affected_jobs[:2]
    assert recovery.tenants_to_notify == ["hooli", "umbrella"]
    assert RECHECK_SAMPLE == 20
    assert "a sample: 2 of" in display.bundle("recovery", recovery)["text/html"]
