"""Opening an incident: parameters validated, defaults resolved, the start estimated, and
what each step works on; the immediate actions' state and the mitigation plan."""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from constructed import FALLBACK, NOW, PRIMARY, SECONDARY, make_world, minutes

from exportnb.core import codec
from exportnb.core.errors import ConfigError, InvalidInput
from exportnb.incident.model import (
    COMMS_LEAD_UNASSIGNED,
    PARAMETERS,
    ChartOptions,
    alert_summary,
    incident_start,
    open_incident,
    parameters_of,
    validated,
)
from exportnb.incident.steps.checksums import ChecksumReport, JobCheck, verify_jobs
from exportnb.incident.steps.comms import CommsOptions, status_update
from exportnb.incident.steps.detection import DetectionOptions, detect
from exportnb.incident.steps.impact import ImpactSweep, SweepOptions, impact_sweep
from exportnb.incident.steps.jobstate import JobStateOptions, job_state
from exportnb.incident.steps.network import NetworkOptions, network_path
from exportnb.incident.steps.recovery import RecoveryOptions, verify_recovery
from exportnb.incident.steps.storagehealth import storage_health
from exportnb.mitigation import assessment
from exportnb.mitigation.response import (
    BULK_EXPORTS_RUNNING,
    PAUSE_BULK_COMMAND,
    bulk_pause,
    capture,
    mitigation_plan,
    plan_of,
)
from exportnb.notebook.charts import success_rate_chart
from exportnb.notebook.views import facts
from exportnb.platform import register
from exportnb.sandbox.platform import SandboxPlatform

