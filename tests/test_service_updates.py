"""Periodic updates while an incident is open, and their status updates posted to a Slack
incoming webhook: a real HTTP receiver on loopback standing in for Slack, answering 429,
500, 502, 400... as told, or not there at all (connection refused)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import exportnb_cmd, wait_for
from test_service_metrics import scrape, value

from exportnb.archive.store import LocalArchive
from exportnb.core.errors import PlatformError
from exportnb.service import alerts, slack
from exportnb.service.incidents import IncidentStore, Outcome
from exportnb.service.outbox import POSTED, deliver_updates
from exportnb.service.process import ServeProcess, free_port, write_quick_notebook

QUICK = slack.RetryPolicy(retries=3, backoff=0.05, timeout=5)
"""Short waits between retries, as the tests' config.toml says with slack_backoff."""


SAID = {200: b"ok", 400: b"invalid_payload", 429: b"rate_limited", 500: b"server_error"}


class SlackReceiver:
    """An incoming-webhook endpoint on loopback: records each POST (with the status it
    answered); answers ``script`` first, one ``(status, headers)`` per POST, then
    ``status``."""

    def __init__(self, status: int = 200, script=(), port: int = 0) -> None:
        posts: list[dict] = []
        self.posts = posts
        queued = list(script)
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    answer, headers = queued.pop(0) if queued else (status, {})
                    posts.append(
                        {
                            "path": self.path,
                            "type": self.headers["Content-Type"],
                            "json": json.loads(body),
                            "status": answer,
                            "at": time.monotonic(),
                        }
                    )
                self.send_response(answer)
                for name, said in headers.items():
                    self.send_header(name, said)
                self.end_headers()
                self.wfile.write(SAID.get(answer, b"error"))

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/x"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def accepted(self) -> list[dict]:
        """The posts answered 200: what Slack took."""
        return [p for p in self.posts if p["status"] == 200]

    def __enter__(self) -> SlackReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def payload(status="firing", group="{}:{upd}"):
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
        "groupKey": group,
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
            "slack_allow_http_loopback = true\n"
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


# What slack-sdk's retry handlers do, status by status --------------------------------------
def test_a_429_waits_its_retry_after_then_a_500_is_retried_then_slack_takes_it():
    script = [(429, {"Retry-After": "1"}), (500, {})]
    with SlackReceiver(script=script) as receiver:
        answer = slack.send(slack.client(receiver.url, QUICK), {"text": "x"})
    assert answer.accepted and answer.status == 200
    assert [p["status"] for p in receiver.posts] == [429, 500, 200]
    first, second, third = (p["at"] for p in receiver.posts)
    assert 1.0 <= second - first < 2.5  # Retry-After: 1, plus up to 1 s of the SDK's jitter
    assert third - second < 1.0  # slack_backoff: 50 ms, plus as much jitter at most


@pytest.mark.parametrize(
    "script, posts, reason",
    [
        ([(500, {})] * 3, 3, "server_error"),  # retried, twice
        ([(503, {})] * 3, 3, "server_error"),
        ([(502, {})], 1, "server_error"),  # ServerErrorRetryHandler retries 500 and 503 only
        ([(429, {"Retry-After": "0"})] * 3, 3, "rate_limited"),
        ([(400, {})], 1, "refused"),  # this post can never go: not retried
        ([(404, {})], 1, "rejected"),  # a webhook revoked: not retried now, kept for later
    ],
    ids=["500", "503", "502", "429", "400", "404"],
)
def test_what_slack_did_not_take_after_the_retries(script, posts, reason):
    with SlackReceiver(script=script) as receiver:
        policy = slack.RetryPolicy(retries=2, backoff=0.01, timeout=5)
        answer = slack.send(slack.client(receiver.url, policy), {"text": "x"})
    assert not answer.accepted and answer.reason == reason
    assert len(receiver.posts) == posts
    assert answer.refused == (reason == "refused")


def test_no_answer_is_unreachable_and_the_error_does_not_show_the_webhook():
    url = f"http://127.0.0.1:{free_port()}/services/T0/B0/s3cr3t-path"
    answer = slack.send(slack.client(url, QUICK), {"text": "x"})
    assert answer.status is None and answer.reason == "unreachable"
    assert "Connection refused" in answer.why and "s3cr3t" not in answer.why
    with pytest.raises(PlatformError, match="cannot reach the Slack webhook"):
        slack.post(url, {"text": "x"}, policy=QUICK)


