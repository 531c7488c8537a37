"""Scale-out: the queue on a real Redis server, `exportnb serve --workers 0` taking the
webhooks, and an `exportnb worker` with a home of its own (another machine, as far as it
knows) executing the runs into the shared archive."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import need, wait_for

from exportnb.archive.store import LocalArchive
from exportnb.service.process import ServeProcess, free_port, write_quick_notebook


@pytest.fixture
def redis_url(tmp_path):
    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    wait_for(lambda: _answers(client), timeout=15)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(10)


def _answers(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def test_runs_go_through_redis_to_a_worker_elsewhere(tmp_path, redis_url):
    notebook = write_quick_notebook(tmp_path / "quick.ipynb")
    archive = tmp_path / "shared-archive"
    config = (
        f'[serve]\nqueue = "{redis_url}"\nnotebook = "{notebook}"\n[archive]\nurl = "{archive}"\n'
    )
    serve_home, worker_home = tmp_path / "serve", tmp_path / "worker"
    for home in (serve_home, worker_home):
        home.mkdir()
        (home / "config.toml").write_text(config)
    serve = ServeProcess(serve_home, args=("--workers", "0")).start()
    worker = None
    try:
        payload = {
            "version": "4",
            "status": "firing",
            "receiver": "exportnb",
            "groupKey": "{}:{redis}",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "ExportLatencyHigh"},
                    "startsAt": "2024-05-01T12:00:00Z",
                    "fingerprint": "f00d",
                }
            ],
        }
        incident = serve.post_alert(payload)[1]["incident"]
        run = lambda: serve.request("GET", f"/incidents/{incident}")[1]["history"][0]  # noqa: E731
        wait_for(lambda: run()["state"] == "queued")
        time.sleep(1)
        assert run()["state"] == "queued"  # no worker yet: the message waits in Redis
        worker = subprocess.Popen(
            [sys.executable, "-m", "exportnb.cli", "worker", "--workers", "1"],
            env={**serve.env, "EXPORTNB_HOME": str(worker_home)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: run()["state"] == "succeeded", timeout=90)
        assert LocalArchive(archive).record_ids(incident) == [run()["record_id"]]
        assert not (serve_home / "service" / "queue.db").exists()
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGINT)
            worker.wait(30)
        serve.stop()
