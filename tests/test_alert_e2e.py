"""The real alert chain, end to end: the sandbox exports its metrics, Prometheus evaluates
the deployed rules on them, Alertmanager delivers the webhook to ``exportnb serve``, and
exportnb runs the incident notebook and archives the record with the alert in it.

Everything is a real process on loopback, configured from ``deploy/`` (see alertchain.py):
only ports, paths and timings differ (scrape and evaluation every second, 30s rule windows,
2s holds, 1s group_wait). A throttle fault on the export bucket is the incident; clearing
it resolves the alert, and the resolved notification closes the incident after a final run.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alertchain import (
    ALERTMANAGER_TEMPLATE,
    Daemon,
    Traffic,
    alertmanager_alerts,
    free_port,
    get_json,
    notifications,
    prometheus_alerts,
    prometheus_query,
    prometheus_targets,
    start_alertmanager,
    start_daemon,
    start_prometheus,
    write_sandbox_targets,
)
from conftest import exportnb_cmd, need, wait_for

from exportnb.service.incidents import FINISHED

TOKEN = "e2e-webhook-token"
RULE = "ExportFailureRateHigh"
WINDOW = "30s"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tools() -> None:
    for name in ("prometheus", "prometheus-alertmanager"):
        need(shutil.which(name) is not None, f"{name} is not installed (scripts/system-deps.sh)")
    need(ALERTMANAGER_TEMPLATE.exists(), f"Debian's Alertmanager needs {ALERTMANAGER_TEMPLATE}")


@pytest.fixture(scope="module")
def chain(tools, sandbox, tmp_path_factory) -> Iterator[dict[str, Daemon]]:
    """exportnb serve, Alertmanager and Prometheus, started in that order, and traffic."""
    folder = tmp_path_factory.mktemp("chain")
    daemons: dict[str, Daemon] = {}
    traffic: Traffic | None = None
    try:
        port = free_port()
        daemons["exportnb serve"] = start_daemon(
            "exportnb serve",
            [str(_exportnb()), "serve", "--host", "127.0.0.1", "--port", str(port)],
            log=folder / "serve.log",
            url=f"http://127.0.0.1:{port}",
            ready="/healthz",
            env={**sandbox.env, "EXPORTNB_WEBHOOK_TOKEN": TOKEN},
            token=TOKEN,
        )
        manager = start_alertmanager(
            folder / "alertmanager", receiver=f"127.0.0.1:{port}", token=TOKEN
        )
        daemons["alertmanager"] = manager
        daemons["prometheus"] = start_prometheus(
            folder / "prometheus",
            alertmanager=manager.url.removeprefix("http://"),
            window=WINDOW,
            hold="2s",
        )
        write_sandbox_targets(folder / "prometheus", sandbox.env)
        traffic = Traffic(sandbox.home, per_second=2.0).start()
        yield daemons
    finally:
        if traffic is not None:
            traffic.stop()
        for daemon in reversed(daemons.values()):
            daemon.stop()


def _exportnb() -> str:
    return str(Path(sys.executable).parent / "exportnb")


def until(what: str, predicate: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    try:
        return wait_for(predicate, timeout, every)
    except AssertionError:
        raise AssertionError(f"{what}: not within {timeout:.0f}s") from None


def firing(prometheus: Daemon) -> set[str]:
    alerts = prometheus_alerts(prometheus)
    return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


def incidents(service: Daemon) -> list[dict[str, Any]]:
    return list(get_json(f"{service.url}/incidents", TOKEN)["incidents"])


def finished_run(service: Daemon, incident: str, reason: str) -> dict[str, Any] | None:
    """The incident's latest run for ``reason`` once it has finished, else None."""
    history = get_json(f"{service.url}/incidents/{incident}", TOKEN)["history"]
    done = [r for r in history if r["reason"] == reason and r["state"] in FINISHED]
    return max(done, key=lambda r: r["run"]) if done else None


def archive(sandbox, *args: str) -> Any:
    """``exportnb archive ARGS --json``, on the archive exportnb serve writes to."""
    return json.loads(sandbox.run(*exportnb_cmd("archive", *args, "--json"), check=True).stdout)