# The outbox of status updates ------------------------------------------------------------
def finished_runs(store: IncidentStore, count: int) -> str:
    """``count`` finished runs of one incident, each with its update in the outbox."""
    now = datetime.now(UTC)
    incident = ""
    for number in range(1, count + 1):
        item = {"status": "firing", "labels": {}, "startsAt": "2024-05-01T12:00:00Z"}
        note = {
            "status": "firing",
            "groupKey": "{}:{o}",
            "alerts": [{**item, "fingerprint": f"f{number}"}],
        }
        incident = store.receive(alerts.validate(note)).incident or ""
        [run] = store.startable()
        store.mark([run], "queued", now, attempt=1)
        store.finish(run, Outcome("succeeded"), now, update={"text": f"run {number}"})
    return incident


def test_the_outbox_posts_oldest_first_and_a_failure_holds_back_what_follows(tmp_path):
    store = IncidentStore(tmp_path / "incidents.db")
    incident = finished_runs(store, 3)
    answers: list[slack.Answer] = []
    script = [(400, {}), (500, {})]
    with SlackReceiver(script=script) as receiver:
        webhook = slack.client(receiver.url, slack.RetryPolicy(retries=0, backoff=0.01))
        send = lambda doc: slack.send(webhook, doc)  # noqa: E731
        first = deliver_updates(store, send, answers.append)
        kept = [u.key for u in store.pending_updates()]
        second = deliver_updates(store, send, answers.append)
    store.close()
    store = IncidentStore(tmp_path / "incidents.db")
    runs = store.incident(incident).runs
    store.close()
    assert [p["json"]["text"] for p in receiver.posts] == ["run 1", "run 2", "run 2", "run 3"]
    assert (first.delivered, first.waiting) == ([], [f"{incident}:2", f"{incident}:3"])
    assert kept == first.waiting and second.delivered == kept and second.error is None
    assert [a.reason if not a.accepted else "ok" for a in answers] == [
        "refused",
        "server_error",
        "ok",
        "ok",
    ]
    assert runs[0].notice == (
        "Slack refused the status update (Slack answered 400: invalid_payload); "
        "kept in the outbox as refused"
    )
    assert runs[1].notice == (
        "Slack post failed: Slack answered 500: server_error; the update waits in the outbox\n"
        + POSTED
    )
    assert runs[2].notice == POSTED


# exportnb serve against Slack that says 429, 500, then 200; or that is not there ---------
def slack_home(tmp_path, url: str, extra: str = ""):
    home = tmp_path / "home"
    home.mkdir()
    notebook = write_quick_notebook(tmp_path / "quick.ipynb")
    (home / "config.toml").write_text(
        f'[serve]\nnotebook = "{notebook}"\nslack_webhook = "{url}"\n'
        'slack_allow_http_loopback = true\nslack_backoff = "50ms"\nupdate_interval = "1s"\n' + extra
    )
    return home


def posted_runs(receiver: SlackReceiver, incident: str) -> list[int]:
    """The run numbers of the incident's updates Slack took, in the order it took them."""
    found = []
    for post in receiver.accepted:
        title = post["json"]["blocks"][0]["text"]["text"]
        match = re.match(r"Export incident (\S+): run (\d+) ", title)
        assert match, title
        if match.group(1) == incident:
            found.append(int(match.group(2)))
    return found


def history(serve: ServeProcess, incident: str) -> dict:
    return serve.request("GET", f"/incidents/{incident}")[1]


def all_posted(serve: ServeProcess, receiver: SlackReceiver, incidents: list[str]) -> bool:
    """Every incident closed, and as many updates taken by Slack as it had runs."""
    for incident in incidents:
        found = history(serve, incident)
        if found["status"] != "resolved" or len(posted_runs(receiver, incident)) < len(
            found["history"]
        ):
            return False
    return True


def outbox_depth(serve: ServeProcess) -> float:
    return value(scrape(serve), "exportnb_serve_outbox_depth", kind="slack_updates") or 0


