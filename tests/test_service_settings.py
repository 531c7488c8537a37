"""[serve] settings and credentials, and the dispatcher's bookkeeping on a real store and a
real SQLite queue (no HTTP: the pieces `exportnb serve` is made of)."""

from __future__ import annotations

import base64
import socket
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from exportnb.core.errors import ConfigError
from exportnb.service import alerts, runs
from exportnb.service.auth import Credentials
from exportnb.service.dispatch import LOST_AFTER, MAX_ATTEMPTS, SWEEP_EVERY, Dispatcher
from exportnb.service.incidents import IncidentStore, stamp
from exportnb.service.queue import JSONSerializer, Queue, RunSpec
from exportnb.service.settings import ServeSettings


def test_settings_read_the_serve_table_with_the_environment_over_it(tmp_path):
    token = tmp_path / "token"
    token.write_text("from-file\n")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[serve]\ntoken_file = "{token}"\nmax_body = "2MiB"\nworkers = 0\n'
        'update_interval = "90s"\nqueue = "redis://localhost:6379/1"\n'
    )
    read = ServeSettings.load(config, env={})
    assert (read.token, read.max_body, read.workers) == ("from-file", 2 * 2**20, 0)
    assert (read.update_interval, read.queue) == (90.0, "redis://localhost:6379/1")
    assert ServeSettings.load(config, env={"EXPORTNB_WEBHOOK_TOKEN": "env"}).token == "env"
    assert "from-file" not in repr(read)
    defaults = ServeSettings.load(tmp_path / "none.toml", env={})
    assert (defaults.max_alerts, defaults.update_interval, defaults.queue) == (1000, 900, "sqlite")
    assert defaults.public_url is None
    public = {"EXPORTNB_PUBLIC_URL": "https://exportnb.example.net/ops/"}
    assert ServeSettings.load(config, env=public).public_url == "https://exportnb.example.net/ops"


