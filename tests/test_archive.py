"""The archive: write-once records in a local folder and on S3 (a real moto server over HTTP)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from exportnb import archive, runner, storage
from exportnb.archive import LocalArchive, S3Archive, open_archive
from exportnb.cli import main
from exportnb.errors import InvalidInput, NotFound, StorageError
from exportnb.record import Record, RecordError, RecordFile
from exportnb.sandbox.s3server import MotoServer

NOTEBOOKS = Path(__file__).parent / "notebooks"
BUCKET = "records-archive"


def a_record(record_id: str = "INC-1/20240501T120000Z-0123abcd", **changes) -> Record:
    started = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    record = Record(
        record_id=record_id, incident_id=record_id.split("/")[0], status="failed",
        started_at=started, ended_at=started, duration_seconds=1.5, operator="alice",
        notebook="/templates/export_failure.ipynb", job_ids=["job-1"],
        parameters={"window_minutes": 10}, error=RecordError("ValueError", "boom", 5, "c-3", 3),
        files={"notebook.ipynb": RecordFile("00" * 32, 2)}, versions={"python": "3.11"},
        results=[{"cell_index": 4, "schema": 1, "step": "detection", "type": "Detection",
                  "result": {"findings": [
                      {"code": "failure_rate_high", "severity": "critical", "summary": "high",
                       "step": "detection", "evidence": {}},
                      {"code": "odd", "severity": "bogus", "summary": "ignored", "step": "x"},
                  ]}}],
    )  # fmt: skip
    return replace(record, **changes)


def files_of(record: Record) -> dict[str, bytes]:
    return {"notebook.ipynb": b"{}", "notebook.html": b"<html></html>",
            "record.json": record.to_json()}  # fmt: skip


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EXPORTNB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EXPORTNB_ARCHIVE", raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def s3_endpoint():
    old = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                           "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}  # fmt: skip
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test-secret",
                      AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    with MotoServer() as server:
        os.environ["AWS_ENDPOINT_URL"] = server.url
        storage.client(server.url).create_bucket(Bucket=BUCKET)
        yield server.url
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> archive.Archive:
    if request.param == "local":
        return LocalArchive(tmp_path / "archive")
    request.getfixturevalue("s3_endpoint")
    return open_archive(f"s3://{BUCKET}/{tmp_path.name}/records")


# Both archives ------------------------------------------------------------------------
def test_write_show_and_list(store):
    first, second = a_record(), a_record("INC-2/20240502T000000Z-feedbeef", status="succeeded")
    for record in (second, first):
        location = store.write(record.record_id, files_of(record))
        assert location == store.location(record.record_id)
    shown = store.show(first.record_id)
    assert replace(shown, location="") == first and shown.location == store.location(
        first.record_id
    )
    assert shown.path("notebook.html").endswith("/INC-1/20240501T120000Z-0123abcd/notebook.html")
    assert [s.record_id for s in store.list()] == [first.record_id, second.record_id]
    summary = store.list("INC-1")[0]
    assert summary.findings == {"critical": 1, "warning": 0, "info": 0}
    assert summary.error == "cell 5 (In [3]): ValueError: boom"
    assert store.list("INC-404") == []
    assert store.read(first.record_id, "notebook.html") == b"<html></html>"


def test_a_record_is_written_once(store):
    record = a_record()
    store.write(record.record_id, files_of(record))
    with pytest.raises(StorageError, match="already exists"):
        store.write(record.record_id, {**files_of(record), "notebook.ipynb": b"changed"})
    assert store.read(record.record_id, "notebook.ipynb") == b"{}"
    assert [s.record_id for s in store.list()] == [record.record_id]


def test_unknown_and_malformed_record_ids(store):
    with pytest.raises(NotFound):
        store.show("INC-1/20240501T120000Z-00000000")
    for bad in ("../../etc/passwd", "INC-1", "INC-1/x/../../y", "/INC-1/20240501T120000Z-0123abcd"):
        with pytest.raises(InvalidInput):
            store.show(bad)
    with pytest.raises(InvalidInput):
        store.list("../other")


def test_a_corrupt_record_json_is_a_storage_error(store):
    record = a_record()
    store.write(record.record_id, {**files_of(record), "record.json": b'{"schema": "nope"}'})
    with pytest.raises(StorageError, match=r"not a valid record\.json"):
        store.show(record.record_id)


# Local ---------------------------------------------------------------------------------
def test_local_records_are_read_only_files_and_no_partial_folder_is_left(tmp_path):
    store = LocalArchive(tmp_path / "archive")
    record = a_record()
    location = Path(store.write(record.record_id, files_of(record)))
    assert {p.name: p.stat().st_mode & 0o777 for p in location.iterdir()} == dict.fromkeys(
        ("notebook.ipynb", "notebook.html", "record.json"), 0o444
    )
    with pytest.raises(InvalidInput, match="a record holds"):
        store.write("INC-3/20240501T120000Z-0123abcd", {"notebook.ipynb": b"{}"})
    assert not (tmp_path / "archive" / "INC-3").exists()
    assert list((tmp_path / "archive" / ".incoming").iterdir()) == []
    blocked = a_record("INC-4/20240501T120000Z-0123abcd")
    (tmp_path / "archive" / "INC-4").write_text("a file where the incident folder goes")
    with pytest.raises(StorageError, match="cannot write record"):
        store.write(blocked.record_id, files_of(blocked))
    assert list((tmp_path / "archive" / ".incoming").iterdir()) == []


# Which archive ---------------------------------------------------------------------------
def test_archive_url_resolution_order(home, monkeypatch, tmp_path):
    assert archive.archive_url() == str(home / "archive")
    home.mkdir(parents=True)
    (home / "config.toml").write_text('[archive]\nurl = "s3://from-config/records"\n')
    assert archive.archive_url() == "s3://from-config/records"
    monkeypatch.setenv("EXPORTNB_ARCHIVE", str(tmp_path / "from-env"))
    assert archive.archive_url() == str(tmp_path / "from-env")
    assert archive.archive_url("file:///explicit") == "file:///explicit"
    assert isinstance(open_archive("file:///explicit"), LocalArchive)
    assert open_archive("file:///explicit").url == "/explicit"
    with pytest.raises(InvalidInput, match="no archive for"):
        open_archive("ftp://host/x")


def test_more_schemes_register_by_name(tmp_path):
    archive.register("mem", lambda url: LocalArchive(tmp_path / url.split("://", 1)[1]))
    try:
        assert open_archive("mem://box").url == str(tmp_path / "box")
    finally:
        archive.ARCHIVES.pop("mem")


# S3 ---------------------------------------------------------------------------------------
def test_a_run_archived_on_s3_matches_its_sha256(s3_endpoint):
    url = f"s3://{BUCKET}/runs"
    record = runner.run(NOTEBOOKS / "raises.ipynb", incident_id="INC-S3", archive=url)
    assert record.status == "failed" and record.location.startswith(f"{url}/INC-S3/")
    s3 = storage.client(s3_endpoint)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/")["Contents"]}
    prefix = f"runs/{record.record_id}/"
    assert keys == {prefix + n for n in ("notebook.ipynb", "notebook.html", "record.json")}
    body = s3.get_object(Bucket=BUCKET, Key=prefix + "notebook.ipynb")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == record.files["notebook.ipynb"].sha256
    head = s3.head_object(Bucket=BUCKET, Key=prefix + "notebook.html")
    assert head["ContentType"].startswith("text/html")
    result = CliRunner().invoke(main, ["archive", "show", record.record_id, "--archive", url,
                                       "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["error"]["ename"] == "ValueError"
    assert shown["paths"]["notebook.html"] == f"s3://{BUCKET}/{prefix}notebook.html"


def test_a_missing_bucket_is_refused_before_running(s3_endpoint, home):
    result = CliRunner().invoke(main, ["run", "--notebook", str(NOTEBOOKS / "succeeds.ipynb"),
                                       "--archive", "s3://no-such-bucket/x"])  # fmt: skip
    assert result.exit_code == 6 and result.stderr.startswith("Error: HeadBucket no-such-bucket")


def test_when_the_archive_refuses_the_record_is_kept_locally(s3_endpoint, home):
    class Refusing(S3Archive):
        def write(self, record_id, files):
            raise StorageError("the archive is read-only today", code="AccessDenied")

    store = Refusing(f"s3://{BUCKET}/refused")
    with pytest.raises(StorageError, match="the record is kept in") as caught:
        runner.run(NOTEBOOKS / "succeeds.ipynb", incident_id="INC-K", archive=store)
    kept = Path(caught.value.message.rsplit("kept in ", 1)[1])
    assert kept.is_relative_to(home / "unarchived") and (kept / "record.json").is_file()


# CLI ---------------------------------------------------------------------------------------
def test_archive_commands(tmp_path):
    store = LocalArchive(tmp_path / "a")
    record = a_record()
    store.write(record.record_id, files_of(record))
    cli = CliRunner()
    listed = cli.invoke(main, ["archive", "list", "--archive", store.url])
    assert listed.exit_code == 0 and record.record_id in listed.stdout
    assert "failed" in listed.stdout
    as_json = json.loads(cli.invoke(main, ["archive", "list", "--archive", store.url,
                                           "--json"]).stdout)  # fmt: skip
    assert as_json[0]["record_id"] == record.record_id and as_json[0]["findings"]["critical"] == 1
    shown = cli.invoke(main, ["archive", "show", record.record_id, "--archive", store.url])
    assert shown.exit_code == 0
    for text in ("ValueError: boom", "critical detection: high (failure_rate_high)",
                 str(Path(store.location(record.record_id)) / "notebook.html")):  # fmt: skip
        assert text in shown.stdout
    missing = cli.invoke(main, ["archive", "show", "INC-1/20240501T120000Z-00000000",
                                "--archive", store.url])  # fmt: skip
    assert missing.exit_code == 3 and missing.stderr.startswith("Error: no record")
    empty = cli.invoke(main, ["archive", "list", "--archive", str(tmp_path / "none")])
    assert empty.exit_code == 0 and empty.stdout == "No records.\n"