AT = NOW.replace(second=0)  # the minute boundary just before NOW
WEBHOOK = {
    "status": "firing",
    "commonLabels": {"alertname": "ExportFailureRate"},
    "commonAnnotations": {"summary": "Export job failure rate above 2% over 10 minutes"},
    "alerts": [
        {"labels": {"alertname": "ExportFailureRate"}, "startsAt": "2024-06-11T14:20:00Z"},
        {"labels": {"alertname": "ExportFailureRate"}, "startsAt": "2024-06-11T14:18:00Z"},
    ],
}


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A constructed sandbox store, found the way the notebook finds it: by configuration."""
    for name in (
        "EXPORT_BUCKET",
        "EXPORT_FALLBACK_BUCKET",
        "EXPORT_TARGET_HOST",
        "EXPORTNB_PLATFORM",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EXPORTNB_HOME", str(tmp_path))
    monkeypatch.setenv("EXPORTNB_OPERATOR", "alice")
    w = make_world(tmp_path)
    yield w
    w.platform.close()


def healthy(world, since_minutes: int = 60, until_minutes: int = 0, per_minute: int = 10):
    for m in range(since_minutes, until_minutes, -1):
        world.many(AT - minutes(m) + timedelta(seconds=10), per_minute, tenant="acme")


# Parameters ----------------------------------------------------------------------------
def test_defaults_are_the_documented_parameters():
    values = validated({})
    assert list(values) == list(PARAMETERS)
    assert values["incident_id"] == "INC-unset" and values["alert"] == {}
    assert values["window_minutes"] == 10 and values["failure_threshold"] == 0.02
    assert isinstance(values["now"], datetime) and values["now"].tzinfo is UTC
    assert json.dumps(PARAMETERS)  # every default is a JSON value


def test_parameters_are_picked_from_a_namespace():
    namespace = {"incident_id": "INC-7", "window_minutes": 5, "json": json, "_": None}
    assert parameters_of(namespace) == {"incident_id": "INC-7", "window_minutes": 5}


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"incident": "INC-1"}, "unknown parameter"),
        ({"incident_id": ""}, "incident ID"),
        ({"incident_id": "INC 1; rm -rf"}, "incident ID"),
        ({"incident_id": "../INC-1"}, "incident ID"),
        ({"job_ids": "job-1"}, "list of strings"),
        ({"job_ids": [1, 2]}, "list of strings"),
        ({"window_minutes": 0}, "out of range"),
        ({"window_minutes": 2.5}, "whole number"),
        ({"window_minutes": True}, "must be a number"),
        ({"failure_threshold": 2}, "out of range"),
        ({"failure_threshold": 0}, "out of range"),
        ({"failure_threshold": float("nan")}, "must be a number"),
        ({"latency_slo": -1.0}, "out of range"),
        ({"target_port": 70000}, "out of range"),
        ({"probe_count": 0}, "out of range"),
        ({"probe_interval": 0}, "out of range"),
        ({"probe_grace": 60}, "out of range"),
        ({"mode": "yolo"}, "mode"),
        ({"operator": None}, "must be a string"),
        ({"now": "yesterday"}, "ISO-8601"),
        ({"now": "2024-06-11T14:30:00"}, "time zone"),
        ({"alert": "{not json"}, "not JSON"),
        ({"alert": [1, 2]}, "one JSON object"),
        ({"alert": {"x": float("inf")}}, "JSON values only"),
    ],
)
def test_bad_parameters_are_refused_before_anything_is_read(parameters, message, monkeypatch):
    monkeypatch.setenv("EXPORTNB_PLATFORM", "no-such-platform")  # never reached
    with pytest.raises(InvalidInput, match=message):
        open_incident(**parameters)


def test_values_are_normalised():
    values = validated(
        {
            "now": "2024-06-11T16:30:00+02:00",
            "window_minutes": 5.0,
            "latency_slo": 30,
            "alert": json.dumps(WEBHOOK),
            "job_ids": [" job-1 ", "job-2", "job-1", ""],
            "buckets": ["exports-eu", "exports-eu"],
        }
    )
    assert values["now"] == datetime(2024, 6, 11, 14, 30, tzinfo=UTC)
    assert values["window_minutes"] == 5 and isinstance(values["window_minutes"], int)
    assert values["latency_slo"] == 30.0 and isinstance(values["latency_slo"], float)
    assert values["alert"] == WEBHOOK
    assert values["job_ids"] == ["job-1", "job-2"] and values["buckets"] == ["exports-eu"]


def test_alert_summary():
    assert alert_summary(WEBHOOK) == (
        "firing ExportFailureRate: Export job failure rate above 2% over 10 minutes "
        "(since 2024-06-11T14:18:00Z)"
    )
    assert alert_summary({}) == "no alert: opened by hand"
    single = {"labels": {"alertname": "ExportLatency"}, "status": "resolved"}
    assert alert_summary(single) == "resolved ExportLatency"
    assert alert_summary({"something": "else"}) == "alert unnamed alert"


# Opening ---------------------------------------------------------------------------------
def test_open_incident_resolves_defaults_from_the_platform(world):
    incident = open_incident(incident_id="INC-1", now=NOW.isoformat())
    assert incident.id == "INC-1" and incident.operator == "alice" and incident.mode == "auto"
    assert incident.platform_name == "sandbox"
    assert incident.export_bucket == PRIMARY
    assert incident.fallback_bucket in (SECONDARY, FALLBACK)
    assert incident.target_host == "127.0.0.1" and incident.target_port == 22
    assert incident.now == NOW and incident.window_start == NOW - minutes(10)
    assert incident.success_threshold == pytest.approx(0.98)
    assert incident.alert_summary == "no alert: opened by hand"
    assert incident.buckets_to_check() == [PRIMARY, incident.fallback_bucket]


def test_a_notebook_shows_the_incident_as_a_table_of_what_it_is_judged_on(world):
    incident = open_incident(
        incident_id="INC-1", now=NOW.isoformat(), target_host="<b>x</b>", buckets=["exports-extra"]
    )
    shown = facts(incident.facts())  # what show_incident displays
    assert shown.startswith("<table>") and "datetime.datetime" not in shown
    for text in (
        "INC-1",
        NOW.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "10 min",
        "sandbox",
        f"{PRIMARY}, exports-extra",
        "failure rate 2.0%, latency SLO 60 s",
    ):
        assert text in shown, text
    assert "&lt;b&gt;x&lt;/b&gt;:22" in shown and "<b>x" not in shown


def test_environment_and_parameters_override_the_platform(world, monkeypatch):
    monkeypatch.setenv("EXPORT_BUCKET", "env-bucket")
    monkeypatch.setenv("EXPORT_FALLBACK_BUCKET", FALLBACK)
    monkeypatch.setenv("EXPORT_TARGET_HOST", "env-host")
    incident = open_incident(now=NOW.isoformat(), operator="bob", buckets=["extra"])
    assert incident.operator == "bob"
    assert (incident.export_bucket, incident.fallback_bucket) == ("env-bucket", FALLBACK)
    assert incident.target_host == "env-host"
    assert open_incident(now=NOW.isoformat(), target_host="param-host").target_host == "param-host"
    assert incident.buckets_to_check() == ["env-bucket", "extra", FALLBACK]


def test_a_platform_without_a_target_host_needs_one(world, monkeypatch):
    class NoTarget(SandboxPlatform):
        def info(self):
            return replace(super().info(), target_host=None)

    register("no-target", lambda **_: NoTarget(world.home))
    with pytest.raises(ConfigError, match="target host"):
        open_incident(platform="no-target", now=NOW.isoformat())
    assert open_incident(platform="no-target", target_host="h", now=NOW.isoformat()).target_host


# The incident's start --------------------------------------------------------------------
def test_no_breach_starts_the_window_before_now(world):
    healthy(world)
    start, found = incident_start(world.platform, now=NOW, window_minutes=10, threshold=0.02)
    assert (start, found) == (NOW - minutes(10), False)
    empty = make_world(world.home / "empty")
    assert incident_start(empty.platform, now=NOW, window_minutes=10, threshold=0.02)[1] is False


def test_the_start_is_the_first_failing_minute_of_the_latest_breach(world):
    healthy(world, 60, 25)
    for m in range(25, 0, -1):  # from 25 minutes ago: 3 of 10 fail every minute
        world.many(AT - minutes(m) + timedelta(seconds=10), 7)
        world.many(AT - minutes(m) + timedelta(seconds=20), 3, "failed")
    start, found = incident_start(world.platform, now=NOW, window_minutes=10, threshold=0.02)
    assert found and start == AT - minutes(25)
    incident = open_incident(now=NOW.isoformat())
    assert incident.incident_start == AT - minutes(25) and incident.breach_found
    assert incident.job_state_options() == {"since": AT - minutes(25), "until": NOW}


def test_an_earlier_breach_that_ended_is_still_the_latest(world):
    healthy(world, 90, 0)
    world.many(AT - minutes(70) + timedelta(seconds=30), 10, "failed")  # one bad minute
    start, found = incident_start(world.platform, now=NOW, window_minutes=10, threshold=0.02)
    assert found and start == AT - minutes(70)
    incident = open_incident(now=NOW.isoformat())
    assert incident.history_since == NOW - minutes(120)
    assert incident.detection_options()["history_minutes"] == 120


# What each step works on -----------------------------------------------------------------
def test_jobs_to_verify_and_buckets_to_check(world):
    healthy(world, 30, 0, per_minute=1)
    world.many(AT - minutes(50), 3, tenant="globex")  # delivered within the history
    world.job(AT - minutes(150), tenant="initech")  # delivered before the history: not sampled
    other = world.job(AT - minutes(35), tenant="initech")
    for m in (3, 2, 1):
        world.job(
            AT - minutes(m),
            "failed",
            tenant="globex",
            bucket=SECONDARY,
            error_code="SlowDown",
            logs=2,
        )
    reported = world.job(AT - minutes(40), tenant="initech")
    incident = open_incident(now=NOW.isoformat(), job_ids=[reported, "job-nope"])
    jobs = job_state(world.platform, **incident.job_state_options())
    detection = detect(world.platform, **incident.detection_options())
    assert incident.tenants_involved(jobs, detection) == ["initech", "globex"]
    chosen = incident.checksum_jobs(jobs, detection, per_tenant=2)
    failing = jobs.failing_job_ids
    assert chosen[:2] == [reported, "job-nope"] and chosen[2:5] == failing
    delivered = chosen[5:]
    assert len(delivered) == 3 and delivered[0] == other  # initech's other one; globex: 2
    details = {j: world.platform.get_job(j).job for j in delivered}
    assert all(d.status == "succeeded" for d in details.values())
    assert {d.tenant for d in details.values()} == {"initech", "globex"}
    assert incident.checksum_jobs(jobs, detection, limit=3) == chosen[:3]
    assert incident.buckets_to_check(jobs) == _unique(
        [PRIMARY, SECONDARY, incident.fallback_bucket]
    )
    assert incident.checksum_jobs() == [reported, "job-nope"]  # no involved tenants


def _unique(values):
    return list(dict.fromkeys(v for v in values if v))


def test_the_jobs_chosen_for_a_job_state_are_chosen_once(world):
    healthy(world, 30, 0, per_minute=1)
    world.job(AT - minutes(2), "failed", tenant="globex", error_code="SlowDown")
    incident = open_incident(now=NOW.isoformat())
    jobs = job_state(world.platform, **incident.job_state_options())
    detection = detect(world.platform, **incident.detection_options())
    chosen = incident.checksum_jobs(jobs, detection, per_tenant=2)
    late = world.job(AT - minutes(1), tenant="globex")  # delivered after the choice
    assert incident.checksum_jobs(jobs, detection, per_tenant=2) == chosen
    assert late not in chosen
    again = job_state(world.platform, **incident.job_state_options())  # a new look
    assert late in incident.checksum_jobs(again, detection, per_tenant=2)


def test_affected_jobs_and_options(world):
    incident = open_incident(now=NOW.isoformat(), job_ids=["job-r"], recovery_minutes=20)
    report = ChecksumReport(
        "checksum",
        [
            JobCheck("job-a", "acme", PRIMARY, "failed", 2, ["k1"], []),
            JobCheck("job-b", "acme", PRIMARY, "passed", 3, [], []),
        ],
        [],
    )
    assert incident.affected_jobs(report) == ["job-r", "job-a"]
    assert incident.affected_jobs() == ["job-r"]
    assert incident.recovery_options() == {
        "now": NOW,
        "window_minutes": 20,
        "incident_start": NOW - minutes(10),
    }
    assert incident.recovery_since == NOW - minutes(20)
    assert incident.network_options() == {"port": 22, "count": 10, "interval": 0.05, "grace": 1.0}
    comms = incident.comms_options()
    assert comms["incident_id"] == "INC-unset" and comms["flags"] == []
    context = incident.assessment_context()
    assert context.export_bucket == PRIMARY and context.fallback_bucket == incident.fallback_bucket


def _report(*failed: str) -> ChecksumReport:
    jobs = [JobCheck(j, "acme", PRIMARY, "failed", 2, ["k1"], []) for j in failed]
    return ChecksumReport(
        "checksum", [*jobs, JobCheck("job-b", "acme", PRIMARY, "passed", 3, [], [])], []
    )


@pytest.mark.parametrize(
    ("mode", "reported", "failed", "decision", "reason"),
    [
        ("auto", [], [], "not_needed", "checksums are not in question"),
        ("auto", ["job-r"], [], "run", "customers reported job IDs (job-r)"),
        ("auto", [], ["job-a"], "run", "checksum verification failed for job-a"),
        ("always", [], [], "run", 'asked for (impact_sweep is "always")'),
        ("never", [], [], "not_needed", 'impact_sweep is "never"'),
        ("never", ["job-r"], [], "turned_off", 'is "never", although customers reported'),
        ("never", [], ["job-a"], "turned_off", "although checksum verification failed"),
    ],
)
def test_the_sweep_runs_whenever_checksums_are_in_question(
    world, mode, reported, failed, decision, reason
):
    incident = open_incident(now=NOW.isoformat(), job_ids=reported, impact_sweep=mode)
    options = incident.sweep_options(_report(*failed))
    assert options["decision"] == decision and reason in options["reason"]
    assert options["until"] == NOW and options["cap"] == 5000
    assert incident.sweep_known() == (decision == "run" and not failed)


def test_the_sweep_window_starts_before_the_incident_and_its_first_known_damage(world):
    healthy(world, 30, 0, per_minute=1)
    early = world.job(AT - minutes(45), tenant="globex")  # reported: delivered 45 min ago
    incident = open_incident(
        now=NOW.isoformat(), job_ids=[early, "job-nope"], impact_sweep_margin="5m"
    )
    assert incident.incident_start == NOW - minutes(10)  # no breach: the window's start
    options = incident.sweep_options(_report())
    created = world.platform.get_job(early).job.created_at
    assert options["since"] == created - minutes(5)  # the report is evidence of an earlier start
    quiet = open_incident(now=NOW.isoformat(), impact_sweep="always", impact_sweep_cap=7)
    assert quiet.sweep_options()["since"] == NOW - minutes(10) - minutes(15)
    assert quiet.sweep_options()["cap"] == 7
    shown = facts(quiet.facts())
    assert "always: up to 7 deliveries, from 15m before the incident start" in shown


def test_affected_jobs_include_every_damaged_delivery_of_the_sweep(world):
    incident = open_incident(now=NOW.isoformat(), job_ids=["job-r"])
    sweep = ImpactSweep(True, "test", affected_jobs=["job-a", "job-s1", "job-s2"])
    assert incident.affected_jobs(_report("job-a"), sweep) == ["job-r", "job-a", "job-s1", "job-s2"]
    assert incident.affected_jobs(None, sweep) == ["job-r", "job-a", "job-s1", "job-s2"]


BAGS = [
    ("detection_options", DetectionOptions, detect),
    ("job_state_options", JobStateOptions, job_state),
    ("network_options", NetworkOptions, network_path),
    ("recovery_options", RecoveryOptions, verify_recovery),
    ("comms_options", CommsOptions, status_update),
    ("chart_options", ChartOptions, success_rate_chart),
    ("sweep_options", SweepOptions, impact_sweep),
]


@pytest.mark.parametrize(("method", "bag", "step"), BAGS, ids=[b[0] for b in BAGS])
def test_each_option_bag_is_keyword_arguments_of_its_step(world, method, bag, step):
    """mypy holds ``step(..., **incident.method())`` to the step's signature; this holds
    the bag to it where mypy does not look (the template, the tests)."""
    parameters = inspect.signature(step).parameters
    keywords = {n for n, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert set(bag.__annotations__) <= keywords
    options = getattr(open_incident(now=NOW.isoformat()), method)()
    assert list(options) == list(bag.__annotations__)


def test_declaration_warns_without_a_comms_lead_and_encodes(world):
    incident = open_incident(incident_id="INC-2", now=NOW.isoformat(), alert=WEBHOOK)
    declared = incident.declaration()
    assert [f.code for f in declared.findings] == [COMMS_LEAD_UNASSIGNED]
    encoded = json.loads(json.dumps(codec.encode(declared)))
    assert encoded["incident_id"] == "INC-2" and encoded["declared_at"] == "2024-06-11T14:30:30Z"
    assert encoded["alert_summary"].startswith("firing ExportFailureRate")
    assert open_incident(comms_lead="carol", now=NOW.isoformat()).declaration().findings == []


def test_mitigation_marks_are_the_audit_trail_since_the_start(world):
    incident = open_incident(now=NOW.isoformat())
    world.store.audit(
        actor="bob",
        action="flag.set",
        target="export.fallback_bucket",
        reason="",
        now=(NOW - minutes(5)).timestamp(),
        new=FALLBACK,
    )
    world.store.audit(
        actor="bob",
        action="job.retry",
        target="old",
        reason="",
        now=(NOW - minutes(50)).timestamp(),
    )
    world.store.audit(
        actor="bob",
        action="mitigation.apply",
        target="INC-1/fallback-bucket",
        reason="",
        now=(NOW - minutes(5)).timestamp(),
    )
    # the journal's note of an applied mitigation is no second mark: its change is one
    assert incident.mitigation_marks() == [(NOW - minutes(5), "flag.set export.fallback_bucket")]


# Immediate actions and the mitigation plan -----------------------------------------------
def test_bulk_pause_state_is_read_never_changed(world):
    for n in range(3):
        world.store.create_job(
            job_id=f"bulk-{n}",
            tenant="acme",
            connector="s3",
            bucket=PRIMARY,
            kind="bulk",
            chunk_size=1,
            size=1,
            created_at=NOW.timestamp(),
        )
    state = bulk_pause(world.platform)
    assert not state.paused and state.queued_bulk == 3 and state.running_bulk == 0
    assert state.command == PAUSE_BULK_COMMAND == "exportctl pause bulk" and not state.applied
    assert [f.code for f in state.findings] == [BULK_EXPORTS_RUNNING]
    assert world.platform.get_flag("export.bulk_paused") is None  # nothing applied
    world.platform.pause_bulk(actor="bob", reason="test")
    paused = bulk_pause(world.platform)
    assert paused.paused and paused.flag.set_by == "bob" and paused.findings == []
    assert json.dumps(codec.encode(paused))


def test_capture_keeps_failing_ids_and_samples(world):
    for m in (3, 2):
        world.job(AT - minutes(m), "failed", error_code="RequestTimeout", logs=2)
    incident = open_incident(now=NOW.isoformat(), job_ids=["job-x"])
    jobs = job_state(world.platform, **incident.job_state_options())
    captured = capture(jobs, incident.reported_jobs)
    assert captured.failing_job_ids == jobs.failing_job_ids and len(captured.failing_job_ids) == 2
    assert captured.reported_jobs == ["job-x"] and captured.total_failed == 2
    assert captured.samples and captured.samples[0].logs
    assert json.dumps(codec.encode(captured))


def test_mitigation_plan_lists_commands_and_applies_nothing():
    recommendations = [
        assessment.Recommendation(
            "retry",
            "jobs failed on throttling",
            {"limit": 20, "concurrency": 2},
            ["throttling"],
            "exportctl retry --status failed --limit 20 --concurrency 2",
            2,
        ),
        assessment.Recommendation(
            "fallback-bucket",
            "primary bucket throttled",
            {"bucket": FALLBACK, "ttl": "30m"},
            ["throttling"],
            f"featurectl set export.fallback_bucket {FALLBACK} --ttl 30m",
            1,
        ),
    ]
    result = assessment.Assessment(recommendations=recommendations, findings=[])
    plan = mitigation_plan(result, mode="auto")
    assert [s.action for s in plan.steps] == ["fallback-bucket", "retry"]
    assert plan.applied == [] and "nothing is applied" in plan.note
    assert plan.steps[0].command.startswith("featurectl set export.fallback_bucket")
    assert "bucket=exports-fallback" in plan.steps[0].plan
    assert mitigation_plan(result, mode="interactive").note.startswith("Nothing has been")
    assert json.dumps(codec.encode(plan))


def test_plan_of_unknown_actions_and_long_lists():
    assert plan_of("something-new", {}) == "Run the command below."
    text = plan_of("re-export", {"jobs": [f"j{i}" for i in range(8)]})
    assert text.endswith("(jobs=[j0, j1, j2, j3, j4, …])")


def test_incident_defaults_cover_now(world):
    before = datetime.now(UTC)
    incident = open_incident()
    assert before <= incident.now <= datetime.now(UTC)


# Probes started early (the hand-off to a probe process: test_probes.py) ---------------------
@pytest.mark.integration
def test_the_cells_collect_what_the_incident_started(sandbox, monkeypatch):
    """Against the real sandbox: each step the template collects was measured before the
    cell asked, with the cell's arguments; a re-run cell measures again."""
    for name, value in sandbox.env.items():
        monkeypatch.setenv(name, value)
    incident = open_incident(probe_count=4, probe_interval=0.05, probe_grace=0.5)
    incident.start_probes()
    time.sleep(2.0)  # every probe is done by now
    asked = datetime.now(UTC)
    detection = incident.collect(detect, incident.platform, **incident.detection_options())
    jobs = incident.collect(job_state, incident.platform, **incident.job_state_options())
    storage = incident.collect(
        storage_health, incident.buckets_to_check(jobs), access=incident.storage_access
    )
    checks = incident.collect(
        verify_jobs, incident.platform, incident.checksum_jobs(jobs, detection)
    )
    path = incident.collect(network_path, incident.target_host, **incident.network_options())
    assert max(storage.checked_at, checks.checked_at, path.measured_at) < asked
    assert [c.bucket for c in storage.checks] == incident.buckets_to_check(jobs)
    assert [j.job_id for j in checks.jobs] == incident.checksum_jobs(jobs, detection)
    assert path.destination is not None and path.destination.sent == 4
    again = incident.collect(network_path, incident.target_host, **incident.network_options())
    assert again.measured_at > asked
    other = incident.collect(storage_health, [incident.export_bucket])
    assert other.checked_at > asked and [c.bucket for c in other.checks] == [incident.export_bucket]