@pytest.mark.parametrize(
    "table, message",
    [
        ('queue = "postgres://x"', "queue must be"),
        ("workers = -1", "workers must be"),
        ("max_alerts = 0", "max_alerts must be"),
        ('update_interval = "soon"', "invalid TTL"),
        ('token_file = "/nonexistent/token"', "cannot read"),
        ('slack_webhook = "ftp://x"', "slack_webhook"),
        (
            'slack_webhook = "http://hooks.slack.com/services/T/B/x"',
            "slack_webhook must be an https",
        ),
        ("slack_allow_http_loopback = 1", "slack_allow_http_loopback must be true or false"),
        ("slack_retries = 11", "slack_retries must be"),
        ('slack_backoff = "soon"', "invalid TTL"),
        ('public_url = "exportnb.example.net"', "public_url must be an http"),
        ('public_url = "https://x/?next=evil"', "no query, fragment or space"),
        ("tokenfile = 1", "unknown keys: tokenfile"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path, table, message):
    config = tmp_path / "config.toml"
    config.write_text(f"[serve]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        ServeSettings.load(config, env={})


def test_a_slack_webhook_must_be_https_and_the_error_names_the_setting(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[serve]\nslack_webhook = "http://hooks.slack.com/services/T/B/s3cr3t"\n')
    with pytest.raises(ConfigError) as from_file:
        ServeSettings.load(config, env={})
    assert from_file.value.message == (
        f"{config}: [serve] slack_webhook must be an https:// URL, not http://hooks.slack.com"
    )
    plain = {"EXPORTNB_SLACK_WEBHOOK": "http://127.0.0.1:9/services/T/B/s3cr3t"}
    with pytest.raises(ConfigError) as from_env:
        ServeSettings.load(tmp_path / "none.toml", env=plain)
    assert from_env.value.message == (
        "$EXPORTNB_SLACK_WEBHOOK must be an https:// URL, not http://127.0.0.1"
    )
    secure = {"EXPORTNB_SLACK_WEBHOOK": "https://hooks.slack.com/services/T/B/x"}
    assert ServeSettings.load(config, env=secure).slack_webhook == secure["EXPORTNB_SLACK_WEBHOOK"]


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("http://127.0.0.1:8080/services/x", True),
        ("http://[::1]:8080/services/x", True),
        ("http://localhost/services/x", True),
        ("http://hooks.slack.com/services/x", False),
        ("http://127.0.0.1.example.com/services/x", False),
        ("http://10.0.0.5/services/x", False),
    ],
)
def test_plain_http_is_allowed_to_loopback_only_and_only_when_asked(tmp_path, url, allowed):
    config = tmp_path / "config.toml"
    config.write_text(f'[serve]\nslack_webhook = "{url}"\nslack_allow_http_loopback = true\n')
    if allowed:
        assert ServeSettings.load(config, env={}).slack_webhook == url
    else:
        with pytest.raises(
            ConfigError, match=r"only lets http:// to 127\.0\.0\.1, ::1 or localhost"
        ):
            ServeSettings.load(config, env={})
    config.write_text(f'[serve]\nslack_webhook = "{url}"\n')
    with pytest.raises(ConfigError, match="slack_webhook must be an https:// URL"):
        ServeSettings.load(config, env={})


def test_slack_retry_settings(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[serve]\nslack_retries = 0\nslack_backoff = "50ms"\nslack_timeout = "3s"\n')
    read = ServeSettings.load(config, env={})
    assert (read.slack_retries, read.slack_backoff, read.slack_timeout) == (0, 0.05, 3.0)
    defaults = ServeSettings.load(tmp_path / "none.toml", env={})
    assert (defaults.slack_retries, defaults.slack_backoff, defaults.slack_timeout) == (3, 0.5, 10)


def test_credentials_compare_bearer_and_basic(tmp_path):
    with pytest.raises(ConfigError, match="no credentials"):
        Credentials.of(ServeSettings())
    with pytest.raises(ConfigError, match="both a user and a password"):
        Credentials.of(ServeSettings(basic_user="am"))
    both = Credentials.of(ServeSettings(token="t0k", basic_user="am", basic_password="pw:1"))
    good_basic = b"Basic " + base64.b64encode(b"am:pw:1")
    assert both.allows(b"Bearer t0k") and both.allows(b"bearer  t0k ") and both.allows(good_basic)
    for bad in (
        None,
        b"",
        b"Bearer",
        b"Bearer t0",
        b"Basic " + base64.b64encode(b"am:pw"),
        b"Basic " + base64.b64encode(b"ampw:1"),
        b"Basic %%%",
        b"Digest t0k",
    ):
        assert not both.allows(bad)
    assert Credentials.of(ServeSettings(), insecure=True).allows(None)
    assert not Credentials.of(ServeSettings(token="t"), insecure=True).allows(None)


def test_queue_messages_are_json_not_pickle(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPORTNB_HOME", str(tmp_path))
    queue = Queue(ServeSettings())
    spec = RunSpec("INC-1", 1, 1, "opened", {"alerts": [{"labels": {"x": "$(id)"}}]}, ["job-1"])
    queue.enqueue(spec)
    [raw] = queue.huey.storage.enqueued_items()
    assert raw.startswith(b'{"message": ')
    assert queue.queued() == {("INC-1", 1, 1)}
    assert JSONSerializer().deserialize(raw).args == (spec.to_json(),)
    with pytest.raises(ValueError):
        JSONSerializer().deserialize(b"\x80\x04\x95pickle")


def note(status="firing"):
    item = {"status": status, "labels": {}, "startsAt": "2024-05-01T12:00:00Z", "fingerprint": "a"}
    return alerts.validate({"status": status, "groupKey": "{}:{d}", "alerts": [item]})


@pytest.fixture
def dispatcher(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPORTNB_HOME", str(tmp_path))
    store = IncidentStore(tmp_path / "incidents.db")
    yield Dispatcher(store, Queue(ServeSettings()), ServeSettings())
    store.close()


def test_a_run_lost_between_store_and_queue_is_queued_again(dispatcher):
    store, queue = dispatcher.store, dispatcher.queue
    incident = store.receive(note()).incident
    [run] = store.startable()
    store.mark([run], "queued", datetime.now(UTC), attempt=1)  # the message never made it
    dispatcher.recover()
    assert queue.queued() == {(incident, 1, 1)}
    dispatcher.recover()
    assert len(queue.huey.pending()) == 1  # in the queue now: not queued twice


def test_a_message_a_worker_took_and_lost_before_its_claim_is_queued_again(dispatcher):
    """Without a restart: the sweep in the loop finds it once it is LOST_AFTER s old."""
    store, queue = dispatcher.store, dispatcher.queue
    incident = store.receive(note()).incident
    start = datetime.now(UTC)
    dispatcher.tick(start)
    assert queue.queued() == {(incident, 1, 1)}
    assert queue.huey.dequeue() is not None  # a worker took the message, then died
    dispatcher.tick(start + timedelta(seconds=SWEEP_EVERY + 1))
    assert queue.queued() == set()  # too young: its worker may be claiming it right now
    dispatcher.tick(start + timedelta(seconds=LOST_AFTER + SWEEP_EVERY + 2))
    assert queue.queued() == {(incident, 1, 1)}
    claim = {**runs.identity(), "at": stamp(start)}  # this process: alive
    assert queue.claim(RunSpec(incident, 1, 1, "opened", {}, []), claim)
    assert queue.huey.dequeue() is not None  # taken again, and claimed this time
    dispatcher.tick(start + timedelta(seconds=LOST_AFTER + 3 * SWEEP_EVERY + 3))
    assert queue.queued() == set()  # a claimed attempt belongs to its worker's lease
    assert [(r.state, r.attempt) for r in store.active()] == [("running", 1)]


def test_a_lost_worker_gets_a_new_attempt_at_most_three_times(dispatcher):
    store, queue = dispatcher.store, dispatcher.queue
    incident = store.receive(note()).incident
    dispatcher.tick()
    assert [r.state for r in store.active()] == ["queued"]
    sleeper = subprocess.Popen(["sleep", "30"])
    holder = {"host": socket.gethostname(), "pid": sleeper.pid, "start": runs._started(sleeper.pid)}
    for attempt in range(1, MAX_ATTEMPTS + 1):
        spec = RunSpec(incident, 1, attempt, "opened", {}, [])
        assert queue.claim(spec, {**holder, "at": stamp(datetime.now(UTC)), "until": 0})
        dispatcher.tick()
        assert [(r.state, r.attempt) for r in store.active()] == [("running", attempt)]
        sleeper.kill()
        sleeper.wait()
        dispatcher.tick()
        sleeper = subprocess.Popen(["sleep", "30"])
        holder = {**holder, "pid": sleeper.pid, "start": runs._started(sleeper.pid)}
    sleeper.kill()
    sleeper.wait()
    [run] = store.incident(incident).runs
    assert (run.state, run.attempt) == ("error", MAX_ATTEMPTS)
    assert "lost during each of 3 attempts" in str(run.error)


def test_a_finished_run_leaves_its_slack_update_in_the_outbox_with_it(dispatcher):
    store, queue = dispatcher.store, dispatcher.queue
    woken: list[bool] = []
    settings = ServeSettings(
        slack_webhook="https://hooks.slack.com/services/T/B/x",
        public_url="https://exportnb.example.net",
    )
    posting = Dispatcher(store, queue, settings, on_update=lambda: woken.append(True))
    incident = store.receive(note()).incident
    posting.tick()
    done = {"state": "succeeded", "record_id": f"{incident}/20240501T120032Z-9f5a552c"}
    queue.put(f"done:{incident}:1", {**done, "status_update": "**all clear**"})
    posting.tick()
    [update] = store.pending_updates()
    assert update.key == f"{incident}:1" and woken == [True]
    assert "run 1" in update.payload["blocks"][0]["text"]["text"]
    assert update.payload["blocks"][1]["text"]["text"] == "*all clear*"
    assert "https://exportnb.example.net/records/" in str(update.payload["blocks"][-1])
    assert store.incident(incident).runs[0].state == "succeeded"


def test_without_a_slack_webhook_no_update_is_kept(dispatcher):
    store, queue = dispatcher.store, dispatcher.queue
    incident = store.receive(note()).incident
    dispatcher.tick()
    queue.put(f"done:{incident}:1", {"state": "failed", "error": "boom"})
    dispatcher.tick()
    assert store.incident(incident).runs[0].state == "failed"
    assert store.pending_updates() == []
