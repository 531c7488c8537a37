"""Tamper evidence: each way of changing an archive is detected, named, and fails verify.

Records are archived through the runner's save path (so the chain and the index see them
as they see runs), then changed on disk the way someone with write access could.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from archive_records import T0, make_record, save
from click.testing import CliRunner
from conftest import exportnb_cmd

from exportnb.archive import chain, index, integrity
from exportnb.archive.store import LocalArchive
from exportnb.cli import main
from exportnb.core.errors import PreconditionFailed
from exportnb.record.model import Record

INCIDENTS = ("INC-1", "INC-1", "INC-1", "INC-2", "INC-2")


pytestmark = pytest.mark.usefixtures("home")  # a fresh $EXPORTNB_HOME (conftest)


@pytest.fixture
def store(tmp_path) -> LocalArchive:
    return LocalArchive(tmp_path / "archive")


@pytest.fixture
def records(store) -> list[Record]:
    made = []
    for n, incident in enumerate(INCIDENTS):
        record, files = make_record(incident, at=T0 + timedelta(minutes=n), job_ids=[f"job-{n}"])
        made.append(save(store, record, files))
    return made


def writable(path: Path) -> Path:
    path.chmod(0o644)
    return path


def flip_a_byte(path: Path, at: int = -10) -> None:
    data = bytearray(writable(path).read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def entry_path(store: LocalArchive, seq: int) -> Path:
    return store.chain_folder / chain.entry_name(seq)


def problems(
    store: LocalArchive, incident: str | None = None
) -> set[tuple[str, str | None, str | None]]:
    found = integrity.verify_archive(store, incident=incident)
    return {(p.kind, p.record_id, p.file) for p in found.problems}


def head_of(store: LocalArchive) -> chain.Head | None:
    with index.Index() as opened:
        return opened.head(store.url)


def cli_verify(store: LocalArchive, *args: str):
    return CliRunner().invoke(main, ["archive", "verify", "--archive", store.url, *args])


# Intact ------------------------------------------------------------------------------------
def test_an_intact_archive_verifies(store, records):
    found = integrity.verify_archive(store)
    assert found.ok and found.problems == [] and found.check() is found
    assert (found.records, found.files, found.chain_length) == (5, 15, 5)
    assert found.bytes == sum(p.stat().st_size for r in records for p in Path(r.location).iterdir())
    assert found.head == head_of(store)
    result = cli_verify(store)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK: 5 record(s) (15 files,")


# One byte ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["notebook.ipynb", "notebook.html"])
def test_a_changed_byte_of_a_notebook_is_named(store, records, name):
    flip_a_byte(Path(records[1].path(name)))
    assert problems(store) == {("file_changed", records[1].record_id, name)}
    result = cli_verify(store)
    assert result.exit_code == 4
    assert f"{records[1].record_id} {name}: file_changed:" in result.stdout
    assert result.stderr.startswith("Error: 1 problem(s) in 5 record(s)")


def test_a_changed_byte_of_record_json_is_named(store, records):
    path = Path(records[2].path("record.json"))
    writable(path).write_bytes(
        path.read_bytes().replace(b'"operator": "alice"', b'"operator": "alicf"')
    )
    assert problems(store) == {("record_changed", records[2].record_id, "record.json")}


def test_a_notebook_rewritten_with_its_record_json_is_caught_by_the_chain(store, records):
    """Someone rewrites the notebook and puts its new sha256 into record.json."""
    folder = Path(records[0].location)
    notebook = writable(folder / "notebook.ipynb")
    notebook.write_bytes(notebook.read_bytes().replace(b"INC-1", b"INC-9"))
    doc = json.loads((folder / "record.json").read_bytes())
    doc["files"]["notebook.ipynb"]["sha256"] = chain.sha256(notebook.read_bytes())
    writable(folder / "record.json").write_text(json.dumps(doc, indent=2) + "\n")
    assert problems(store) == {("record_changed", records[0].record_id, "record.json")}


def test_a_changed_chain_entry_is_named(store, records):
    flip_a_byte(entry_path(store, 2), at=60)  # inside the record ID
    found = integrity.verify_archive(store)
    kinds = {(p.kind, p.file) for p in found.problems}
    assert ("entry_changed", ".chain/0000000002.json") in kinds
    assert ("chain_broken", ".chain/0000000003.json") in kinds  # its prev no longer matches


# Removed ----------------------------------------------------------------------------------
def test_a_removed_record_is_named(store, records):
    shutil.rmtree(writable(Path(records[2].location)))
    assert problems(store) == {("record_missing", records[2].record_id, None)}
    result = cli_verify(store)
    assert result.exit_code == 4 and records[2].record_id in result.stdout


def test_the_last_record_removed_is_named(store, records):
    shutil.rmtree(Path(records[-1].location))
    assert problems(store) == {("record_missing", records[-1].record_id, None)}


def test_the_last_record_removed_with_its_chain_entry_is_named_by_the_index(store, records):
    """The chain alone cannot show its own end cut off: the head the index witnessed can."""
    shutil.rmtree(Path(records[-1].location))
    entry_path(store, 5).unlink()
    found = problems(store)
    assert ("entry_missing", records[-1].record_id, ".chain/0000000005.json") in found
    assert ("record_missing", records[-1].record_id, None) in found
    with pytest.raises(PreconditionFailed, match="no longer holds entry 5"):
        index.reindex(store)  # a rebuild keeps the witness: nothing changes
    assert head_of(store).seq == 5


def test_a_removed_entry_in_the_middle_is_a_gap(store, records):
    entry_path(store, 3).unlink()
    found = problems(store)
    assert ("entry_missing", None, ".chain/") in found  # the gap itself
    assert ("entry_missing", records[2].record_id, ".chain/0000000003.json") in found
    assert ("unchained", records[2].record_id, "record.json") in found


# Reordered --------------------------------------------------------------------------------
def test_a_reordered_chain_is_named(store, records):
    third, fourth = entry_path(store, 3), entry_path(store, 4)
    swap = third.with_suffix(".swap")
    third.rename(swap)
    fourth.rename(third)
    swap.rename(fourth)
    found = problems(store)
    assert ("entry_moved", records[3].record_id, ".chain/0000000003.json") in found
    assert ("entry_moved", records[2].record_id, ".chain/0000000004.json") in found
    assert ("chain_broken", records[3].record_id, ".chain/0000000003.json") in found
    result = cli_verify(store, "--json")
    assert result.exit_code == 4
    out = json.loads(result.stdout)
    assert out["ok"] is False and {"entry_moved", "chain_broken"} <= {
        p["kind"] for p in out["problems"]
    }


def test_a_chain_rewritten_with_valid_hashes_is_caught_by_the_witness(store, records):
    """An attacker swaps two records' places and recomputes every hash after them."""
    order = [records[0], records[2], records[1], records[3], records[4]]
    for seq in range(1, 6):
        entry_path(store, seq).unlink()
    forger = LocalArchive(store.root)  # another process, from an empty chain
    for record in order:
        data = Path(record.path("record.json")).read_bytes()
        chain.append(forger, record.record_id, data)
    assert integrity.verify(store).ok  # the chain alone is consistent again
    found = problems(store)
    assert ("entry_moved", records[1].record_id, ".chain/0000000002.json") in found
    assert ("head_changed", None, ".chain/0000000005.json") in found