@pytest.mark.integration
def test_a_sweep_known_to_run_is_started_early_and_collected_with_progress(sandbox, monkeypatch):
    """Reported job IDs: the sweep starts with the probes; the cell's progress callback is
    not part of the call compared, and reports nothing for a result measured already."""
    for name, value in sandbox.env.items():
        monkeypatch.setenv(name, value)
    incident = open_incident(job_ids=["job-unknown"], probe_count=2, probe_grace=0.1)
    assert incident.sweep_known()
    incident.start_probes()
    assert len(incident.probes.started()) == 7
    jobs = incident.collect(job_state, incident.platform, **incident.job_state_options())
    detection = incident.collect(detect, incident.platform, **incident.detection_options())
    checks = incident.collect(
        verify_jobs, incident.platform, incident.checksum_jobs(jobs, detection)
    )
    time.sleep(1.0)
    asked = datetime.now(UTC)
    seen: list[object] = []
    sweep = incident.collect(
        impact_sweep, incident.platform, **incident.sweep_options(checks), progress=seen.append
    )
    assert sweep.ran and sweep.checked_at < asked and seen == []
    assert "customers reported job IDs (job-unknown)" in sweep.reason
    again = incident.collect(
        impact_sweep, incident.platform, **incident.sweep_options(checks), progress=seen.append
    )
    assert again.checked_at > asked and seen and seen[-1].finished  # measured in the cell
    assert (again.since, again.until, again.total) == (sweep.since, sweep.until, sweep.total)
