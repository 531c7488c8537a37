"""Verify an archive: every file of every record against its sha256, and the hash chain.

:func:`verify` reads each file once. It hashes ``record.json`` and compares it with the
record's chain entry, then hashes ``notebook.ipynb`` and ``notebook.html`` and compares
them (size and sha256) with what ``record.json`` states. It walks the chain
(:mod:`exportnb.archive.chain`) entry by entry, and compares the chain with what the index
witnessed before (:class:`Witness`: the head, and which record each seq named). Records
are checked on a pool of threads: reading and ``hashlib`` release the GIL.

Each problem is a :class:`Problem` that names the record, the file and what is wrong; its
``kind`` is one of :data:`PROBLEMS`. :meth:`Verification.check` raises
:class:`~exportnb.core.errors.PreconditionFailed` (exit code 4) when there is any.

A ``record.json`` whose sha256 matches its chain entry holds exactly the bytes
:meth:`Record.to_json` wrote, so only its top-level ``files`` object is decoded; any other
``record.json`` is parsed whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exportnb.archive import chain
from exportnb.archive.chain import Head, Witness
from exportnb.archive.index import Index
from exportnb.archive.store import open_archive
from exportnb.core.errors import NotFound, PreconditionFailed, StorageError
from exportnb.core.ids import sha256
from exportnb.record.model import FILES, METADATA, RECORD_SCHEMA

if TYPE_CHECKING:
    from exportnb.archive.store import Archive

PROBLEMS: dict[str, str] = {
    "file_changed": "a file's size or sha256 differs from what record.json states",
    "file_missing": "a file of the record is gone",
    "record_changed": "record.json's sha256 differs from the record's chain entry",
    "record_invalid": "record.json is not a record, or not this record's",
    "record_missing": "a record the chain or the index names is not in the archive",
    "unchained": "no chain entry names the record (inserted, or archived before chaining)",
    "deleted": "a delete marker hides an object of the archive (S3 versioning)",
    "entry_missing": "a chain entry is gone: a gap in the seqs, or past the end",
    "entry_invalid": "a chain entry is not one",
    "entry_changed": "a chain entry's fields do not match its sha256",
    "entry_moved": "a chain entry's seq or record differs from where it is or was",
    "chain_broken": "a chain entry's prev is not the sha256 of the entry before",
    "chained_twice": "two chain entries name one record",
    "head_changed": "the entry at the head the index witnessed is not the one it saw",
}
CHAIN_KINDS = frozenset(k for k in PROBLEMS if k.startswith(("entry_", "chain", "head_")))
FILES_KEY = b'\n  "files": '
BATCH = 32
CHAIN = chain.FOLDER


@dataclass(frozen=True)
class Problem:
    """One thing wrong: its kind, the record and file it is about, and the detail."""

    kind: str
    detail: str
    record_id: str | None = None
    file: str | None = None

    def describe(self) -> str:
        where = " ".join(p for p in (self.record_id, self.file) if p) or "archive"
        return f"{where}: {self.kind}: {self.detail}"


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify`: what was checked, and every problem found."""

    archive: str
    incident: str | None
    records: int
    files: int
    bytes: int
    chain_length: int
    head: Head | None
    problems: list[Problem]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def check(self) -> Verification:
        """This verification, or PreconditionFailed naming its problems."""
        if self.ok:
            return self
        shown = "\n  ".join(p.describe() for p in self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        raise PreconditionFailed(
            f"{len(self.problems)} problem(s) in {self.archive}:\n  {shown}{more}"
        )


def verify(
    archive: Archive,
    *,
    incident: str | None = None,
    witness: Witness | None = None,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Verification:
    """Check every record (of one incident) and the whole chain; never raises for what it
    finds (see :meth:`Verification.check`)."""
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    witness = witness or Witness()
    links = chain.links(archive, workers=workers)
    walk = _Walk.of(links)
    problems = walk.problems + _against_witness(witness, {lk.seq: lk for lk in links})
    ids = archive.record_ids(incident)
    mine = (lambda rid: rid.startswith(f"{incident}/")) if incident else (lambda rid: True)
    gone = {rid: e.seq for rid, e in walk.records.items() if mine(rid)}
    gone |= {rid: seq for seq, rid in witness.chained.items() if mine(rid)}
    for rid in sorted(set(gone) - set(ids)):
        problems.append(
            Problem(
                "record_missing",
                f"chain entry {gone[rid]} names it, but it is not in the archive: removed",
                rid,
            )
        )
    checked = _check_all(archive, ids, walk.records, workers, on_progress)
    problems += checked.problems
    notes = []
    try:
        for name in archive.deleted():
            if mine(name) or name.startswith(CHAIN):
                problems.append(_deleted(name))
    except StorageError as exc:
        notes.append(f"delete markers not checked: {exc.message}")
    return Verification(
        archive.url,
        incident,
        len(ids),
        checked.files,
        checked.bytes,
        len(links),
        walk.head,
        problems,
        notes,
    )


def _deleted(name: str) -> Problem:
    detail = "a delete marker hides it; the version before it is kept"
    if name.startswith(CHAIN):
        return Problem("deleted", detail, file=name)
    record_id, file = name.rsplit("/", 1)
    return Problem("deleted", detail, record_id, file)


@dataclass
class _Walk:
    """The chain walked entry by entry: its problems, each record's entry, the head."""

    problems: list[Problem] = field(default_factory=list)
    records: dict[str, chain.ChainEntry] = field(default_factory=dict)
    head: Head | None = None

    @classmethod
    def of(cls, links: Sequence[chain.Link]) -> _Walk:
        walk = cls()
        before: chain.Link | None = None
        for link in links:
            walk.step(link, before)
            before = link
        if before is not None:
            walk.head = Head(before.seq, before.sha256)
        return walk

    def step(self, link: chain.Link, before: chain.Link | None) -> None:
        name = f"{CHAIN}/{chain.entry_name(link.seq)}"
        expected = before.seq + 1 if before else 1
        if link.seq > expected:
            gap = f"{expected}" if link.seq == expected + 1 else f"{expected} to {link.seq - 1}"
            self.problems.append(
                Problem("entry_missing", f"chain entries {gap} are missing", file=f"{CHAIN}/")
            )
        entry = link.entry
        if entry is None:
            self.problems.append(Problem("entry_invalid", link.error, file=name))
            return
        rid = entry.record_id
        if entry.seq != link.seq:
            self.problems.append(
                Problem(
                    "entry_moved",
                    f"the entry in {name} says it is entry {entry.seq}: the chain was reordered",
                    rid,
                    name,
                )
            )
        if not link.intact:
            self.problems.append(
                Problem("entry_changed", "its fields do not match its sha256", rid, name)
            )
        prev = chain.GENESIS if link.seq == 1 else before.sha256 if before else None
        if prev is not None and link.seq == expected and entry.prev != prev:
            self.problems.append(
                Problem(
                    "chain_broken",
                    f"its prev is not the sha256 of entry "
                    f"{link.seq - 1}: the chain was changed before it",
                    rid,
                    name,
                )
            )
        if rid in self.records:
            self.problems.append(
                Problem(
                    "chained_twice",
                    f"entries {self.records[rid].seq} and {link.seq} both name it",
                    rid,
                    name,
                )
            )
        else:
            self.records[rid] = entry


def _against_witness(witness: Witness, links: Mapping[int, chain.Link]) -> list[Problem]:
    """What changed since the index saw the chain: entries gone, moved or rewritten."""
    found = []
    last = max(links, default=0)
    for seq, rid in sorted(witness.chained.items()):
        link, name = links.get(seq), f"{CHAIN}/{chain.entry_name(seq)}"
        if link is None:
            where = "past the end of the chain" if seq > last else "a gap in the chain"
            found.append(
                Problem(
                    "entry_missing",
                    f"the index saw chain entry {seq} name this "
                    f"record; the entry is gone ({where})",
                    rid,
                    name,
                )
            )
        elif link.entry is not None and link.entry.record_id != rid:
            found.append(
                Problem(
                    "entry_moved",
                    f"the index saw chain entry {seq} name {rid}; "
                    f"it now names {link.entry.record_id}",
                    rid,
                    name,
                )
            )
    head = witness.head
    if head is not None and head.seq in links and links[head.seq].sha256 != head.sha256:
        found.append(
            Problem(
                "head_changed",
                f"chain entry {head.seq}, the head the index "
                f"witnessed (sha256 {head.sha256[:16]}), now hashes to "
                f"{links[head.seq].sha256[:16]}: the chain was rewritten",
                file=f"{CHAIN}/{chain.entry_name(head.seq)}",
            )
        )
    elif head is not None and head.seq not in links and head.seq not in witness.chained:
        found.append(
            Problem(
                "entry_missing",
                f"chain entry {head.seq}, the head the index "
                "witnessed, is gone: the last records were removed",
                file=f"{CHAIN}/{chain.entry_name(head.seq)}",
            )
        )
    return found


@dataclass
class _Checked:
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    bytes: int = 0

    def add(self, other: _Checked) -> None:
        self.problems += other.problems
        self.files += other.files
        self.bytes += other.bytes


def _check_all(
    archive: Archive,
    ids: list[str],
    entries: Mapping[str, chain.ChainEntry],
    workers: int,
    on_progress: Callable[[int, int], None] | None,
) -> _Checked:
    total = _Checked()
    batches = [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]

    def check(batch: list[str]) -> _Checked:
        done = _Checked()
        for rid in batch:
            done.add(check_record(archive, rid, entries.get(rid)))
        return done

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for count, done in enumerate(pool.map(check, batches), start=1):
            total.add(done)
            if on_progress:
                on_progress(min(count * BATCH, len(ids)), len(ids))
    return total


def check_record(archive: Archive, record_id: str, entry: chain.ChainEntry | None) -> _Checked:
    """One record's files against its ``record.json``, and that against its chain entry."""
    done = _Checked()
    try:
        raw = archive.read(record_id, METADATA)
    except NotFound:
        done.problems.append(Problem("record_missing", "it went while being verified", record_id))
        return done
    done.files, done.bytes = 1, len(raw)
    digest = sha256(raw)
    if entry is None:
        done.problems.append(Problem("unchained", PROBLEMS["unchained"], record_id, METADATA))
    elif digest != entry.record_sha256:
        done.problems.append(
            Problem(
                "record_changed",
                f"sha256 {digest[:16]}, but chain entry "
                f"{entry.seq} says {entry.record_sha256[:16]}",
                record_id,
                METADATA,
            )
        )
    trusted = entry is not None and digest == entry.record_sha256
    try:
        stated = _stated_files(raw, record_id, trusted)
    except ValueError as exc:
        done.problems.append(Problem("record_invalid", str(exc), record_id, METADATA))
        return done
    for name in FILES[:-1]:
        done.add(_check_file(archive, record_id, name, stated.get(name)))
    return done


def _check_file(archive: Archive, record_id: str, name: str, stated: Any) -> _Checked:
    done = _Checked()
    if not isinstance(stated, dict) or not isinstance(stated.get("sha256"), str):
        done.problems.append(
            Problem(
                "record_invalid", f"record.json states no sha256 for {name}", record_id, METADATA
            )
        )
        return done
    try:
        data = archive.read(record_id, name)
    except NotFound:
        done.problems.append(Problem("file_missing", "the file is gone", record_id, name))
        return done
    done.files, done.bytes = 1, len(data)
    digest = sha256(data)
    if digest != stated["sha256"] or len(data) != stated.get("size", len(data)):
        done.problems.append(
            Problem(
                "file_changed",
                f"{len(data)} bytes with sha256 "
                f"{digest[:16]}; record.json states {stated.get('size')} "
                f"bytes with sha256 {stated['sha256'][:16]}",
                record_id,
                name,
            )
        )
    return done


def _stated_files(raw: bytes, record_id: str, trusted: bool) -> dict[str, Any]:
    """``files`` of a ``record.json``; ValueError when it is not this record's."""
    at = raw.find(FILES_KEY) if trusted else -1
    if at >= 0:
        start = at + len(FILES_KEY)
        found, _ = json.JSONDecoder().raw_decode(
            raw[start : start + 4096].decode("utf-8", "replace")
        )
        if isinstance(found, dict):
            return found
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith(RECORD_SCHEMA):
        raise ValueError(f"not a {RECORD_SCHEMA} record")
    if doc.get("record_id") != record_id:
        raise ValueError(f"it is the record.json of {doc.get('record_id')!r}")
    files = doc.get("files")
    return files if isinstance(files, dict) else {}


def verify_archive(
    archive: str | Archive | None = None,
    *,
    incident: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Verification:
    """:func:`verify` the archive against what the index witnessed before. When the chain
    holds no problem, the index then witnesses the chain's head as it is now (records that
    other machines archived included)."""
    store = open_archive(archive)
    with Index() as index:
        witness = index.witness(store.url)
        found = verify(store, incident=incident, witness=witness, on_progress=on_progress)
        chain_problems = [p for p in found.problems if p.kind in CHAIN_KINDS]
        if not chain_problems and found.head != witness.head:
            index.sync(store)
            index.set_head(store.url, found.head)
    return found
