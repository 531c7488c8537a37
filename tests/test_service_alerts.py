"""The webhook payload (exportnb.service.alerts) and the incident store's dedupe
(exportnb.service.incidents), on a real SQLite file."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import pytest

from exportnb.core.errors import InvalidInput, NotFound
from exportnb.core.ids import check_incident_id
from exportnb.service import alerts
from exportnb.service.incidents import IncidentStore, Outcome, incident_id_for

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def alert(fingerprint="a1", status="firing", **labels):
    return {
        "status": status,
        "labels": {"alertname": "ExportFailureRate", **labels},
        "annotations": {"summary": "failure rate above 2%"},
        "startsAt": "2024-05-01T11:50:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }


def payload(*items, status="firing", group='{}:{runbook="export-failure"}'):
    return {
        "version": "4",
        "receiver": "exportnb",
        "status": status,
        "groupKey": group,
        "alerts": list(items) or [alert()],
        "groupLabels": {"runbook": "export-failure"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://am:9093",
        "truncatedAlerts": 0,
    }


def note(*items, **options):
    return alerts.validate(payload(*items, **options))


# The payload ------------------------------------------------------------------------------
def test_a_payload_reads_into_frozen_dataclasses_and_back():
    doc = payload(alert("a1"), alert("b2", status="resolved"))
    read = alerts.validate(doc)
    assert read.firing == frozenset({"a1"})
    assert read.to_json() == doc
    with pytest.raises(AttributeError):
        read.status = "resolved"  # type: ignore[misc]


def test_unknown_fields_are_dropped_and_a_missing_fingerprint_is_derived():
    item = alert()
    del item["fingerprint"]
    doc = {**payload(item), "extra": {"deep": [1, 2, 3]}}
    read = alerts.validate(doc)
    assert "extra" not in read.to_json()
    assert alerts.FINGERPRINT.match(read.alerts[0].fingerprint)
    assert alerts.validate(doc).alerts[0].fingerprint == read.alerts[0].fingerprint


def test_job_ids_come_from_labels_and_annotations_split_on_commas_and_spaces():
    first = alert("a1", job_id="job-0123456789ab")
    second = alert("b2", job_ids="job-1, job-2 job-0123456789ab")
    second["annotations"]["job_ids"] = "job-3"
    assert note(first, second).job_ids() == ["job-0123456789ab", "job-1", "job-2", "job-3"]
    assert note(alert()).job_ids() == []


@pytest.mark.parametrize(
    "change, where",
    [
        (lambda d: d.update(status="pending"), "status"),
        (lambda d: d.update(version="3"), "version"),
        (lambda d: d.update(alerts=[]), "alerts"),
        (lambda d: d.update(alerts={"0": alert()}), "alerts"),
        (lambda d: d.update(groupKey=""), "groupKey"),
        (lambda d: d.update(groupKey=["a"]), "groupKey"),
        (lambda d: d.update(truncatedAlerts=-1), "truncatedAlerts"),
        (lambda d: d.update(truncatedAlerts=True), "truncatedAlerts"),
        (lambda d: d["alerts"][0].update(labels={"a": 1}), "alerts[0].labels.a"),
        (lambda d: d["alerts"][0].update(labels={"a": {"b": "c"}}), "alerts[0].labels.a"),
        (lambda d: d["alerts"][0].update(labels=["x"]), "alerts[0].labels"),
        (lambda d: d["alerts"][0].update(annotations=None), "alerts[0].annotations"),
        (lambda d: d["alerts"][0].update(startsAt="yesterday"), "alerts[0].startsAt"),
        (lambda d: d["alerts"][0].update(startsAt=1714564800), "alerts[0].startsAt"),
        (lambda d: d["alerts"][0].update(fingerprint="../../etc"), "alerts[0].fingerprint"),
        (lambda d: d["alerts"][0].update(status=None), "alerts[0].status"),
        (lambda d: d["alerts"][0]["labels"].update(job_id="job 1; rm -rf /"), "job_id"),
        (lambda d: d["alerts"][0]["labels"].update(job_id="$(reboot)"), "job_id"),
        (lambda d: d["alerts"][0]["labels"].update(x="\ud800"), "alerts[0].labels.x"),
        (lambda d: d["alerts"][0]["labels"].update(x="v" * 70000), "alerts[0].labels.x"),
    ],
)
def test_a_bad_payload_is_refused_with_where(change, where):
    doc = copy.deepcopy(payload())
    change(doc)
    with pytest.raises(InvalidInput) as caught:
        alerts.validate(doc)
    assert where in caught.value.message


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe", b"NaN", b"[1, Infinity]"])
def test_a_body_that_is_not_json_is_refused(body):
    with pytest.raises(InvalidInput, match="not"):
        alerts.decode(body)


def test_deep_nesting_and_non_objects_are_refused():
    with pytest.raises(InvalidInput, match="nested too deeply"):
        alerts.decode(b"[" * 200_000 + b"]" * 200_000)
    deep: dict = {}
    for _ in range(50):
        deep = {"x": deep}
    with pytest.raises(InvalidInput, match="payload: must be a JSON object"):
        alerts.validate([payload()])
    assert "x" not in alerts.validate({**payload(), "x": deep}).to_json()


def test_too_many_alerts_are_refused_before_they_are_read():
    many = [alert(f"f{i}") for i in range(1001)]
    with pytest.raises(InvalidInput, match="1001 alerts in one payload; at most 1000"):
        alerts.validate(payload(*many))
    assert len(alerts.validate(payload(*many[:1000])).alerts) == 1000


def test_hostile_label_values_are_kept_verbatim_as_strings():
    nasty = "\"'; rm -rf / #$(touch /tmp/pwned)`id`\n\x00 ünï 🔥 {{7*7}} %s"
    read = note(alert(summary=nasty))
    assert read.alerts[0].labels["summary"] == nasty
    assert json.loads(json.dumps(read.to_json()))["alerts"][0]["labels"]["summary"] == nasty


def test_a_payload_too_large_for_a_notebook_parameter_is_refused():
    item = alert()
    item["annotations"] = {f"a{i}": "x" * 60000 for i in range(20)}
    with pytest.raises(InvalidInput, match="as a notebook parameter"):
        alerts.validate(payload(item))


# Incidents and dedupe -------------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    found = IncidentStore(tmp_path / "incidents.db")
    yield found
    found.close()


def test_incident_ids_are_derived_from_the_group_and_valid_record_ids():
    first = incident_id_for('{}:{runbook="export-failure"}', NOW)
    assert first == incident_id_for('{}:{runbook="export-failure"}', NOW)
    assert first.startswith("INC-20240501-") and check_incident_id(first)
    assert incident_id_for("{}:{other}", NOW) != first
    assert incident_id_for('{}:{runbook="export-failure"}', NOW, 1) == first + "-2"


def test_one_incident_per_group_repeat_is_a_heartbeat(store):
    opened = store.receive(note(alert("a1")), NOW)
    assert (opened.action, opened.run) == ("queued", 1)
    again = store.receive(note(alert("a1")), NOW + timedelta(minutes=5))
    assert (again.incident, again.action, again.run) == (opened.incident, "heartbeat", None)
    other = store.receive(note(alert("a1"), group="{}:{other}"), NOW)
    assert other.incident != opened.incident
    incident = store.incident(opened.incident)
    assert (incident.notifications, incident.heartbeats, len(incident.runs)) == (2, 1, 1)


def test_a_new_fingerprint_is_a_new_run_of_the_same_incident(store):
    opened = store.receive(note(alert("a1")), NOW)
    joined = store.receive(note(alert("a1"), alert("b2", alertname="ExportLatency")), NOW)
    assert (joined.incident, joined.action, joined.new_alerts) == (opened.incident, "queued", 1)
    # run 1 has not started: the new alert joins it rather than adding a run
    assert joined.run == 1
    [run] = store.startable()
    assert len(run.alert["alerts"]) == 2
    store.mark([run], "queued", NOW, attempt=1)
    later = store.receive(note(alert("a1"), alert("b2"), alert("c3")), NOW)
    assert later.run == 2
    assert store.startable() == []  # run 1 is queued: run 2 waits for it
    store.finish(run, Outcome("succeeded", record_id="INC/x"), NOW)
    assert [r.number for r in store.startable()] == [2]


def test_resolved_runs_a_final_run_then_closes(store):
    opened = store.receive(note(alert("a1")), NOW)
    [first] = store.startable()
    store.mark([first], "queued", NOW, attempt=1)
    store.finish(first, Outcome("succeeded"), NOW)
    resolved = store.receive(note(alert("a1", status="resolved"), status="resolved"), NOW)
    assert (resolved.incident, resolved.action, resolved.run) == (opened.incident, "resolved", 2)
    assert store.incident(opened.incident).status == "resolving"
    again = store.receive(note(alert("a1", status="resolved"), status="resolved"), NOW)
    assert again.action == "heartbeat"
    [final] = store.startable()
    assert final.reason == "resolved"
    store.mark([final], "queued", NOW, attempt=1)
    store.finish(final, Outcome("failed", record_id="INC/y"), NOW)
    assert store.incident(opened.incident).status == "resolved"
    reopened = store.receive(note(alert("a1")), NOW)
    assert reopened.incident == opened.incident + "-2" and reopened.action == "queued"
    assert store.receive(note(status="resolved", group="{}:{never}"), NOW).action == "ignored"


def test_open_incidents_get_an_update_run_when_due(store):
    store.receive(note(alert("a1")), NOW)
    [run] = store.startable()
    store.mark([run], "queued", NOW, attempt=1)
    assert store.schedule_updates(NOW, 900) == []  # a run is active
    store.finish(run, Outcome("succeeded"), NOW)
    assert store.schedule_updates(NOW + timedelta(minutes=14), 900) == []
    [(incident, number)] = store.schedule_updates(NOW + timedelta(minutes=15), 900)
    assert number == 2 and store.incident(incident).runs[-1].reason == "update"
    assert store.schedule_updates(NOW + timedelta(minutes=30), 900) == []  # one waits already


def test_unknown_incident_is_not_found(store):
    with pytest.raises(NotFound):
        store.incident("INC-nope")
