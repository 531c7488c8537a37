"""The hash chain across the records of an archive: what makes a removal or a reordering show.

A record names the sha256 of its notebook and HTML in its ``record.json``, so a changed byte
in either shows when they are hashed again. What a record cannot show about itself (its
``record.json`` changed, or the record removed, or records shuffled) the chain shows. Each
record gets one write-once entry, ``.chain/<seq>.json`` at the archive's root
(``0000000001.json``, ``0000000002.json``, ...), written right after the record::

    {"schema": "exportnb.chain/v1", "seq": 7,
     "record_id": "INC-42/20240501T120000Z-3fa9c2d1",
     "record_sha256": "<sha256 of that record's record.json>",
     "at": "2024-05-01T12:03:04.123456Z",
     "prev": "<sha256 of the bytes of entry 6; 64 zeros for entry 1>",
     "sha256": "<sha256 of this entry's other fields as canonical JSON>"}

==========================================  ==============================================
tampering                                   what shows it
==========================================  ==============================================
a byte of notebook.ipynb / notebook.html    its sha256 against ``record.json``
a byte of record.json                       its sha256 against the record's entry
a record removed                            an entry naming a record that is not there
a record inserted                           a record that no entry names
an entry edited                             its ``sha256``; the next entry's ``prev``
entries swapped or renumbered               ``seq`` against the file name; ``prev``
the last records removed with their         the head, kept outside the archive: the index
entries, or the chain rewritten             remembers the newest entry it has seen (seq and
                                            sha256 of its bytes); on S3, delete markers
==========================================  ==============================================

``prev`` hashes the previous entry's bytes as stored, so an entry that no longer parses
still anchors the next one, and a garbled head never stops new records from being chained.

Appending takes no lock. Entries are write-once (a hard link that fails when the name
exists, locally; ``If-None-Match: *`` on S3): of two writers racing for one seq, one wins
and the other follows the winner and takes the next.
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from exportnb.core import codec
from exportnb.core.errors import NotFound, StorageError
from exportnb.core.ids import sha256
from exportnb.mitigation.journal import fingerprint

if TYPE_CHECKING:
    from exportnb.archive.store import Archive

CHAIN_SCHEMA = "exportnb.chain/v1"
GENESIS = "0" * 64
FOLDER = ".chain"
ENTRY_NAME = re.compile(r"^(\d{10})\.json$")
APPEND_ATTEMPTS = 1000


def entry_name(seq: int) -> str:
    """The file (or key) name of entry ``seq`` inside the chain folder."""
    return f"{seq:010d}.json"


def seq_of(name: str) -> int | None:
    """The seq an entry file name stands for; None for any other name."""
    found = ENTRY_NAME.match(name)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class ChainEntry:
    """One entry of the chain."""

    seq: int
    record_id: str
    record_sha256: str
    at: datetime
    prev: str
    sha256: str = ""
    schema: str = CHAIN_SCHEMA

    @classmethod
    def make(cls, seq: int, record_id: str, record_json: bytes, prev: str) -> ChainEntry:
        entry = cls(seq, record_id, sha256(record_json), datetime.now(UTC), prev)
        return replace(entry, sha256=fingerprint(entry.fields()))

    def fields(self) -> dict[str, Any]:
        """Everything but ``sha256``: what ``sha256`` is the fingerprint of."""
        return {
            "schema": self.schema,
            "seq": self.seq,
            "record_id": self.record_id,
            "record_sha256": self.record_sha256,
            "at": codec.format_time(self.at),
            "prev": self.prev,
        }

    def to_json(self) -> bytes:
        return (json.dumps({**self.fields(), "sha256": self.sha256}, indent=1) + "\n").encode()


@dataclass(frozen=True)
class Link:
    """An entry as stored: the seq its name says, its bytes, and what they parse to.

    ``error`` says why the bytes are not an entry; ``intact`` whether the entry's fields,
    as stored, still hash to its ``sha256``.
    """

    seq: int
    data: bytes
    entry: ChainEntry | None
    error: str = ""
    intact: bool = False

    @property
    def sha256(self) -> str:
        """The sha256 of the stored bytes: what the next entry's ``prev`` must be."""
        return sha256(self.data)

    @classmethod
    def of(cls, seq: int, data: bytes) -> Link:
        try:
            doc = json.loads(data)
        except ValueError as exc:
            return cls(seq, data, None, f"not JSON ({exc})")
        if not isinstance(doc, dict) or doc.get("schema") != CHAIN_SCHEMA:
            return cls(seq, data, None, f"not a {CHAIN_SCHEMA} entry")
        stated = doc.pop("sha256", None)
        try:
            entry = ChainEntry(
                int(doc["seq"]),
                str(doc["record_id"]),
                str(doc["record_sha256"]),
                datetime.fromisoformat(str(doc["at"])),
                str(doc["prev"]),
                str(stated),
            )
        except (KeyError, TypeError, ValueError) as exc:
            return cls(seq, data, None, f"a field is missing or malformed ({exc})")
        return cls(seq, data, entry, intact=stated == fingerprint(doc))


