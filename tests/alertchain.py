"""The real alert chain for tests: Prometheus and Alertmanager as subprocesses, configured
from ``deploy/`` with short intervals, and a capture receiver that records webhook posts.

Nothing here is a second copy of the deployment: the configurations are the files in
``deploy/``, loaded and changed only where a test must (ports, temporary paths, intervals,
and the rules' range windows and ``for:`` holds, so that a rule written for ten minutes
fires in seconds). Prometheus's layout is the deployed one: ``prometheus.yml`` with
``rules.yml`` and ``targets/`` next to it, the targets written by
``deploy/prometheus/sandbox-targets.sh``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
RULES_YML = DEPLOY / "prometheus" / "rules.yml"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
SANDBOX_TARGETS = DEPLOY / "prometheus" / "sandbox-targets.sh"
ALERTMANAGER_TEMPLATE = Path("/usr/share/prometheus/alertmanager/default.tmpl")
"""Debian's Alertmanager reads its default notification template from here at start-up."""

RANGE = re.compile(r"\[\d+[smhdwy]\]")
TIMING = ("group_wait", "group_interval", "repeat_interval")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, token: str | None = None, timeout: float = 5.0) -> Any:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def answers(url: str, token: str | None = None) -> bool:
    """Whether GET url answers 200 now."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=2.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Daemon:
    """A server run as a subprocess, its output in a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def report(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"--- {self.name} ({state}), last lines of {self.log} ---\n{self.tail()}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


def start_daemon(
    name: str,
    argv: list[str],
    *,
    log: Path,
    url: str,
    ready: str,
    env: dict[str, str] | None = None,
    token: str | None = None,
    timeout: float = 60.0,
) -> Daemon:
    """Start a server and wait until GET url+ready answers 200; fail with its log if not."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    daemon = Daemon(name, proc, log, url)
    deadline = time.monotonic() + timeout
    while not answers(url + ready, token):
        if proc.poll() is not None or time.monotonic() > deadline:
            daemon.stop()
            raise AssertionError(f"{name} did not become ready at {url + ready}\n{daemon.report()}")
        time.sleep(0.2)
    return daemon


# Prometheus -------------------------------------------------------------------------


def shortened_rules(*, window: str, hold: str) -> dict[str, Any]:
    """deploy/prometheus/rules.yml with every range window and every ``for:`` shortened."""
    doc = yaml.safe_load(RULES_YML.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["expr"] = RANGE.sub(f"[{window}]", rule["expr"])
            if "for" in rule:
                rule["for"] = hold
    return dict(doc)


def write_sandbox_targets(folder: Path, env: dict[str, str]) -> Path:
    """Run deploy/prometheus/sandbox-targets.sh into folder/targets/ for the sandbox in env."""
    targets = folder / "targets"
    targets.mkdir(parents=True, exist_ok=True)
    out = targets / "exportnb-sandbox.json"
    subprocess.run(
        ["sh", str(SANDBOX_TARGETS), str(out)],
        env=with_exportnb(env),
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


def prometheus_config(*, alertmanager: str, interval: str) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml, scraping and evaluating every ``interval``."""
    doc = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    doc["global"].update(scrape_interval=interval, evaluation_interval=interval)
    for manager in doc["alerting"]["alertmanagers"]:
        manager["static_configs"] = [{"targets": [alertmanager]}]
    for job in doc["scrape_configs"]:
        for discovery in job.get("file_sd_configs", []):
            discovery["refresh_interval"] = interval
    return dict(doc)


def start_prometheus(
    folder: Path, *, alertmanager: str, window: str, hold: str, interval: str = "1s"
) -> Daemon:
    """Prometheus laid out as deployed in folder; the targets are written separately."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "targets").mkdir(exist_ok=True)
    rules = shortened_rules(window=window, hold=hold)
    (folder / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    config = prometheus_config(alertmanager=alertmanager, interval=interval)
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    argv = [
        shutil.which("prometheus") or "prometheus",
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--rules.alert.resend-delay=1s",
    ]
    url = f"http://127.0.0.1:{port}"
    return start_daemon(
        "prometheus", argv, log=folder / "prometheus.log", url=url, ready="/-/ready"
    )


def prometheus_alerts(prometheus: Daemon) -> list[dict[str, Any]]:
    return list(get_json(f"{prometheus.url}/api/v1/alerts")["data"]["alerts"])


def prometheus_targets(prometheus: Daemon) -> list[dict[str, Any]]:
    return list(get_json(f"{prometheus.url}/api/v1/targets")["data"]["activeTargets"])


def prometheus_query(prometheus: Daemon, expr: str) -> list[dict[str, Any]]:
    from urllib.parse import quote

    found = get_json(f"{prometheus.url}/api/v1/query?query={quote(expr)}")
    return list(found["data"]["result"])


# Alertmanager -----------------------------------------------------------------------


def alertmanager_config(
    *, receiver: str, token_file: Path, wait: str, interval: str
) -> dict[str, Any]:
    """deploy/alertmanager/alertmanager.yml, its webhooks sent to ``receiver`` (host:port,
    the deployed path kept) with the token in token_file, and short group timings."""
    doc = yaml.safe_load(ALERTMANAGER_YML.read_text(encoding="utf-8"))
    routes = [doc["route"]]
    while routes:
        route = routes.pop()
        route.update(group_wait=wait, group_interval=interval, repeat_interval="1h")
        routes.extend(route.get("routes", []))
    for entry in doc["receivers"]:
        for webhook in entry.get("webhook_configs", []):
            webhook["url"] = f"http://{receiver}{urlsplit(webhook['url']).path}"
            webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    return dict(doc)


def start_alertmanager(
    folder: Path, *, receiver: str, token: str, wait: str = "1s", interval: str = "2s"
) -> Daemon:
    folder.mkdir(parents=True, exist_ok=True)
    token_file = folder / "webhook-token"
    token_file.write_text(token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    config = alertmanager_config(
        receiver=receiver, token_file=token_file, wait=wait, interval=interval
    )
    (folder / "alertmanager.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    argv = [
        shutil.which("prometheus-alertmanager") or "prometheus-alertmanager",
        f"--config.file={folder / 'alertmanager.yml'}",
        f"--storage.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    url = f"http://127.0.0.1:{port}"
    return start_daemon(
        "alertmanager", argv, log=folder / "alertmanager.log", url=url, ready="/-/ready"
    )


def post_alerts(alertmanager: Daemon, alerts: list[dict[str, Any]]) -> None:
    """Send alerts to Alertmanager's API, as Prometheus does."""
    request = urllib.request.Request(
        f"{alertmanager.url}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5.0) as response:
        assert response.status == 200, response.status


def alertmanager_alerts(alertmanager: Daemon) -> list[dict[str, Any]]:
    return list(get_json(f"{alertmanager.url}/api/v2/alerts"))


def notifications(alertmanager: Daemon) -> dict[str, float]:
    """Alertmanager's webhook notification counters: sent, failed."""
    with urllib.request.urlopen(f"{alertmanager.url}/metrics", timeout=5.0) as response:
        text = response.read().decode()
    counts = {"sent": 0.0, "failed": 0.0}
    for line in text.splitlines():
        if 'integration="webhook"' not in line:
            continue
        if line.startswith("alertmanager_notifications_total"):
            counts["sent"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("alertmanager_notifications_failed_total"):
            counts["failed"] += float(line.rsplit(" ", 1)[1])
    return counts


# The capture receiver ---------------------------------------------------------------


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class CaptureReceiver:
    """An HTTP server on loopback that records every POST and answers 200."""

    posts: list[Post] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        """Start serving; returns host:port."""
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                posts.append(Post(self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# Sandbox traffic --------------------------------------------------------------------


class Traffic:
    """Small export jobs submitted to a running sandbox at a steady pace, in a thread, so
    that Prometheus sees counters grow between scrapes rather than jump once."""

    def __init__(self, home: Path, *, per_second: float = 2.0, size: int = 5_000_000) -> None:
        self.home, self.every, self.size = home, 1.0 / per_second, size
        self.stopped = threading.Event()
        self.submitted = 0
        self.thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> Traffic:
        self.thread.start()
        return self

    def _run(self) -> None:
        from exportnb.sandbox import control

        while not self.stopped.wait(self.every):
            control.submit(count=1, size=self.size, home=self.home)
            self.submitted += 1

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


def with_exportnb(env: dict[str, str]) -> dict[str, str]:
    """env with this interpreter's exportnb and python first on PATH (for deploy scripts)."""
    bin_dir = str(Path(sys.executable).parent)
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "PYTHON": sys.executable}
