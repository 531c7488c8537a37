"""The postmortem review: the library on records built here, and the review notebook run by
papermill on an archive a real drill leaves (incident runs on the sandbox, a mitigation
applied through the mitigations library between them), with nothing but that archive."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import exportnb_cmd, start_sandbox

from exportnb.archive.store import LocalArchive
from exportnb.core import codec
from exportnb.core.errors import InvalidInput, NotFound
from exportnb.core.findings import record_bundle
from exportnb.core.ids import sha256
from exportnb.mitigation.journal import Journal, JournalEntry, read_journal
from exportnb.mitigation.trail import trail
from exportnb.record.model import FILES, Record, RecordError
from exportnb.review.charts import incident_rate_chart
from exportnb.review.model import (
    across_incidents,
    incident_review,
    last_days,
    latest_incident,
    review_of,
)
from exportnb.review.views import PARTS, REVIEW_MIMETYPE, bundle, review_data
from exportnb.run.parameters import declared

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "postmortem_review.ipynb"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def iso(when: datetime) -> str:
    return codec.format_time(when)


def builder():
    spec = importlib.util.spec_from_file_location(
        "build_review", NOTEBOOK.parent / "build_review.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Records built here ---------------------------------------------------------------------------
def result(kind: str, body: dict[str, Any], step: str = "detection") -> dict[str, Any]:
    return {"cell_index": 3, "schema": 1, "step": step, "type": kind, "result": body}


def finding(code: str, severity: str = "critical") -> dict[str, Any]:
    return {
        "code": code,
        "severity": severity,
        "summary": f"{code} seen",
        "step": "detection",
        "evidence": {},
    }


def declaration(start: datetime) -> dict[str, Any]:
    return result(
        "Declaration", {"incident_start": iso(start), "findings": []}, "immediate_actions"
    )


def detection(points: list[tuple[datetime, int, int]], *codes: str) -> dict[str, Any]:
    rolling = [
        {"minute": iso(m), "total": s + f, "succeeded": s, "failed": f} for m, s, f in points
    ]
    return result(
        "Detection",
        {"threshold": 0.02, "rolling": rolling, "findings": [finding(c) for c in codes]},
    )


def recovery(now: datetime, verdict: str, baseline: float = 0.99, **more: Any) -> dict[str, Any]:
    body = {
        "verdict": verdict,
        "reason": f"{verdict} because",
        "success_rate": 0.5,
        "baseline_rate": baseline,
        "now": iso(now),
        "minutes": [],
        "findings": [],
        **more,
    }
    return result("Recovery", body, "recovery")


def audit(tenants: list[str], files: list[str], actions: list[str]) -> dict[str, Any]:
    return result(
        "AuditSummary",
        {"tenants": tenants, "files": files, "corrective_actions": actions},
        "communication",
    )


def entry(
    seq: int,
    when: datetime,
    kind: str,
    outcome: str,
    action: str = "fallback-bucket",
    operator: str = "dana",
) -> dict[str, Any]:
    return {
        "seq": seq,
        "at": iso(when),
        "operator": operator,
        "kind": kind,
        "action": action,
        "key": f"key-{action}",
        "params": {"bucket": "exports-fallback", "round": 1},
        "outcome": outcome,
        "detail": {},
        "sha256": f"{seq:064x}",
    }


def journal_report(*entries: dict[str, Any], chain_ok: bool = True) -> dict[str, Any]:
    return result(
        "JournalReport",
        {"incident": "INC-7", "entries": list(entries), "chain_ok": chain_ok},
        "mitigations",
    )


def record(
    started: datetime,
    results: list[dict[str, Any]],
    *,
    incident: str = "INC-7",
    alert: dict[str, Any] | None = None,
    operator: str = "dana",
    error: RecordError | None = None,
) -> Record:
    parameters: dict[str, Any] = {"incident_id": incident}
    if alert is not None:
        parameters["alert"] = alert
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    return Record(
        record_id=f"{incident}/{stamp}-{sha256(f'{incident}{stamp}'.encode())[:8]}",
        incident_id=incident,
        status="failed" if error else "succeeded",
        started_at=started,
        ended_at=started + timedelta(seconds=40),
        duration_seconds=40.0,
        operator=operator,
        notebook="export_failure.ipynb",
        job_ids=[],
        parameters=parameters,
        error=error,
        files={},
        versions={},
        results=results,
    )


def webhook(status: str, starts: datetime, ends: datetime | None = None) -> dict[str, Any]:
    item = {
        "status": status,
        "labels": {"alertname": "ExportFailureRate"},
        "startsAt": iso(starts),
        "endsAt": iso(ends) if ends else "0001-01-01T00:00:00Z",
    }
    return {"status": status, "alerts": [item]}


@pytest.fixture
def incident() -> list[Record]:
    """Failures from 12:00, an alert at 12:05, a run at 12:06, the fallback bucket at 12:10
    (a failed try at 12:09 before it), a run at 12:20 (not yet), a run at 12:40 (recovered)."""
    first = record(
        at(6),
        [
            declaration(at(0)),
            detection([(at(4), 10, 0), (at(5), 2, 8)], "failure_rate_high"),
            recovery(at(6.5), "not_yet", 0.99),
            audit(["acme", "globex"], ["s3://b/1"], ["a1"]),
            result(
                "Assessment",
                {
                    "recommendations": [
                        {"action": "retry", "command": "exportctl retry"},
                        {"action": "fallback-bucket", "command": "featurectl set"},
                    ],
                    "findings": [],
                },
                "assessment",
            ),
        ],
        alert=webhook("firing", at(5)),
    )
    second = record(
        at(20),
        [
            declaration(at(1)),
            detection([(at(5), 3, 7), (at(19), 9, 1)], "throttling"),
            recovery(at(20.5), "not_yet", 0.98),
            audit(["globex", "initech"], [], ["a1", "a2"]),
            journal_report(
                entry(1, at(9), "plan", "planned"),
                entry(2, at(9), "result", "failed"),
                entry(3, at(10), "result", "succeeded", operator="sam"),
            ),
        ],
        alert=webhook("firing", at(5)),
        operator="sam",
    )
    third = record(
        at(40),
        [
            declaration(at(1)),
            detection([(at(39), 10, 0)]),
            recovery(at(40.5), "recovered", 0.98),
            journal_report(
                entry(1, at(9), "plan", "planned"),
                entry(2, at(9), "result", "failed"),
                entry(3, at(10), "result", "succeeded", operator="sam"),
                entry(4, at(30), "skip", "already_applied"),
            ),
        ],
    )
    return [third, first, second]  # any order


# The review of one incident -------------------------------------------------------------------
def test_the_timeline_orders_alert_records_mitigations_verdicts_and_the_resolution(incident):
    review = review_of(incident)
    line = [(e.at, e.kind, e.who) for e in review.timeline]
    assert line == [
        (at(0), "start", ""),
        (at(5), "alert", ""),
        (at(6), "record", "dana"),
        (at(6.5), "verdict", ""),
        (at(10), "mitigation", "sam"),
        (at(20), "record", "sam"),
        (at(20.5), "verdict", ""),
        (at(40), "record", "dana"),
        (at(40.5), "verdict", ""),
        (at(40.5), "resolution", ""),
    ]
    assert (
        review.timeline[1].summary == "Alert fired: ExportFailureRate (since 2024-05-01T12:05:00Z)"
    )
    assert [r.version for r in review.records] == [1, 2, 3]
    assert [r.verdict for r in review.records] == ["not_yet", "not_yet", "recovered"]
    assert review.resolved and "recovered because" in review.timeline[-1].summary


def test_times_are_counted_from_when_the_failures_began(incident):
    times = review_of(incident).times
    assert (times.started_at, times.detected_at) == (at(0), at(5))
    assert (times.mitigated_at, times.recovered_at) == (at(10), at(40.5))
    assert (times.to_detect, times.to_mitigate, times.to_recover) == (300.0, 600.0, 2430.0)


def test_a_resolved_alert_before_a_recovered_verdict_is_the_resolution(incident):
    resolved = record(at(30), [declaration(at(1))], alert=webhook("resolved", at(5), at(28)))
    review = review_of([*incident, resolved])
    assert review.times.recovered_at == at(28)
    assert review.timeline[-1].kind == "verdict"  # the later verdict stays on the timeline
    assert [e.summary for e in review.timeline if e.kind == "resolution"] == [
        "Resolved: the alert resolved (ExportFailureRate (since 2024-05-01T12:05:00Z))"
    ]


def test_without_an_alert_detection_is_the_first_record_and_nothing_resolves():
    review = review_of([record(at(6), [declaration(at(0)), recovery(at(6.5), "not_yet")])])
    assert (review.times.detected_at, review.times.to_detect) == (at(6), 360.0)
    assert review.times.mitigated_at is None and review.times.to_recover is None
    assert [e.kind for e in review.timeline] == ["start", "record", "verdict"]
    assert review.alert == "no alert: opened by hand" and not review.resolved


def test_each_applied_mitigation_counts_once_with_its_operator(incident):
    mitigations = review_of(incident).mitigations
    assert [(m.at, m.operator, m.action, m.source) for m in mitigations] == [
        (at(10), "sam", "fallback-bucket", "journal")
    ]
    assert mitigations[0].label == "fallback-bucket (bucket=exports-fallback)"
    assert mitigations[0].record_id == incident[2].record_id  # the first record showing it


def test_mitigations_come_from_a_real_journal_shown_as_the_template_shows_it(tmp_path):
    journal = Journal("INC-8", home=tmp_path)
    journal.append("plan", action="pause-bulk", key="k1", operator="ana", outcome="planned")
    journal.append("result", action="pause-bulk", key="k1", operator="ana", outcome="failed")
    done = journal.append(
        "result", action="pause-bulk", key="k1", operator="ana", outcome="succeeded"
    )
    shown = record_bundle("mitigations", trail("INC-8", home=tmp_path))
    records = [
        record(done.at + timedelta(minutes=m), [{"cell_index": 9, **shown}], incident="INC-8")
        for m in (1, 2)
    ]
    review = review_of(records)
    assert [(m.at, m.operator, m.action, m.key) for m in review.mitigations] == [
        (done.at, "ana", "pause-bulk", "k1")
    ]
    assert review.journal_ok is True


def test_records_without_a_journal_show_the_flags_set_since_the_failures_began():
    flag = {
        "key": "export.fallback_bucket",
        "value": "exports-fallback",
        "set_by": "lee",
        "set_at": iso(at(12)),
        "expires_at": iso(at(42)),
    }
    old = {**flag, "set_at": iso(at(-60)), "value": "exports-eu"}
    records = [
        record(at(20), [declaration(at(0)), recovery(at(20), "not_yet", fallback=flag)]),
        record(
            at(25), [declaration(at(0)), recovery(at(25), "not_yet", fallback=flag, bulk_pause=old)]
        ),
    ]
    review = review_of(records)
    assert [(m.at, m.operator, m.action, m.params, m.source) for m in review.mitigations] == [
        (at(12), "lee", "fallback-bucket", {"bucket": "exports-fallback"}, "platform")
    ]
    assert review.journal_ok is None


def test_a_broken_journal_chain_is_reported(incident):
    broken = record(at(50), [journal_report(entry(1, at(9), "plan", "planned"), chain_ok=False)])
    review = review_of([*incident, broken])
    assert review.journal_ok is False
    assert "hash chain broken" in review.markdown()


def test_the_success_rate_takes_each_minute_from_the_latest_record_holding_it(incident):
    frame = review_of(incident).frame()
    assert list(frame.columns) == ["total", "succeeded", "failed", "rate", "baseline", "record_id"]
    assert [m.to_pydatetime() for m in frame.index] == [at(4), at(5), at(19), at(39)]
    assert list(frame["succeeded"]) == [10, 3, 9, 10]  # 12:05 as the second record saw it
    assert list(frame["baseline"]) == [0.99, 0.98, 0.98, 0.98]
    assert frame["rate"].iloc[1] == pytest.approx(0.3)


def test_tenants_files_actions_follow_ups_and_findings(incident):
    review = review_of(incident)
    assert review.tenants == ["acme", "globex", "initech"]
    assert (review.files, review.corrective_actions) == (["s3://b/1"], ["a1", "a2"])
    assert review.follow_ups == ["retry: exportctl retry"]  # the latest assessment's, not applied
    assert [f.code for f in review.findings] == ["failure_rate_high", "throttling"]
    assert review.threshold == pytest.approx(0.98)


def test_the_review_is_json_and_its_frames_and_markdown_hold_it_all(incident):
    review = review_of(incident)
    doc = json.loads(json.dumps(codec.encode(review), allow_nan=False))
    assert doc["times"]["to_recover"] == 2430.0 and doc["schema"] == "exportnb.review/v1"
    assert list(review.timeline_frame()["kind"])[:2] == ["start", "alert"]
    assert list(review.records_frame()["version"]) == [1, 2, 3]
    text = review.markdown()
    for heading in (
        "# Postmortem: export incident INC-7",
        "## Timeline (UTC)",
        "## Times",
        "## Findings",
        "## Mitigations applied",
        "## Affected tenants (3)",
        "## Affected files (1)",
        "## Corrective actions",
        "## Follow-ups",
    ):
        assert heading in text
    assert "**Resolved** at 2024-05-01 12:40:30 UTC." in text
    assert "| Recovered | 2024-05-01 12:40:30 UTC | 40m30s |" in text
    assert "12:10:00 UTC — fallback-bucket (bucket=exports-fallback), by sam (journal)" in text


def test_a_failed_run_is_a_version_with_its_error(incident):
    failed = record(at(45), [], error=RecordError("ValueError", "boom", 7))
    version = review_of([*incident, failed]).records[-1]
    assert (version.version, version.status, version.error) == (
        4,
        "failed",
        "cell 7: ValueError: boom",
    )


def test_bad_input_is_refused(tmp_path, incident):
    empty = LocalArchive(tmp_path / "archive")
    with pytest.raises(NotFound, match="no records of incident INC-7"):
        incident_review(empty, "INC-7")
    with pytest.raises(NotFound, match="holds no records yet"):
        latest_incident(empty)
    with pytest.raises(InvalidInput, match="incident ID"):
        incident_review(empty, "../etc")
    with pytest.raises(InvalidInput, match="several incidents"):
        review_of([*incident, record(at(1), [], incident="INC-9")])
    with pytest.raises(InvalidInput, match="must be after"):
        across_incidents(empty, at(10), at(0))
    with pytest.raises(InvalidInput, match="timezone-aware"):
        across_incidents(empty, datetime(2024, 5, 1), at(0))
    for days in (0, -1, "30", True):
        with pytest.raises(InvalidInput, match="days"):
            last_days(days)
    with pytest.raises(InvalidInput, match="not an ISO-8601 time"):
        last_days(30, "yesterday")


# Across incidents ------------------------------------------------------------------------------
def archived(archive: LocalArchive, records: list[Record]) -> None:
    for r in records:
        archive.write(r.record_id, {**dict.fromkeys(FILES, b"{}"), "record.json": r.to_json()})


def test_across_incidents_counts_mttr_and_the_most_common_findings(tmp_path, incident):
    store = LocalArchive(tmp_path / "archive")
    other = [
        record(
            at(60 * 24),
            [
                declaration(at(60 * 24 - 10)),
                recovery(at(60 * 24 + 20), "recovered"),
                detection([], "throttling"),
            ],
            incident="INC-8",
        )
    ]
    too_old = [record(at(-60 * 24 * 40), [detection([], "throttling")], incident="INC-1")]
    archived(store, [*incident, *other, *too_old])
    assert latest_incident(store) == "INC-8"
    assert incident_review(store.url, "INC-7").records[0].location.startswith(store.url)
    portfolio = across_incidents(store, *last_days(30, iso(at(60 * 48))))
    assert [i.incident_id for i in portfolio.incidents] == ["INC-7", "INC-8"]
    assert (portfolio.records, portfolio.resolved, portfolio.open) == (4, 2, 0)
    assert portfolio.mttr == pytest.approx((2430.0 + 1800.0) / 2)
    assert portfolio.mttm == 600.0  # only INC-7 was mitigated
    top = portfolio.findings[0]
    assert (top.code, top.incidents, top.severity) == ("throttling", 2, "critical")
    assert list(portfolio.frame()["incident_id"]) == ["INC-7", "INC-8"]
    assert json.dumps(codec.encode(portfolio), allow_nan=False)


# Views and chart --------------------------------------------------------------------------------
def test_every_part_renders_for_people_and_the_summary_carries_the_review(incident):
    review = review_of(incident)
    for part in PARTS:
        if part != "portfolio":
            data = bundle(part, review)
            assert data["text/plain"] and (data.get("text/html") or data.get("text/markdown"))
    timeline = bundle("timeline", review)["text/html"]
    assert (
        "Mitigation applied: fallback-bucket" in timeline
        and "<td style='text-align:left'>sam</td>" in timeline
    )
    nb = {"cells": [{"outputs": [{"data": bundle("summary", review)}]}]}
    assert review_data(nb)["incident-review/v1"]["incident_id"] == "INC-7"
    shown = bundle("summary", review)[REVIEW_MIMETYPE]
    assert shown["kind"] == "incident-review/v1" and shown["type"] == "IncidentReview"
    before_kinds = {k: v for k, v in shown.items() if k != "kind"}  # a review notebook of then
    old = {"cells": [{"outputs": [{"data": {REVIEW_MIMETYPE: before_kinds}}]}]}
    assert review_data(old)["incident-review/v1"]["incident_id"] == "INC-7"
    with pytest.raises(ValueError, match="unknown review part"):
        bundle("nope", review)


def test_the_chart_has_a_title_units_and_a_legend_with_the_markers(incident):
    fig = incident_rate_chart(review_of(incident))
    ax = fig.axes[0]
    assert ax.get_title() == "Export success rate across INC-7 against the baseline"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Time (UTC)", "Success rate (%)")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [
        "Success rate",
        "Baseline (expected)",
        "Threshold 98%",
        "Failures began 12:00",
        "Alert 12:05",
        "Resolved 12:40",
        "fallback-bucket by sam 12:10",
        "Attempts per minute",
    ]
    volume = fig.axes[1]
    totals = review_of(incident).frame()["total"].tolist()
    assert [bar.get_height() for bar in volume.patches] == totals and max(totals) > 0
    empty = incident_rate_chart(review_of([record(at(1), [])]))
    assert "no success rate in the records" in [t.get_text() for t in empty.axes[0].texts]


# The review notebook ---------------------------------------------------------------------------
def test_the_notebook_is_what_its_builder_builds_and_was_executed():
    build = builder()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert build.sources(nb) == build.sources(build.build()), "run notebooks/build_review.py"
    assert set(declared(NOTEBOOK)) == {"incident_id", "archive", "days", "until"}
    assert declared(NOTEBOOK)["days"].default == "30"
    code = [c for c in nb.cells if c.cell_type == "code"][1:]
    assert all(c.outputs for c in code), "every cell after the parameters has output"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert {"incident-review/v1", "portfolio/v1"} <= set(review_data(nb))


@dataclass
class Drill:
    archive: str
    records: list[Record]
    journal: list[JournalEntry]


@pytest.fixture(scope="module")
def drilled(tmp_path_factory) -> Drill:
    """A drill on the default scenario (throttled primary bucket), then the sandbox stops."""
    home = tmp_path_factory.mktemp("review-home")
    box = start_sandbox(home, "default")
    saved = os.environ.get("EXPORTNB_HOME")
    os.environ["EXPORTNB_HOME"] = str(home)
    try:
        build = builder()
        archive = str(home / "archive")
        records = build.drill(archive)
        return Drill(archive, records, read_journal(build.DRILL_INCIDENT))
    finally:
        subprocess.run(
            exportnb_cmd("sandbox", "down"), env=box.env, capture_output=True, timeout=60
        )
        if saved is None:
            os.environ.pop("EXPORTNB_HOME", None)
        else:
            os.environ["EXPORTNB_HOME"] = saved


def test_papermill_runs_the_review_on_nothing_but_the_archive(drilled, tmp_path):
    out = tmp_path / "review.ipynb"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "EXPORTNB_HOME": str(tmp_path / "nothing-here"),
    }  # no sandbox, no platform, no S3
    subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(NOTEBOOK),
            str(out),
            "-k",
            "python3",
            "-p",
            "archive",
            drilled.archive,
            "-p",
            "incident_id",
            "INC-DRILL",
            "--no-progress-bar",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    nb = nbformat.read(out, as_version=4)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    found = review_data(nb)
    review, portfolio = found["incident-review/v1"], found["portfolio/v1"]
    first, second = drilled.records
    assert [r["record_id"] for r in review["records"]] == [first.record_id, second.record_id]
    assert [e["kind"] for e in review["timeline"]] == [
        "start",
        "alert",
        "record",
        "verdict",
        "mitigation",
        "resolution",
        "record",
        "verdict",
    ]
    applied = [e for e in drilled.journal if e.ok]
    assert [(m["action"], m["operator"], m["at"], m["source"]) for m in review["mitigations"]] == [
        (e.action, e.operator, iso(e.at), "journal") for e in applied
    ]
    assert applied and applied[0].operator == "drill-operator"
    assert portfolio["incidents"][0]["incident_id"] == "INC-DRILL"
    assert portfolio["mttr"] == review["times"]["to_recover"]
    check_times(review["times"], drilled, applied[0])


def check_times(times: dict[str, Any], drilled: Drill, applied: JournalEntry) -> None:
    """The times in the executed notebook are what the records and the journal say."""
    first, second = drilled.records
    fired = codec.decode(datetime, first.parameters["alert"]["alerts"][0]["startsAt"])
    ended = codec.decode(datetime, second.parameters["alert"]["alerts"][0]["endsAt"])
    starts = [
        codec.decode(datetime, b["result"]["incident_start"])
        for r in drilled.records
        for b in r.results
        if b.get("type") == "Declaration"
    ]
    began = min([*starts, fired])
    assert times["started_at"] == iso(began)
    assert (times["detected_at"], times["mitigated_at"], times["recovered_at"]) == (
        iso(fired),
        iso(applied.at),
        iso(ended),
    )
    assert times["to_detect"] == pytest.approx((fired - began).total_seconds())
    assert times["to_mitigate"] == pytest.approx((applied.at - began).total_seconds())
    assert times["to_recover"] == pytest.approx((ended - began).total_seconds())
    assert began < fired < first.started_at < applied.at < ended < second.started_at
