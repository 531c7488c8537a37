"""Faults: kill -9 of the service mid-run, a lost attempt that had written its record, and
an S3 archive that goes away (a real moto server, stopped and started again)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from datetime import UTC, datetime

import pytest
from conftest import exportnb_cmd, wait_for
from test_service_metrics import scrape
from test_service_metrics import value as metric_value

from exportnb.archive import chain
from exportnb.archive.store import LocalArchive, S3Archive
from exportnb.sandbox.s3server import MotoServer
from exportnb.service import runs
from exportnb.service.incidents import stamp
from exportnb.service.outbox import OutboxArchive, deliver
from exportnb.service.process import SLEEP_ENV, ServeProcess, free_port, write_quick_notebook
from exportnb.service.queue import Queue, RunSpec
from exportnb.service.settings import ServeSettings


def payload(group, fingerprint="a1", status="firing"):
    item = {
        "status": status,
        "labels": {"alertname": "ExportFailureRate"},
        "annotations": {},
        "startsAt": "2024-05-01T11:50:00Z",
        "fingerprint": fingerprint,
    }
    return {
        "version": "4",
        "receiver": "exportnb",
        "status": status,
        "groupKey": group,
        "alerts": [item],
        "truncatedAlerts": 0,
    }


def history(server, incident):
    return server.request("GET", f"/incidents/{incident}")[1]["history"]


def run_state(server, incident):
    return history(server, incident)[0]["state"]


def configured_home(tmp_path, extra=""):
    home = tmp_path / "home"
    notebook = write_quick_notebook(tmp_path / "quick.ipynb")
    home.mkdir()
    (home / "config.toml").write_text(f'[serve]\nnotebook = "{notebook}"\n{extra}')
    return home


def workers_of(pid):
    listing = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True)
    return [line for line in listing.stdout.splitlines() if f"--parent {pid}" in line]


def test_kill_9_mid_run_then_restart_runs_each_run_once(tmp_path):
    home = configured_home(tmp_path, "workers = 1\n")
    first = ServeProcess(home, env={SLEEP_ENV: "4"}).start()
    try:
        midway = first.post_alert(payload("{}:{midway}"))[1]["incident"]
        waiting = first.post_alert(payload("{}:{waiting}"))[1]["incident"]
        wait_for(lambda: run_state(first, midway) == "running", timeout=30)
        time.sleep(1.5)  # the kernel is up, in the sleeping cell
        assert run_state(first, waiting) == "queued"  # one worker: it waits in the queue
        first.kill()
        assert first.process is not None
        wait_for(lambda: not workers_of(first.process.pid), timeout=15)  # died with serve
    finally:
        first.kill()
    archive = LocalArchive(home / "archive")
    assert archive.record_ids(midway) == [] and archive.record_ids(waiting) == []
    second = ServeProcess(home, port=first.port, env={SLEEP_ENV: "0"}).start()
    try:
        for incident in (midway, waiting):
            wait_for(lambda i=incident: run_state(second, i) == "succeeded", timeout=90)
        [cut_short] = history(second, midway)
        [queued] = history(second, waiting)
    finally:
        second.stop()
    assert cut_short["attempt"] == 2 and queued["attempt"] == 1
    assert archive.record_ids(midway) == [cut_short["record_id"]]
    assert archive.record_ids(waiting) == [queued["record_id"]]


@pytest.fixture
def queue(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPORTNB_HOME", str(tmp_path / "home"))
    notebook = write_quick_notebook(tmp_path / "quick.ipynb")
    return Queue(ServeSettings(notebook=str(notebook), cell_timeout=60))


def dead_worker():
    """The identity of a worker process that has exited."""
    process = subprocess.Popen(["sleep", "30"])
    start = runs._started(process.pid)
    process.kill()
    process.wait()
    return {"host": socket.gethostname(), "pid": process.pid, "start": start}


@pytest.mark.parametrize("marker", [True, False], ids=["record-key", "archive-scan"])
def test_a_lost_attempt_that_wrote_its_record_is_adopted_not_rerun(queue, marker):
    incident = "INC-20240501-adopted"
    alert = payload("{}:{adopted}")
    lost = RunSpec(incident, 1, 1, "opened", alert, [])
    claim = {**dead_worker(), "at": stamp(datetime.now(UTC)), "until": time.time() - 1}
    assert queue.claim(lost, claim)
    assert not queue.claim(lost, claim)  # a duplicate delivery finds it taken
    assert runs.gone(claim) and not runs.gone({**runs.identity(), "until": 0})
    written = runs.execute(lost, queue)  # what the lost worker did before it died
    if not marker:
        queue.huey.delete(f"record:{lost.key}")
    runs.perform(RunSpec(incident, 1, 2, "opened", alert, []), queue)
    done = queue.get(f"done:{lost.key}")
    assert done is not None and done["record_id"] == written.record_id
    assert done["attempt"] == 2 and done["state"] == "succeeded"
    assert OutboxArchive().record_ids(incident) == [written.record_id]


def test_the_archive_going_away_keeps_records_in_the_outbox_until_it_returns(tmp_path, monkeypatch):
    port = free_port()
    moto, back = MotoServer(port=port), MotoServer(port=port)
    moto.start()
    env = {
        "AWS_ENDPOINT_URL": moto.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    url = "s3://exportnb-records/archive"
    home = configured_home(tmp_path, f'outbox_interval = "1s"\n[archive]\nurl = "{url}"\n')
    serve = None
    try:
        target = S3Archive(url)
        target.s3.create_bucket(Bucket="exportnb-records")
        serve = ServeProcess(home, env=env).start()
        moto.stop()
        incident = serve.post_alert(payload("{}:{outage}"))[1]["incident"]
        wait_for(lambda: run_state(serve, incident) == "succeeded", timeout=90)
        [run] = history(serve, incident)
        assert "kept in the outbox" in run["notice"]
        assert run["location"].startswith(f"{url}/{incident}/")
        outbox = OutboxArchive(target, home / "service" / "outbox")
        assert outbox.kept_ids(incident) == [run["record_id"]]
        assert deliver(outbox).error  # still unreachable: kept, nothing lost
        kept = scrape(serve)  # the worker kept it; serve's /metrics sees it
        assert metric_value(kept, "exportnb_serve_outbox_depth", kind="records") == 1
        back.start()  # the archive returns (moto keeps its buckets)
        wait_for(lambda: not outbox.kept_ids(incident), timeout=30)
        delivered = scrape(serve)
        assert metric_value(delivered, "exportnb_serve_outbox_depth", kind="records") == 0
        assert target.record_ids(incident) == [run["record_id"]]
        stored = target.show(run["record_id"])
        assert stored.parameters["alert"]["groupKey"] == "{}:{outage}"
        assert [link.entry.record_id for link in chain.links(target) if link.entry] == [
            run["record_id"]
        ]
        listed = subprocess.run(
            exportnb_cmd("archive", "list", "--json"),
            env=serve.env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert [r["record_id"] for r in json.loads(listed.stdout)] == [run["record_id"]]
    finally:
        if serve is not None:
            serve.stop()
        moto.stop()
        back.stop()
