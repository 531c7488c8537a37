"""``exportnb archive``: each command over a real local archive, with its exit codes."""

from __future__ import annotations

import json
import tarfile
from datetime import timedelta
from pathlib import Path

import pytest
from archive_records import T0, journal_bundle, make_record, save
from click.testing import CliRunner

from exportnb.archive.store import LocalArchive
from exportnb.cli import main
from exportnb.cli.archive import archive_group
from exportnb.core.ids import sha256

pytestmark = pytest.mark.usefixtures("home")  # a fresh $EXPORTNB_HOME (conftest)


@pytest.fixture
def store(tmp_path, home, monkeypatch) -> LocalArchive:
    archive = LocalArchive(tmp_path / "archive")
    monkeypatch.setenv("EXPORTNB_ARCHIVE", archive.url)
    return archive


@pytest.fixture
def records(store, home):
    mitigated = [journal_bundle(home, "INC-7", [("retry", "dana")])]
    made = [
        make_record("INC-7", at=T0, job_ids=["job-1"], tenants=["acme"], status="failed"),
        make_record(
            "INC-7",
            at=T0 + timedelta(minutes=20),
            job_ids=["job-1", "job-2"],
            tenants=["acme", "globex"],
            extra=mitigated,
        ),
        make_record(
            "INC-8",
            at=T0 + timedelta(days=3),
            job_ids=["job-9"],
            tenants=["wayne"],
            findings=[("throttling", "critical")],
        ),
    ]
    return [save(store, record, files) for record, files in made]


def run(*args: str):
    return CliRunner().invoke(main, ["archive", *args])


def test_every_command_has_help():
    for name, command in archive_group.commands.items():
        assert command.help and len(command.help) > 20, name
        result = run(name, "--help")
        assert result.exit_code == 0 and "Usage:" in result.stdout


def test_list_and_search(records):
    listed = run("list")
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["RECORD", "VER", "STATUS"]
    assert [line.split()[:3] for line in lines[1:]] == [
        [records[0].record_id, "1", "failed"],
        [records[1].record_id, "2", "succeeded"],
        [records[2].record_id, "1", "succeeded"],
    ]
    found = json.loads(run("search", "--job-id", "job-1", "--json").stdout)
    assert [r["record_id"] for r in found] == [records[0].record_id, records[1].record_id]
    assert found[1]["version"] == 2 and found[1]["chain_seq"] == 2
    for args, expected in (
        (["--tenant", "globex"], [records[1]]),
        (["--status", "failed"], [records[0]]),
        (["--finding", "throttling"], [records[2]]),
        (["--incident", "INC-8"], [records[2]]),
        (["--since", "2024-05-02"], [records[2]]),
        (["--until", "2024-05-01T12:10Z"], [records[0]]),
    ):
        out = json.loads(run("search", *args, "--json").stdout)
        assert [r["record_id"] for r in out] == [r.record_id for r in expected], args
    assert run("search", "--job-id", "job-none").stdout == "No records.\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--since", "someday"], "neither a time"),
        (["--incident", "../x"], "incident ID"),
        (["--limit", "0"], "at least 1"),
    ],
)
def test_bad_search_input_is_an_error_with_exit_code_2(records, args, message):
    result = run("search", *args)
    assert (
        result.exit_code == 2 and result.stderr.startswith("Error: ") and message in result.stderr
    )


def test_show_names_the_facts_and_mitigations(records):
    result = run("show", records[1].record_id)
    assert result.exit_code == 0
    for text in (
        "jobs:      job-1 job-2",
        "tenants:   acme globex",
        "applied   retry by dana",
        f"{records[1].path('notebook.html')}",
    ):
        assert text in result.stdout
    shown = json.loads(run("show", records[1].record_id, "--json").stdout)
    assert shown["facts"]["mitigations"][0]["operator"] == "dana"
    assert shown["paths"]["record.json"] == records[1].path("record.json")
    missing = run("show", "INC-7/20240501T120000Z-00000000")
    assert missing.exit_code == 3 and missing.stderr.startswith("Error: no record")


