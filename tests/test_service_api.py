"""`exportnb serve` over real HTTP: a real uvicorn in a subprocess on loopback, a real
worker, real kernels running a quick notebook, records in a real archive."""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import exportnb_cmd, wait_for

from exportnb.archive.store import LocalArchive
from exportnb.service.process import ServeProcess, free_port, write_quick_notebook

TOKEN = "s3cr3t-token"
USER, PASSWORD = "alertmanager", "pa:ss wörd"


def alert(fingerprint="a1", status="firing", **labels):
    return {
        "status": status,
        "labels": {"alertname": "ExportFailureRate", **labels},
        "annotations": {},
        "startsAt": "2024-05-01T11:50:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }


def payload(*items, status="firing", group='{}:{runbook="export-failure"}'):
    return {
        "version": "4",
        "receiver": "exportnb",
        "status": status,
        "groupKey": group,
        "alerts": list(items) or [alert()],
        "truncatedAlerts": 0,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve")
    notebook = write_quick_notebook(home / "quick.ipynb")
    (home / "config.toml").write_text(f'[serve]\nnotebook = "{notebook}"\nworkers = 2\n')
    env = {"EXPORTNB_WEBHOOK_USER": USER, "EXPORTNB_WEBHOOK_PASSWORD": PASSWORD}
    serve = ServeProcess(home, token=TOKEN, env=env).start()
    yield serve
    serve.stop()


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def incidents(server):
    status, body = server.request("GET", "/incidents")
    assert status == 200
    return body["incidents"]


def finished(server, incident, runs):
    """The incident once ``runs`` runs have finished."""

    def check():
        found = server.request("GET", f"/incidents/{incident}")[1]
        done = [r for r in found["history"] if r["state"] in ("succeeded", "failed", "error")]
        return found if len(done) >= runs else None

    return wait_for(check, timeout=90)


# Authentication -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong",
        f"bearer {TOKEN}x",
        f"Token {TOKEN}",
        basic(USER, "wrong"),
        basic("root", PASSWORD),
        "Basic !!!notbase64",
        basic(USER, ""),
    ],
)
def test_everything_but_healthz_needs_credentials(server, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    server_token, server.token = server.token, None
    try:
        paths = [
            ("GET", "/incidents"),
            ("GET", "/openapi.json"),
            ("GET", "/metrics"),
            ("GET", "/incidents/INC-x"),
            ("POST", "/alerts/alertmanager"),
        ]
        for method, path in paths:
            status, body = server.request(method, path, payload(), headers=headers)
            assert status == 401, (method, path)
            assert body == {"error": "authentication required: a bearer token or basic auth"}
        assert server.request("GET", "/healthz", headers=headers) == (200, {"status": "ok"})
    finally:
        server.token = server_token
    assert all(i["group_key"] != "never" for i in incidents(server))


def test_bearer_and_basic_auth_are_accepted(server):
    assert server.request("GET", "/incidents")[0] == 200
    status, _ = server.request(
        "GET", "/incidents", headers={"Authorization": basic(USER, PASSWORD)}
    )
    assert status == 200


def test_openapi_describes_every_route(server):
    status, schema = server.request("GET", "/openapi.json")
    assert status == 200 and schema["openapi"].startswith("3.")
    assert set(schema["paths"]) == {
        "/alerts/alertmanager",
        "/healthz",
        "/incidents",
        "/incidents/{incident_id}",
        "/metrics",
        "/openapi.json",
        "/records/{incident_id}/{stamp}/notebook.html",
    }
    assert schema["components"]["schemas"]["Webhook"]["properties"]["alerts"]["maxItems"] == 1000
    assert server.request("GET", "/nowhere")[0] == 404
    assert server.request("DELETE", "/incidents")[0] == 405


def test_no_credentials_refuses_to_start_unless_insecure(tmp_path):
    env = {k: v for k, v in ServeProcess(tmp_path).env.items() if not k.startswith("EXPORTNB_WEB")}
    env["EXPORTNB_HOME"] = str(tmp_path)
    refused = subprocess.run(
        exportnb_cmd("serve", "--port", str(free_port())),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("Error: no credentials") and "Traceback" not in refused.stderr
    open_door = ServeProcess(tmp_path, token=None, args=("--insecure-no-auth", "--workers", "0"))
    open_door.env = {**env, "EXPORTNB_HOME": str(tmp_path)}
    try:
        open_door.start()
        assert open_door.request("GET", "/incidents") == (200, {"incidents": []})
    finally:
        open_door.stop()


def test_commands_have_help():
    for command in ("serve", "worker"):
        shown = subprocess.run(exportnb_cmd(command, "--help"), capture_output=True, text=True)
        assert shown.returncode == 0 and "Usage:" in shown.stdout


# Limits and hostile input: refused, nothing queued ----------------------------------------
def _raw_post(server, body, headers):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest("POST", "/alerts/alertmanager")
        if "Transfer-Encoding" not in headers:
            headers = {"Content-Length": str(sum(len(c) for c in body)), **headers}
        for name, value in {"Authorization": f"Bearer {TOKEN}", **headers}.items():
            connection.putheader(name, value)
        connection.endheaders()
        try:
            for chunk in body:
                connection.send(chunk)
        except OSError:  # the server answered and closed before the body was all sent
            pass
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def test_limits_and_malformed_payloads(server):
    before = incidents(server)
    big = json.dumps(payload(*[alert(f"f{i}", filler="x" * 50000) for i in range(25)]))
    huge = payload(*[alert(f"f{i}", summary="y" * 100) for i in range(10_000)])
    compact = payload(
        *[
            {
                "status": "firing",
                "labels": {},
                "startsAt": "2024-05-01T00:00:00Z",
                "fingerprint": f"{i:x}",
            }
            for i in range(1001)
        ]
    )
    cases = [
        (_raw_post(server, [big.encode()], {}), 413),
        (_raw_post(server, [json.dumps(huge).encode()], {}), 413),
        (server.post_alert(compact), 422),
        (server.request("POST", "/alerts/alertmanager", raw=b"{not json"), 400),
        (server.request("POST", "/alerts/alertmanager", raw=b"[" * 500_000), 400),
        (server.request("POST", "/alerts/alertmanager", raw=b"\xff\xfe\x00"), 400),
        (server.request("POST", "/alerts/alertmanager", raw=b""), 400),
        (server.post_alert([payload()]), 422),
        (server.post_alert({**payload(), "status": "pending"}), 422),
        (server.post_alert(payload(alert(job_id="job-1; rm -rf /"))), 422),
        (server.post_alert({**payload(), "alerts": [{**alert(), "labels": {"a": ["b"]}}]}), 422),
    ]
    for (status, body), expected in cases:
        assert status == expected, body
        assert isinstance(body["error"], str) and body["error"]
    assert incidents(server) == before


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(server):
    def chunked(parts):
        for part in parts:
            yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
        yield b"0\r\n\r\n"

    parts = [b"[" + b" " * 65536] + [b" " * 65536] * 20
    status, body = _raw_post(server, chunked(parts), {"Transfer-Encoding": "chunked"})
    assert status == 413 and "larger than 1048576 bytes" in body["error"]


def test_hostile_label_values_reach_the_notebook_only_as_json(server, tmp_path):
    marker = tmp_path / "pwned"
    nasty = f'"\'; touch {marker}; $(touch {marker}) `touch {marker}`\n\\" ünï 🔥 {{{{x}}}}'
    doc = payload(alert("h1", summary=nasty, job_id="job-0123456789ab"), group="{}:{hostile}")
    status, receipt = server.post_alert(doc)
    assert status == 202 and receipt["action"] == "queued"
    found = finished(server, receipt["incident"], 1)
    [record] = found["records"]
    assert record["status"] == "succeeded"
    stored = LocalArchive(server.home / "archive").show(record["id"])
    assert stored.parameters["alert"]["alerts"][0]["labels"]["summary"] == nasty
    assert stored.parameters["alert"]["groupKey"] == "{}:{hostile}"
    assert stored.job_ids == ["job-0123456789ab"]
    assert not marker.exists()


# Dedupe, heartbeats, new alerts, resolution ------------------------------------------------
def test_an_alert_group_lifecycle(server):
    group = "{}:{lifecycle}"
    status, opened = server.post_alert(payload(alert("a1"), group=group))
    assert (status, opened["action"], opened["run"]) == (202, "queued", 1)
    incident = opened["incident"]
    finished(server, incident, 1)
    assert server.post_alert(payload(alert("a1"), group=group))[1]["action"] == "heartbeat"
    joined = server.post_alert(payload(alert("a1"), alert("b2"), group=group))[1]
    assert (joined["incident"], joined["action"], joined["run"]) == (incident, "queued", 2)
    finished(server, incident, 2)
    resolved = server.post_alert(
        payload(alert("a1", "resolved"), alert("b2", "resolved"), status="resolved", group=group)
    )[1]
    assert (resolved["incident"], resolved["action"], resolved["run"]) == (incident, "resolved", 3)
    found = finished(server, incident, 3)
    wait_for(lambda: server.request("GET", f"/incidents/{incident}")[1]["status"] == "resolved")
    assert [r["reason"] for r in found["history"]] == ["opened", "new_alerts", "resolved"]
    assert found["notifications"] == 4 and found["heartbeats"] == 1
    assert [r["run"] for r in found["records"]] == [1, 2, 3]
    assert all(r["html"].endswith("notebook.html") for r in found["records"])
    assert found["history"][0]["status_update"].startswith(f"**Export incident {incident}**")
    listed = [i for i in incidents(server) if i["id"] == incident]
    assert listed[0]["runs"] == 3 and listed[0]["group_key"] == group
    shown = subprocess.run(
        exportnb_cmd("archive", "list", "--incident", incident, "--json"),
        env=server.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert [r["record_id"] for r in json.loads(shown.stdout)] == [r["id"] for r in found["records"]]
    stored = LocalArchive(server.home / "archive").show(found["records"][2]["id"])
    assert stored.parameters["alert"]["status"] == "resolved"
    assert stored.job_ids == []  # no job IDs in the alert: the notebook's default applies
    assert server.request("GET", "/incidents?status=resolved")[1]["incidents"][0]["id"]
    assert server.request("GET", "/incidents?limit=0")[0] == 422
    assert server.request("GET", "/incidents/INC-nope")[0] == 404


def test_a_record_page_is_served_inert_and_checked(server):
    opened = server.post_alert(payload(alert("p1"), group="{}:{page}"))[1]
    record = finished(server, opened["incident"], 1)["records"][0]
    assert record["url"] == f"/records/{record['id']}/notebook.html"  # no public_url here

    def get(path, **headers):
        request = urllib.request.Request(server.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    status, headers, page = get(record["url"], Authorization=f"Bearer {TOKEN}")
    stored = LocalArchive(server.home / "archive")
    assert (
        status == 200 and page == Path(stored.show(record["id"]).path("notebook.html")).read_bytes()
    )
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy  # nothing runs
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert get(record["url"])[0] == 401
    assert get(record["url"], Authorization=basic(USER, PASSWORD))[0] == 200
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    missing = record["url"].replace(record["id"].split("/")[1], "20240501T120000Z-00000000")
    for path in (
        missing,
        "/records/INC-x/not-a-stamp/notebook.html",
        "/records/../x/notebook.html",
    ):
        assert get(path, **bearer)[0] == 404, path
    html = Path(stored.show(record["id"]).path("notebook.html"))
    html.chmod(0o644)
    html.write_bytes(html.read_bytes() + b"<!-- changed -->")
    status, _, body = get(record["url"], **bearer)
    assert status == 409 and b"does not match the sha256" in body


def test_the_worker_is_a_real_separate_consumer(server):
    """The embedded consumer is `exportnb worker` in a child process of serve."""
    assert server.process is not None
    children = subprocess.run(
        ["ps", "-ww", "-o", "args=", "--ppid", str(server.process.pid)],
        capture_output=True,
        text=True,
    ).stdout
    assert f"exportnb.cli worker --workers 2 --parent {server.process.pid}" in children
    assert sys.executable in children
