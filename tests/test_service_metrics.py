"""`GET /metrics` of `exportnb serve` over real HTTP: a real uvicorn on loopback, a real
worker (embedded, or `exportnb worker` as a process of its own), real kernels running a
quick notebook. What the workers did is read from the state they share with serve."""

from __future__ import annotations

import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import exportnb_cmd, wait_for
from prometheus_client.parser import text_string_to_metric_families

from exportnb.service.incidents import IncidentStore
from exportnb.service.metrics import ServiceMetrics
from exportnb.service.process import ServeProcess, write_quick_notebook
from exportnb.service.queue import OUTBOX_KEY, Queue
from exportnb.service.settings import ServeSettings

TOKEN = "metrics-token"


def scrape(serve: ServeProcess) -> dict[tuple[str, frozenset], float]:
    """Every sample of ``/metrics``: ``(name, labels) -> value``."""
    status, text = serve.request("GET", "/metrics")
    assert status == 200, text
    return samples(text)


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def alert(group: str, fingerprint: str = "a1") -> dict:
    item = {
        "status": "firing",
        "labels": {"alertname": "ExportFailureRate"},
        "startsAt": "2024-05-01T11:50:00Z",
        "fingerprint": fingerprint,
    }
    return {"version": "4", "status": "firing", "groupKey": group, "alerts": [item]}


def configured_home(tmp_path: Path, extra: str = "") -> Path:
    home = tmp_path / "home"
    home.mkdir()
    notebook = write_quick_notebook(tmp_path / "quick.ipynb")
    (home / "config.toml").write_text(f'[serve]\nnotebook = "{notebook}"\n{extra}')
    return home


def state_of(serve: ServeProcess, incident: str) -> str:
    return serve.request("GET", f"/incidents/{incident}")[1]["history"][0]["state"]


def test_metrics_need_the_credentials_and_are_prometheus_text(tmp_path):
    serve = ServeProcess(configured_home(tmp_path), token=TOKEN, args=("--workers", "0")).start()
    try:
        request = urllib.request.Request(serve.url + "/metrics")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
        request.add_header("Authorization", f"Bearer {TOKEN}")
        with urllib.request.urlopen(request, timeout=10) as answer:
            kind = answer.headers["Content-Type"]
            found = samples(answer.read().decode())
    finally:
        serve.stop()
    assert kind.startswith("text/plain; version=0.0.4")
    for source in ("store", "queue", "outbox"):
        assert value(found, "exportnb_serve_source_up", source=source) == 1
    assert value(found, "exportnb_serve_queue_depth") == 0
    for state in ("waiting", "queued", "running", "succeeded", "failed", "error"):
        assert value(found, "exportnb_serve_runs", state=state) == 0  # every state, from 0
    assert value(found, "exportnb_serve_outbox_depth", kind="records") == 0
    assert value(found, "exportnb_serve_outbox_depth", kind="slack_updates") == 0
    assert value(found, "exportnb_serve_slack_failures_total", reason="unreachable") == 0


def test_runs_of_a_separate_worker_process_show_in_the_metrics_of_serve(tmp_path, monkeypatch):
    """serve with no embedded worker; `exportnb worker` runs the notebook in a process of
    its own. Its runs, their durations and the queue are read from the shared state, and
    outlive a restart of serve (its own counters start again)."""
    home = configured_home(tmp_path, 'outbox_interval = "1s"\n')
    monkeypatch.setenv("EXPORTNB_HOME", str(home))
    serve = ServeProcess(home, token=TOKEN, args=("--workers", "0")).start()
    worker = None
    try:
        incident = serve.post_alert(alert("{}:{metrics}"))[1]["incident"]
        assert serve.post_alert({"status": "firing"})[0] == 422
        wait_for(lambda: state_of(serve, incident) == "queued", timeout=30)
        waiting = scrape(serve)
        worker = subprocess.Popen(
            exportnb_cmd("worker", "--workers", "1"), env=serve.env, stdin=subprocess.DEVNULL
        )
        wait_for(lambda: state_of(serve, incident) == "succeeded", timeout=90)
        ran = scrape(serve)
        reports = wait_for(lambda: Queue(ServeSettings()).outbox_reports(), timeout=30)
        serve.stop()
        serve.start()
        after_restart = scrape(serve)
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGINT)
            worker.wait(60)
        serve.stop()
    assert value(waiting, "exportnb_serve_alerts_received_total", status="accepted") == 1
    assert value(waiting, "exportnb_serve_alerts_received_total", status="refused") == 1
    assert value(waiting, "exportnb_serve_queue_depth") == 1
    assert value(waiting, "exportnb_serve_runs", state="queued") == 1
    assert value(waiting, "exportnb_serve_incidents", status="open") == 1

    assert value(ran, "exportnb_serve_queue_depth") == 0
    assert value(ran, "exportnb_serve_runs", state="queued") == 0
    assert value(ran, "exportnb_serve_runs", state="succeeded") == 1
    assert value(ran, "exportnb_serve_runs_finished_total", state="succeeded") == 1
    assert value(ran, "exportnb_serve_runs_finished_total", state="failed") == 0
    count = value(ran, "exportnb_serve_run_duration_seconds_count", state="succeeded")
    total = value(ran, "exportnb_serve_run_duration_seconds_sum", state="succeeded")
    inf = value(ran, "exportnb_serve_run_duration_seconds_bucket", state="succeeded", le="+Inf")
    assert count == inf == 1 and total is not None and 0 < total < 90

    assert value(after_restart, "exportnb_serve_runs_finished_total", state="succeeded") == 1
    assert value(after_restart, "exportnb_serve_run_duration_seconds_count", state="succeeded") == 1
    assert value(after_restart, "exportnb_serve_alerts_received_total", status="accepted") == 0
    assert list(reports.values()) == [0]  # the worker's delivery loop said: nothing kept


def test_records_kept_by_workers_on_other_hosts_are_counted_from_their_reports(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("EXPORTNB_HOME", str(tmp_path))
    queue = Queue(ServeSettings())
    store = IncidentStore(tmp_path / "incidents.db")
    try:
        metrics = ServiceMetrics(store.path, queue, tmp_path / "outbox")
        queue.report_outbox(2)  # this host: its folder is counted instead (empty here)
        queue.put(OUTBOX_KEY, {**queue.get(OUTBOX_KEY), "worker-b": {"records": 3, "at": 0}})
        found = samples(metrics.render().decode())
    finally:
        store.close()
    assert value(found, "exportnb_serve_outbox_depth", kind="records") == 3
