"""The archive: write-once records in a local folder and on S3 (a real moto server over HTTP)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner

from exportnb.archive import store as archive
from exportnb.archive.retention import Retention
from exportnb.archive.store import LocalArchive, S3Archive, open_archive
from exportnb.cli import main
from exportnb.core.errors import ConfigError, InvalidInput, NotFound, StorageError
from exportnb.platform import storage
from exportnb.record.model import Record, RecordError, RecordFile
from exportnb.run import runner
from exportnb.sandbox.s3server import MotoServer

NOTEBOOKS = Path(__file__).parent / "notebooks"
BUCKET = "records-archive"


def a_record(record_id: str = "INC-1/20240501T120000Z-0123abcd", **changes) -> Record:
    started = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    record = Record(
        record_id=record_id,
        incident_id=record_id.split("/")[0],
        status="failed",
        started_at=started,
        ended_at=started,
        duration_seconds=1.5,
        operator="alice",
        notebook="/templates/export_failure.ipynb",
        job_ids=["job-1"],
        parameters={"window_minutes": 10},
        error=RecordError("ValueError", "boom", 5, "c-3", 3),
        files={"notebook.ipynb": RecordFile("00" * 32, 2)},
        versions={"python": "3.11"},
        results=[
            {
                "cell_index": 4,
                "schema": 1,
                "step": "detection",
                "type": "Detection",
                "result": {
                    "findings": [
                        {
                            "code": "failure_rate_high",
                            "severity": "critical",
                            "summary": "high",
                            "step": "detection",
                            "evidence": {},
                        },
                        {"code": "odd", "severity": "bogus", "summary": "ignored", "step": "x"},
                    ]
                },
            }
        ],
    )
    return replace(record, **changes)


def files_of(record: Record) -> dict[str, bytes]:
    return {
        "notebook.ipynb": b"{}",
        "notebook.html": b"<html></html>",
        "record.json": record.to_json(),
    }


pytestmark = pytest.mark.usefixtures("home")  # a fresh $EXPORTNB_HOME (conftest)


@pytest.fixture(scope="module")
def s3_endpoint():
    old = {
        k: os.environ.get(k)
        for k in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL",
        )
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test-secret",
        AWS_DEFAULT_REGION="us-east-1",
    )
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
    assert keys == {prefix + n for n in ("notebook.ipynb", "notebook.html", "record.json")} | {
        "runs/.chain/0000000001.json"
    }
    entry = json.loads(
        s3.get_object(Bucket=BUCKET, Key="runs/.chain/0000000001.json")["Body"].read()
    )
    record_json = s3.get_object(Bucket=BUCKET, Key=prefix + "record.json")["Body"].read()
    assert entry["record_id"] == record.record_id and entry["seq"] == 1
    assert entry["record_sha256"] == hashlib.sha256(record_json).hexdigest()
    body = s3.get_object(Bucket=BUCKET, Key=prefix + "notebook.ipynb")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == record.files["notebook.ipynb"].sha256
    head = s3.head_object(Bucket=BUCKET, Key=prefix + "notebook.html")
    assert head["ContentType"].startswith("text/html")
    result = CliRunner().invoke(
        main, ["archive", "show", record.record_id, "--archive", url, "--json"]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["error"]["ename"] == "ValueError"
    assert shown["paths"]["notebook.html"] == f"s3://{BUCKET}/{prefix}notebook.html"


def test_a_missing_bucket_is_refused_before_running(s3_endpoint, home):
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--notebook",
            str(NOTEBOOKS / "succeeds.ipynb"),
            "--archive",
            "s3://no-such-bucket/x",
        ],
    )
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
    as_json = json.loads(
        cli.invoke(main, ["archive", "list", "--archive", store.url, "--json"]).stdout
    )
    assert as_json[0]["record_id"] == record.record_id and as_json[0]["findings"]["critical"] == 1
    shown = cli.invoke(main, ["archive", "show", record.record_id, "--archive", store.url])
    assert shown.exit_code == 0
    for text in (
        "ValueError: boom",
        "critical detection: high (failure_rate_high)",
        str(Path(store.location(record.record_id)) / "notebook.html"),
    ):
        assert text in shown.stdout
    missing = cli.invoke(
        main, ["archive", "show", "INC-1/20240501T120000Z-00000000", "--archive", store.url]
    )
    assert missing.exit_code == 3 and missing.stderr.startswith("Error: no record")
    empty = cli.invoke(main, ["archive", "list", "--archive", str(tmp_path / "none")])
    assert empty.exit_code == 0 and empty.stdout == "No records.\n"


# S3 Object Lock ------------------------------------------------------------------------------
def retention_of(s3, bucket: str, key: str) -> tuple[str | None, datetime | None]:
    """The retention S3 reports for an object. moto's server (5.2) answers GetObjectRetention
    with HTTP 500 (not implemented), so it is read from HeadObject, which reports the same
    mode and date (x-amz-object-lock-mode, x-amz-object-lock-retain-until-date)."""
    head = s3.head_object(Bucket=bucket, Key=key)
    return head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")


@pytest.fixture
def locked(s3_endpoint):
    """A new bucket created with Object Lock enabled (so: versioned)."""
    s3 = storage.client(s3_endpoint)
    bucket = f"locked-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return s3, bucket


def test_records_on_a_locked_bucket_carry_the_configured_retention(locked, home):
    s3, bucket = locked
    home.mkdir(parents=True)
    (home / "config.toml").write_text(
        '[archive]\nobject_lock_mode = "compliance"\nobject_lock_days = 3\n'
    )
    record = a_record()
    before = datetime.now(UTC)
    store = open_archive(f"s3://{bucket}/records")
    store.write(record.record_id, files_of(record))
    keys = [
        f"records/{record.record_id}/{n}"
        for n in ("notebook.ipynb", "notebook.html", "record.json")
    ]
    keys.append("records/.chain/0000000001.json")
    for key in keys:
        mode, until = retention_of(s3, bucket, key)
        assert mode == "COMPLIANCE", key
        assert before + timedelta(days=3) - timedelta(seconds=5) <= until
        assert until <= datetime.now(UTC) + timedelta(days=3, seconds=5)
    version = s3.list_object_versions(Bucket=bucket, Prefix=keys[0])["Versions"][0]["VersionId"]
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=bucket, Key=keys[0], VersionId=version)
    with pytest.raises(StorageError, match="already exists"):
        store.write(record.record_id, {**files_of(record), "notebook.ipynb": b"changed"})
    assert len(s3.list_object_versions(Bucket=bucket, Prefix=keys[0])["Versions"]) == 1


def test_the_buckets_default_rule_applies_when_nothing_is_configured(locked):
    s3, bucket = locked
    s3.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 5}},
        },
    )
    store = open_archive(f"s3://{bucket}/records")
    assert store.retention == Retention("governance", 5)
    record = a_record()
    store.write(record.record_id, files_of(record))
    mode, until = retention_of(s3, bucket, store.key(record.record_id, "record.json"))
    assert mode == "GOVERNANCE" and until > datetime.now(UTC) + timedelta(days=4)


def test_a_bucket_without_object_lock_gets_no_retention(s3_endpoint, tmp_path):
    store = open_archive(f"s3://{BUCKET}/{tmp_path.name}")
    record = a_record()
    store.write(record.record_id, files_of(record))
    assert store.retention is None
    head = storage.client(s3_endpoint).head_object(
        Bucket=BUCKET, Key=store.key(record.record_id, "record.json")
    )
    assert "ObjectLockMode" not in head


@pytest.mark.parametrize(
    "table", ['object_lock_mode = "forever"', "object_lock_days = 0", 'object_lock_days = "7"']
)
def test_object_lock_settings_are_checked(home, table):
    home.mkdir(parents=True)
    (home / "config.toml").write_text(f"[archive]\n{table}\n")
    with pytest.raises(ConfigError, match=r"\[archive\] object_lock"):
        open_archive("s3://any-bucket/records")
    result = CliRunner().invoke(main, ["archive", "list", "--archive", "s3://any-bucket/x"])
    assert result.exit_code == 2 and result.stderr.startswith("Error: ")


def test_a_record_deleted_from_a_versioned_bucket_is_named_by_verify(locked):
    from exportnb.archive import integrity

    s3, bucket = locked
    store = open_archive(f"s3://{bucket}/records")
    record = a_record()
    store.write(record.record_id, files_of(record))
    s3.delete_object(Bucket=bucket, Key=store.key(record.record_id, "record.json"))
    found = {(p.kind, p.record_id, p.file) for p in integrity.verify(store).problems}
    assert found == {
        ("deleted", record.record_id, "record.json"),
        ("record_missing", record.record_id, None),
    }