@dataclass(frozen=True)
class Head:
    """A chain entry witnessed: its seq and the sha256 of its bytes."""

    seq: int
    sha256: str


@dataclass(frozen=True)
class Witness:
    """What an index saw of an archive's chain: its head, and the record each seq named."""

    head: Head | None = None
    chained: Mapping[int, str] = field(default_factory=dict)


def advance(head: Head | None, links: Sequence[Link]) -> Head | None:
    """The head after following ``links`` (in seq order from ``head``, or from the start)
    for as long as each entry is intact and links to the one before."""
    prev = head.sha256 if head else GENESIS
    seq = head.seq if head else 0
    for link in links:
        entry = link.entry
        if link.seq != seq + 1 or entry is None or not link.intact or entry.seq != link.seq:
            break
        if entry.prev != prev:
            break
        head, prev, seq = Head(link.seq, link.sha256), link.sha256, link.seq
    return head


def contiguous(links: Sequence[Link]) -> int:
    """The highest seq reached from 1 without a gap."""
    seq = 0
    for link in links:
        if link.seq != seq + 1:
            break
        seq = link.seq
    return seq


def append(archive: Archive, record_id: str, record_json: bytes) -> ChainEntry:
    """Chain a record just written: a new entry after the newest one. Returns it.

    The newest entry is listed the first time, then remembered for this archive object:
    an entry another writer added since is found when its seq turns out to be taken.
    """
    head = _HEADS.get(archive) or last(archive)
    for _ in range(APPEND_ATTEMPTS):
        seq, prev = (head.seq + 1, head.sha256) if head else (1, GENESIS)
        entry = ChainEntry.make(seq, record_id, record_json, prev)
        data = entry.to_json()
        if archive.write_chain(seq, data):
            _HEADS[archive] = Link(seq, data, entry, intact=True)
            return entry
        head = Link.of(seq, archive.read_chain(seq))  # another writer took seq: follow it
    raise StorageError(f"could not chain {record_id} in {archive.url}: the chain kept moving")


_HEADS: weakref.WeakKeyDictionary[Archive, Link] = weakref.WeakKeyDictionary()


def last(archive: Archive) -> Link | None:
    """The newest entry (the highest seq), or None when the chain is empty."""
    seqs = archive.chain_seqs()
    if not seqs:
        return None
    return Link.of(seqs[-1], archive.read_chain(seqs[-1]))


def read_from(archive: Archive, seq: int) -> Link | None:
    """Entry ``seq``, or None when there is none (yet)."""
    try:
        return Link.of(seq, archive.read_chain(seq))
    except NotFound:
        return None


def links(archive: Archive, *, workers: int = 8) -> list[Link]:
    """Every stored entry, by the seq its name says (gaps left as they are)."""
    seqs = archive.chain_seqs()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(pool.map(lambda s: read_from(archive, s), seqs, chunksize=64))
    return [link for link in found if link is not None]