def test_429_then_500_then_200_every_update_reaches_slack_once_in_order(tmp_path):
    groups = ["{}:{slack-a}", "{}:{slack-b}"]
    script = [(429, {"Retry-After": "1"}), (500, {})]
    with SlackReceiver(script=script) as receiver:
        serve = ServeProcess(slack_home(tmp_path, receiver.url)).start()
        try:
            incidents = [serve.post_alert(payload(group=g))[1]["incident"] for g in groups]
            wait_for(lambda: all(len(posted_runs(receiver, i)) >= 3 for i in incidents), 120)
            for group in groups:
                serve.post_alert(payload("resolved", group=group))
            wait_for(lambda: all_posted(serve, receiver, incidents), timeout=120)
            runs = {i: history(serve, i)["history"] for i in incidents}
            metrics = scrape(serve)
        finally:
            serve.stop()
    assert [p["status"] for p in receiver.posts[:3]] == [429, 500, 200]
    assert all(p["status"] == 200 for p in receiver.posts[3:])
    assert receiver.posts[1]["at"] - receiver.posts[0]["at"] >= 1.0  # Retry-After
    for incident in incidents:
        numbers = [r["run"] for r in runs[incident]]
        assert posted_runs(receiver, incident) == numbers  # each once, in order: none lost
        assert [r["notice"] for r in runs[incident]] == [POSTED] * len(numbers)
    assert value(metrics, "exportnb_serve_outbox_depth", kind="slack_updates") == 0
    assert value(metrics, "exportnb_serve_slack_updates_posted_total") == len(receiver.accepted)
    assert value(metrics, "exportnb_serve_slack_failures_total", reason="rate_limited") == 0


def test_updates_wait_while_slack_is_down_survive_a_restart_and_arrive_once_in_order(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/services/T0/B0/x"
    home = slack_home(tmp_path, url, 'outbox_interval = "1s"\nslack_retries = 1\n')
    groups = ["{}:{down-a}", "{}:{down-b}"]
    first = ServeProcess(home).start()
    try:
        incidents = [first.post_alert(payload(group=g))[1]["incident"] for g in groups]
        wait_for(lambda: outbox_depth(first) >= 4, timeout=120)
        failures = value(scrape(first), "exportnb_serve_slack_failures_total", reason="unreachable")
    finally:
        first.stop()  # updates still in the outbox, and maybe a run cut short
    second = ServeProcess(home, port=first.port).start()
    try:
        for group in groups:
            second.post_alert(payload("resolved", group=group))
        wait_for(lambda: all(history(second, i)["status"] == "resolved" for i in incidents), 120)
        waiting = outbox_depth(second)
        runs = sum(len(history(second, i)["history"]) for i in incidents)
        with SlackReceiver(port=port) as receiver:  # Slack is back
            wait_for(lambda: all_posted(second, receiver, incidents), timeout=60)
            found = {i: history(second, i)["history"] for i in incidents}
            time.sleep(2)  # two more outbox passes: nothing is posted again
            depth = outbox_depth(second)
    finally:
        second.stop()
    assert failures and failures >= 1
    assert waiting == runs  # every run's update waited, across the restart
    assert all(p["status"] == 200 for p in receiver.posts) and len(receiver.posts) == runs
    for incident in incidents:
        numbers = [r["run"] for r in found[incident]]
        assert posted_runs(receiver, incident) == numbers  # each once, in order
        assert all(r["notice"].splitlines()[-1] == POSTED for r in found[incident])
    # The first update in line failed (and said so once); those behind it waited their turn.
    said = [
        r["notice"].splitlines() for i in incidents for r in found[i] if "failed" in r["notice"]
    ]
    assert said and all(len(lines) == 2 for lines in said)
    assert said[0][0].startswith("Slack post failed: cannot reach the Slack webhook: ")
    assert said[0][0].endswith("the update waits in the outbox")
    assert depth == 0


def test_a_plain_http_slack_webhook_is_refused_and_nothing_starts(tmp_path):
    env = {
        **ServeProcess(tmp_path).env,
        "EXPORTNB_HOME": str(tmp_path / "home"),
        "EXPORTNB_SLACK_WEBHOOK": "http://hooks.slack.com/services/T0/B0/s3cr3t",
    }
    refused = subprocess.run(
        exportnb_cmd("serve", "--port", str(free_port())),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        "Error: $EXPORTNB_SLACK_WEBHOOK must be an https:// URL, not http://hooks.slack.com"
    )
    assert "s3cr3t" not in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "home" / "service").exists()  # nothing stored, nothing queued