def test_show_and_html_take_an_incident_id_for_its_latest_record(records, store):
    result = run("show", "INC-7")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Record {records[1].record_id} (the latest of incident INC-7)")
    assert json.loads(run("show", "INC-8", "--json").stdout)["record_id"] == records[2].record_id
    assert run("html", "INC-7").stdout.strip() == records[1].path("notebook.html")
    for command in ("show", "html"):
        missing = run(command, "INC-9")
        assert missing.exit_code == 3 and missing.stderr == (
            f"Error: no records of incident INC-9 in {store.url}\n"
        )
        bad = run(command, "../INC-7")
        assert bad.exit_code == 2 and "is not a record ID" in bad.stderr


def test_html_prints_copies_and_checks_the_page(records, tmp_path):
    result = run("html", records[0].record_id)
    assert result.exit_code == 0 and result.stdout.strip() == records[0].path("notebook.html")
    copy = tmp_path / "page.html"
    result = run("html", records[0].record_id, "-o", str(copy))
    assert result.exit_code == 0 and result.stdout.strip() == str(copy)
    assert copy.read_bytes() == Path(records[0].path("notebook.html")).read_bytes()
    page = Path(records[0].path("notebook.html"))
    page.chmod(0o644)
    page.write_bytes(page.read_bytes() + b"<!-- changed -->")
    result = run("html", records[0].record_id)
    assert result.exit_code == 4 and "does not match the sha256" in result.stderr


def test_export_to_a_folder_with_a_manifest_of_hashes(records, tmp_path):
    target = tmp_path / "out"
    result = run("export", "INC-7", "-o", str(target), "--json")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["records"] == [records[0].record_id, records[1].record_id]
    manifest = json.loads((target / "MANIFEST.json").read_text())
    assert manifest["schema"] == "exportnb.export/v1" and manifest["incident_id"] == "INC-7"
    assert [r["version"] for r in manifest["records"]] == [1, 2]
    for line in (target / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        assert sha256((target / name).read_bytes()) == digest, name
    entry = json.loads((target / manifest["records"][1]["chain"]["file"]).read_text())
    record_json = (target / records[1].record_id / "record.json").read_bytes()
    assert entry["record_sha256"] == sha256(record_json)
    again = run("export", "INC-7", "-o", str(target))
    assert again.exit_code == 2 and "exists" in again.stderr


def test_export_to_a_tarball(records, tmp_path):
    target = tmp_path / "inc-7.tar.gz"
    result = run("export", "INC-7", "-o", str(target))
    assert result.exit_code == 0 and "Exported 2 record(s) of INC-7" in result.stdout
    with tarfile.open(target) as tar:
        names = tar.getnames()
    assert f"inc-7/{records[0].record_id}/notebook.ipynb" in names
    assert "inc-7/MANIFEST.json" in names and "inc-7/SHA256SUMS" in names
    assert not list(tmp_path.glob(".inc-7*"))


def test_a_tampered_incident_is_not_exported(records, tmp_path):
    notebook = Path(records[1].path("notebook.ipynb"))
    notebook.chmod(0o644)
    notebook.write_bytes(notebook.read_bytes().replace(b"INC-7", b"INC-X"))
    result = run("export", "INC-7", "-o", str(tmp_path / "out"))
    assert result.exit_code == 4 and "nothing was exported" in result.stderr
    assert not (tmp_path / "out").exists()
    assert run("export", "INC-8", "-o", str(tmp_path / "other")).exit_code == 0
    assert run("export", "INC-404", "-o", str(tmp_path / "none")).exit_code == 3


def test_reindex_and_accepting_a_cut_chain(records, store, home):
    result = run("reindex", "--json")
    assert result.exit_code == 0
    done = json.loads(result.stdout)
    assert done["records"] == 3 and done["head"]["seq"] == 3 and done["unchained"] == []
    last = Path(records[2].location)
    for path in last.iterdir():
        path.chmod(0o644)
    for path in [*last.iterdir(), store.chain_folder / "0000000003.json"]:
        path.unlink()
    last.rmdir()
    refused = run("reindex")
    assert refused.exit_code == 4 and "--accept-chain" in refused.stderr
    assert run("verify").exit_code == 4
    accepted = run("reindex", "--accept-chain")
    assert accepted.exit_code == 0 and "chain head witnessed: entry 2" in accepted.stdout
    assert run("verify").exit_code == 0
