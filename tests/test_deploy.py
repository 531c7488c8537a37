"""deploy/: the Prometheus rules and config, the Alertmanager config and the systemd unit,
checked by the tools that will load them (promtool, amtool, systemd-analyze), and the
Alertmanager config delivering a webhook, with its bearer token, to a real HTTP server."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from alertchain import (
    ALERTMANAGER_TEMPLATE,
    ALERTMANAGER_YML,
    DEPLOY,
    PROMETHEUS_YML,
    RULES_YML,
    SANDBOX_TARGETS,
    CaptureReceiver,
    post_alerts,
    shortened_rules,
    start_alertmanager,
    with_exportnb,
)
from conftest import need, wait_for

UNIT = DEPLOY / "systemd" / "exportnb-serve.service"
SERVICE_RULES_YML = DEPLOY / "prometheus" / "service_rules.yml"
METRIC = re.compile(r"\bexportnb_serve_[a-z_]+")


def tool(name: str) -> str:
    found = shutil.which(name)
    need(found is not None, f"{name} is not installed (scripts/system-deps.sh installs it)")
    assert found is not None
    return found


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def rules(path: Path = RULES_YML) -> list[dict]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_prometheus_config_and_rules_are_valid(tmp_path):
    """promtool checks that the scrape job's token file exists: a copy points at one."""
    token = tmp_path / "exportnb-webhook-token"
    token.write_text("s3cr3t-token\n", encoding="utf-8")
    for name in ("prometheus.yml", "rules.yml", "service_rules.yml"):
        text = (DEPLOY / "prometheus" / name).read_text(encoding="utf-8")
        text = text.replace("/etc/prometheus/exportnb-webhook-token", str(token))
        (tmp_path / name).write_text(text, encoding="utf-8")
    shutil.copytree(DEPLOY / "prometheus" / "targets", tmp_path / "targets")
    result = run(tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr
    assert "SUCCESS: 3 rules found" in result.stdout  # rules.yml
    assert "SUCCESS: 2 rules found" in result.stdout  # service_rules.yml


def test_prometheus_scrapes_exportnb_serve_with_the_webhook_token():
    doc = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    [job] = [j for j in doc["scrape_configs"] if j["job_name"] == "exportnb-serve"]
    assert job["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/etc/prometheus/exportnb-webhook-token",
    }
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9788"]}]  # the systemd unit's
    assert "--port 9788" in UNIT.read_text(encoding="utf-8")
    assert doc["rule_files"] == ["rules.yml", "service_rules.yml"]


def test_the_rules_on_exportnb_itself_are_valid_and_pass_their_unit_tests():
    promtool = tool("promtool")
    checked = run(promtool, "check", "rules", str(SERVICE_RULES_YML))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 2 rules found" in checked.stdout
    tested = run(promtool, "test", "rules", str(DEPLOY / "prometheus" / "service_rules_test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_rules_on_exportnb_itself_read_metrics_that_serve_exposes(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    from exportnb.service.incidents import IncidentStore
    from exportnb.service.metrics import ServiceMetrics

    store = IncidentStore(tmp_path / "incidents.db")
    try:
        text = ServiceMetrics(store.path, None, tmp_path / "outbox").render().decode()
    finally:
        store.close()
    exposed = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    found = rules(SERVICE_RULES_YML)
    assert {r["alert"] for r in found} == {"ExportnbRunsFailing", "ExportnbOutboxGrowing"}
    for rule in found:
        assert set(METRIC.findall(rule["expr"])) <= exposed, rule["alert"]
        assert rule["labels"] == {"severity": "warning", "component": "exportnb"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.mark.parametrize("rule", rules(SERVICE_RULES_YML), ids=lambda r: r["alert"])
def test_the_alerts_on_exportnb_itself_never_reach_exportnb(rule):
    labels = {"alertname": rule["alert"], **rule["labels"]}
    assert "runbook" not in labels
    assert routed_to(*(f"{k}={v}" for k, v in labels.items())) == "null"


def test_each_rule_fires_on_its_series_and_not_on_healthy_ones():
    result = run(tool("promtool"), "test", "rules", str(DEPLOY / "prometheus" / "rules_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_is_an_export_failure_alert_with_severity_and_summary():
    found = rules()
    assert {r["alert"] for r in found} == {
        "ExportFailureRateHigh",
        "ExportLatencyHigh",
        "ExportJobStuck",
    }
    for rule in found:
        assert rule["labels"]["runbook"] == "export-failure"
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["runbook_url"].startswith("runbooks/export-failure.md")


def test_the_test_copy_of_the_rules_is_valid_and_has_only_short_windows(tmp_path):
    short = tmp_path / "rules.yml"
    short.write_text(yaml.safe_dump(shortened_rules(window="20s", hold="1s")), encoding="utf-8")
    result = run(tool("promtool"), "check", "rules", str(short))
    assert result.returncode == 0, result.stdout + result.stderr
    text = short.read_text(encoding="utf-8")
    assert "[10m]" not in text and "[20s]" in text
    assert {r["for"] for g in yaml.safe_load(text)["groups"] for r in g["rules"]} == {"1s"}


def test_alertmanager_config_is_valid():
    result = run(tool("amtool"), "check-config", str(ALERTMANAGER_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def routed_to(*labels: str) -> str:
    result = run(
        tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", *labels
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_rule_routes_to_exportnb(rule):
    labels = {"alertname": rule["alert"], **rule["labels"]}
    assert routed_to(*(f"{k}={v}" for k, v in labels.items())) == "exportnb"


def test_other_alerts_do_not_reach_exportnb():
    assert routed_to("alertname=DiskFull", "severity=critical") == "null"


def test_the_sandbox_targets_script_refuses_without_a_sandbox(tmp_path):
    out = tmp_path / "targets.json"
    env = with_exportnb({"PATH": "/usr/bin:/bin", "EXPORTNB_HOME": str(tmp_path / "home")})
    result = subprocess.run(
        ["sh", str(SANDBOX_TARGETS), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 5
    assert not out.exists() and not Path(f"{out}.tmp").exists()


def test_alertmanager_delivers_the_webhook_with_the_bearer_token(tmp_path):
    tool("prometheus-alertmanager")
    need(ALERTMANAGER_TEMPLATE.exists(), f"{ALERTMANAGER_TEMPLATE} is missing")
    receiver = CaptureReceiver()
    address = receiver.start()
    manager = start_alertmanager(tmp_path / "am", receiver=address, token="s3cr3t-token")
    try:
        rule = rules()[0]
        now = datetime.now(UTC)
        alert = {
            "labels": {"alertname": rule["alert"], **rule["labels"]},
            "annotations": {"summary": "Export failure rate 5% over 10 minutes"},
            "startsAt": now.isoformat(),
        }
        post_alerts(manager, [alert])
        wait_for(lambda: receiver.posts, 30)
        post = receiver.posts[0]
        assert post.path == "/alerts/alertmanager"
        assert post.headers["Authorization"] == "Bearer s3cr3t-token"
        body = post.body
        assert (body["version"], body["status"], body["receiver"]) == ("4", "firing", "exportnb")
        assert 'runbook="export-failure"' in body["groupKey"]
        assert body["alerts"][0]["labels"]["alertname"] == rule["alert"]
        assert body["truncatedAlerts"] == 0

        post_alerts(manager, [{**alert, "endsAt": (now + timedelta(seconds=1)).isoformat()}])
        wait_for(lambda: any(p.body["status"] == "resolved" for p in receiver.posts), 30)
        time.sleep(0.5)
        assert all(p.headers["Authorization"] == "Bearer s3cr3t-token" for p in receiver.posts)
    except AssertionError:
        print(manager.report())
        raise
    finally:
        manager.stop()
        receiver.stop()


def test_the_systemd_unit_verifies_and_its_command_line_is_accepted(tmp_path):
    analyze = tool("systemd-analyze")
    exportnb = Path(sys.executable).parent / "exportnb"
    unit = UNIT.read_text(encoding="utf-8")
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = exec_start.removeprefix("ExecStart=").split()
    env_file = tmp_path / "serve.env"
    env_file.write_text("EXPORTNB_WEBHOOK_TOKEN=x\n", encoding="utf-8")
    local = unit.replace(argv[0], str(exportnb)).replace("/etc/exportnb/serve.env", str(env_file))
    copy = tmp_path / UNIT.name
    copy.write_text(local, encoding="utf-8")
    result = run(analyze, "verify", str(copy))
    assert result.returncode == 0, result.stderr

    accepted = subprocess.run(
        [str(exportnb), *argv[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=with_exportnb({"PATH": "/usr/bin:/bin", "EXPORTNB_HOME": str(tmp_path)}),
    )
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