def archived_record(sandbox, run: dict[str, Any]) -> dict[str, Any]:
    """The record of a finished run: listed in the archive, succeeded, with the alert."""
    assert run["state"] == "succeeded", run["error"]
    assert run["record_id"] in [r["record_id"] for r in archive(sandbox, "list")]
    record = archive(sandbox, "show", run["record_id"])
    assert record["status"] == "succeeded", record["error"]
    return dict(record)


def inject_throttle(sandbox) -> int:
    bucket = sandbox.env["EXPORT_BUCKET"]
    injected = sandbox.run(
        *exportnb_cmd("sandbox", "fault", "inject", "throttle", "--bucket", bucket, "--json"),
        check=True,
    )
    return int(json.loads(injected.stdout)["id"])


def wait_until_judged(prometheus: Daemon) -> None:
    until(
        "Prometheus scrapes the sandbox",
        lambda: any(t["health"] == "up" for t in prometheus_targets(prometheus)),
        30,
    )
    until(
        f"Prometheus has the 10 attempts in {WINDOW} it needs to judge",
        lambda: prometheus_query(
            prometheus, f"sum(increase(exportnb_job_attempts_total[{WINDOW}])) >= 10"
        ),
        60,
    )


def test_a_throttled_bucket_runs_the_notebook_on_alert_and_recovery_closes_the_incident(
    chain, sandbox
):
    prometheus, manager = chain["prometheus"], chain["alertmanager"]
    service = chain["exportnb serve"]
    fault = None
    try:
        wait_until_judged(prometheus)
        assert not [a for a in prometheus_alerts(prometheus) if a["labels"]["alertname"] == RULE]
        assert incidents(service) == []

        fault = inject_throttle(sandbox)
        until(f"{RULE} fires in Prometheus", lambda: RULE in firing(prometheus), 60)
        assert firing(prometheus) == {RULE}  # latency and stuck jobs stay healthy
        until(
            "Alertmanager holds the alert for the exportnb receiver",
            lambda: any(
                a["labels"]["alertname"] == RULE and a["receivers"] == [{"name": "exportnb"}]
                for a in alertmanager_alerts(manager)
            ),
            30,
        )
        (incident,) = until(
            "Alertmanager's webhook opens an incident in exportnb", lambda: incidents(service), 30
        )
        assert 'runbook="export-failure"' in incident["group_key"]
        assert RULE in incident["alertnames"] and incident["status"] == "open"
        counts = notifications(manager)
        assert counts["sent"] >= 1 and counts["failed"] == 0  # the bearer token was accepted

        opened = until(
            "exportnb finishes the incident's first run",
            lambda: finished_run(service, incident["id"], "opened"),
            120,
        )
        record = archived_record(sandbox, opened)
        alert = record["parameters"]["alert"]
        assert alert["groupKey"] == incident["group_key"] and alert["status"] == "firing"
        assert RULE in [a["labels"]["alertname"] for a in alert["alerts"]]
        detection = next(r["result"] for r in record["results"] if r.get("type") == "Detection")
        assert detection["breached"] is True  # the notebook sees what Prometheus saw

        sandbox.run(*exportnb_cmd("sandbox", "fault", "clear", str(fault)), check=True)
        fault = None
        until(f"{RULE} resolves in Prometheus", lambda: RULE not in firing(prometheus), 90)
        final = until(
            "the resolved notification's final run finishes",
            lambda: finished_run(service, incident["id"], "resolved"),
            120,
        )
        alert = archived_record(sandbox, final)["parameters"]["alert"]
        assert alert["status"] == "resolved" and alert["groupKey"] == incident["group_key"]
        (closed,) = incidents(service)
        assert (closed["id"], closed["status"]) == (incident["id"], "resolved")
        assert closed["closed_at"] and len(closed["records"]) >= 2
    except Exception:
        for daemon in chain.values():
            print(daemon.report())
        raise
    finally:
        if fault is not None:
            sandbox.run(*exportnb_cmd("sandbox", "fault", "clear", str(fault)))
