"""Periodic updates while an incident is open, and their status updates posted to a Slack
incoming webhook: a real HTTP receiver on loopback standing in for Slack."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import wait_for

from exportnb.archive.store import LocalArchive
from exportnb.core.errors import PlatformError
from exportnb.service import slack
from exportnb.service.process import ServeProcess, write_quick_notebook


class SlackReceiver:
    """An incoming-webhook endpoint: records each POST; answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        posts: list[dict] = []
        self.posts = posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                posts.append(
                    {
                        "path": self.path,
                        "type": self.headers["Content-Type"],
                        "json": json.loads(body),
                    }
                )
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"invalid_payload")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/x"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SlackReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def payload(status="firing"):
    item = {
        "status": status,
        "labels": {"alertname": "ExportFailureRate"},
        "annotations": {},
        "startsAt": "2024-05-01T11:50:00Z",
        "fingerprint": "a1",
    }
    return {
        "version": "4",
        "receiver": "exportnb",
        "status": status,
        "groupKey": "{}:{upd}",
        "alerts": [item],
        "truncatedAlerts": 0,
    }


def test_open_incidents_are_rerun_and_each_update_goes_to_slack(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    notebook = write_quick_notebook(tmp_path / "quick.ipynb")
    with SlackReceiver() as receiver:
        (home / "config.toml").write_text(
            f'[serve]\nnotebook = "{notebook}"\nupdate_interval = "2s"\n'
            f'slack_webhook = "{receiver.url}"\npublic_url = "https://exportnb.example.net/"\n'
        )
        serve = ServeProcess(home).start()
        try:
            incident = serve.post_alert(payload())[1]["incident"]
            wait_for(lambda: len(receiver.posts) >= 2, timeout=90)  # the first run, an update
            serve.post_alert(payload("resolved"))
            wait_for(
                lambda: serve.request("GET", f"/incidents/{incident}")[1]["status"] == "resolved",
                timeout=90,
            )
            wait_for(lambda: len(receiver.posts) >= 3, timeout=30)
            time.sleep(3)  # closed: no update is due any more
            found = serve.request("GET", f"/incidents/{incident}")[1]
        finally:
            serve.stop()
    runs = found["history"]
    reasons = [r["reason"] for r in runs]
    assert reasons[0] == "opened" and reasons[-1] == "resolved"
    assert set(reasons[1:-1]) == {"update"} and len(reasons) >= 3
    assert len(receiver.posts) == len(runs)
    assert [r["notice"] for r in runs] == ["status update posted to Slack"] * len(runs)
    archive = LocalArchive(home / "archive")
    assert archive.record_ids(incident) == [r["record_id"] for r in runs]  # a version per run
    first = receiver.posts[0]
    assert first["type"].startswith("application/json")
    blocks = first["json"]["blocks"]
    assert blocks[0]["type"] == "header" and incident in blocks[0]["text"]["text"]
    assert blocks[1]["text"] == {
        "type": "mrkdwn",
        "text": runs[0]["status_update"].replace(
            f"**Export incident {incident}**", f"*Export incident {incident}*"
        ),
    }
    page = f"https://exportnb.example.net/records/{runs[0]['record_id']}/notebook.html"
    assert f"<{page}|HTML>" in blocks[-1]["elements"][0]["text"]  # a link the reader can open
    assert runs[0]["url"] == page and found["records"][0]["url"] == page
    assert "resolved" in receiver.posts[-1]["json"]["blocks"][0]["text"]["text"]


def test_the_slack_message_is_block_kit_within_slack_limits():
    update = "# Status\n**Bold** and [a link](https://example.com/x)\n- one\n" + "z" * 7000
    message = slack.message(
        "INC-1",
        3,
        "new_alerts",
        status_update=update,
        record_id="INC-1/r",
        record_status="succeeded",
        html="s3://b/INC-1/r/notebook.html",
    )
    blocks = message["blocks"]
    assert blocks[0]["text"]["text"] == "Export incident INC-1: run 3 (new alerts)"
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert all(len(s) <= slack.SECTION_LIMIT for s in sections)
    assert sections[0].startswith("*Status*\n*Bold* and <https://example.com/x|a link>\n• one")
    assert "".join(sections).count("z") == 7000
    assert "HTML: `s3://b/INC-1/r/notebook.html`" in blocks[-1]["elements"][0]["text"]
    failed = slack.message(
        "INC-1",
        1,
        "opened",
        status_update=None,
        record_id=None,
        record_status=None,
        html=None,
        error="the kernel did not start",
    )
    assert "the kernel did not start" in failed["blocks"][1]["text"]["text"]


def test_a_slack_refusal_is_a_platform_error():
    with SlackReceiver(status=400) as receiver:
        with pytest.raises(PlatformError, match="Slack answered 400: invalid_payload"):
            slack.post(receiver.url, {"text": "x"})
        assert receiver.posts[0]["json"] == {"text": "x"}