# Inserted, and what verify --incident covers -----------------------------------------------
def test_an_inserted_record_is_named(store, records):
    record, files = make_record("INC-2", at=T0 + timedelta(hours=1))
    store._put(record.record_id, files)  # around the chain, the way a copy into place would
    assert problems(store) == {("unchained", record.record_id, "record.json")}


def test_verify_of_one_incident_checks_its_records_and_the_whole_chain(store, records):
    flip_a_byte(Path(records[4].path("notebook.ipynb")))
    assert problems(store, "INC-1") == set()
    assert problems(store, "INC-2") == {("file_changed", records[4].record_id, "notebook.ipynb")}
    entry_path(store, 1).unlink()
    assert ("entry_missing", records[0].record_id, ".chain/0000000001.json") in problems(
        store, "INC-2"
    )


def test_a_clean_verify_witnesses_records_archived_elsewhere(store, records, tmp_path):
    """Another machine archives into the same archive: a clean verify moves the head on."""
    other = LocalArchive(store.root)
    record, files = make_record("INC-3", at=T0 + timedelta(hours=2))
    other.write(record.record_id, files)  # no runner hook: this index has not seen it
    assert integrity.verify_archive(store).ok
    assert head_of(store).seq == 6
    shutil.rmtree(Path(other.location(record.record_id)))
    entry_path(store, 6).unlink()
    found = problems(store)
    assert ("entry_missing", record.record_id, ".chain/0000000006.json") in found
    assert ("record_missing", record.record_id, None) in found


def test_a_real_subprocess_exits_4_and_prints_no_traceback(store, records, home):
    flip_a_byte(Path(records[0].path("notebook.html")))
    env = {**os.environ, "EXPORTNB_HOME": str(home)}
    done = subprocess.run(
        exportnb_cmd("archive", "verify", "--archive", store.url),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 4
    assert f"{records[0].record_id} notebook.html: file_changed" in done.stdout
    assert done.stderr.startswith("Error: 1 problem(s)") and "Traceback" not in done.stderr


def test_writers_racing_keep_one_chain(store):
    """Four writers (each its own archive object, as separate processes would be) archive at
    once: every record is chained once, in one unbroken chain, and indexed."""
    from concurrent.futures import ThreadPoolExecutor

    def writer(n: int) -> None:
        mine = LocalArchive(store.root)
        for k in range(5):
            record, files = make_record(f"INC-W{n}", at=T0 + timedelta(minutes=k))
            save(mine, record, files)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(writer, range(4)))
    found = integrity.verify_archive(store)
    assert found.ok and found.records == 20 and found.chain_length == 20
    assert len(index.search(store)) == 20
