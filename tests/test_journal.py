"""The incident journal: append-only JSON lines, a hash chain, a lock across processes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC

import pytest

from exportnb.core.errors import InvalidInput, PreconditionFailed
from exportnb.mitigation.journal import GENESIS, Journal, journal_path, read_journal


def write_some(journal: Journal) -> None:
    journal.append(
        "plan",
        action="pause-bulk",
        key="k1",
        operator="dana",
        params={"round": 1},
        outcome="planned",
        detail={"summary": "pause"},
    )
    journal.append("apply", action="pause-bulk", key="k1", operator="dana", outcome="applying")
    journal.append("result", action="pause-bulk", key="k1", operator="dana", outcome="succeeded")


def entries_sha(data: dict) -> str:
    rest = {k: v for k, v in data.items() if k != "sha256"}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def test_entries_are_chained_numbered_lines_with_utc_times(tmp_path):
    journal = Journal("INC-1", home=tmp_path)
    write_some(journal)
    path = tmp_path / "incidents" / "INC-1" / "journal.jsonl"
    assert journal.path == path == journal_path("INC-1", tmp_path)
    lines = path.read_bytes().splitlines()
    first = json.loads(lines[0])
    assert first["schema"] == 1 and first["seq"] == 1 and first["prev"] == GENESIS
    assert first["at"].endswith("Z") and first["operator"] == "dana"
    assert json.loads(lines[1])["prev"] == first["sha256"] == entries_sha(first)
    entries = read_journal("INC-1", home=tmp_path)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert [e.kind for e in entries] == ["plan", "apply", "result"]
    assert all(e.at.tzinfo is UTC for e in entries)
    assert entries[0].params == {"round": 1} and entries[0].detail == {"summary": "pause"}
    assert entries[2].sha256 == json.loads(lines[2])["sha256"]


def test_applied_needs_a_successful_result(tmp_path):
    journal = Journal("INC-2", home=tmp_path)
    journal.append("result", action="retry", key="a", operator="x", outcome="failed")
    assert journal.applied("a") is None
    journal.append("result", action="retry", key="a", operator="x", outcome="succeeded")
    assert journal.applied("a").seq == 2
    assert journal.applied("b") is None
    assert read_journal("INC-none", home=tmp_path) == []


@pytest.mark.parametrize(
    "edit", ["change", "change-last", "rehash", "delete", "insert", "truncate", "garbage"]
)
def test_tampering_is_detected_and_blocks_further_appends(tmp_path, edit):
    journal = Journal("INC-3", home=tmp_path)
    write_some(journal)
    lines = journal.path.read_bytes().splitlines(keepends=True)
    if edit == "change":
        lines[1] = lines[1].replace(b"dana", b"eve!")
    elif edit == "change-last":
        lines[2] = lines[2].replace(b"succeeded", b"failed")
    elif edit == "rehash":  # a careful forger recomputes the hash: the next line shows it
        data = json.loads(lines[1])
        data["operator"] = "eve"
        data["sha256"] = entries_sha(data)
        lines[1] = json.dumps(data, separators=(",", ":")).encode() + b"\n"
    elif edit == "delete":
        del lines[1]
    elif edit == "insert":
        lines.insert(1, lines[0])
    elif edit == "truncate":
        lines[-1] = lines[-1][:-10]
    else:
        lines[0] = b"not json\n"
    journal.path.write_bytes(b"".join(lines))
    with pytest.raises(PreconditionFailed, match=r"journal .* is broken at line"):
        journal.entries()
    size = journal.path.stat().st_size
    with pytest.raises(PreconditionFailed):
        journal.append("plan", action="retry", key="z", operator="x")
    assert journal.path.stat().st_size == size


def test_bad_incident_ids_and_kinds_are_refused(tmp_path):
    with pytest.raises(InvalidInput):
        Journal("../etc", home=tmp_path)
    with pytest.raises(InvalidInput):
        Journal("INC-4", home=tmp_path).append("delete", action="x", key="k", operator="x")
    assert not (tmp_path / "incidents" / "INC-4" / "journal.jsonl").exists()


def test_the_lock_is_reentrant_within_a_journal(tmp_path):
    journal = Journal("INC-5", home=tmp_path)
    with journal.locked(), journal.locked():
        journal.append("plan", action="retry", key="k", operator="x")
    assert len(journal.entries()) == 1


APPENDER = """
import sys
from pathlib import Path
from exportnb.mitigation.journal import Journal
journal = Journal("INC-6", home=Path(sys.argv[1]))
for i in range(int(sys.argv[2])):
    journal.append("plan", action="retry", key=f"{sys.argv[3]}-{i}", operator=sys.argv[3])
"""


def test_appends_from_concurrent_processes_keep_the_chain(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(tmp_path), "40", name])
        for name in ("p1", "p2", "p3")
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    entries = read_journal("INC-6", home=tmp_path)
    assert [e.seq for e in entries] == list(range(1, 121))
    assert {e.operator for e in entries} == {"p1", "p2", "p3"}
