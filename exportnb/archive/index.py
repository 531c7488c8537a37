"""The archive index: SQLite, for finding records fast, rebuilt from the records at any time.

One file, ``$EXPORTNB_HOME/index.sqlite``, indexes every archive this machine uses, a
local folder or ``s3://`` alike; each archive's rows hang off its URL. Schema version
:data:`~exportnb.archive.index_schema.SCHEMA_VERSION` (``PRAGMA user_version``)::

    archives        url; the chain seq indexed so far; the head witnessed (seq, sha256)
    records         one row per record: incident and version (1, 2, ... in start order
                    within the incident), status, start and end (epoch seconds),
                    duration, operator, error, location, sha256 of record.json, chain
                    seq, counts of critical/warning/info findings
    record_jobs     (record, job_id)      record_tenants  (record, tenant)
    record_buckets  (record, bucket)      findings        (record, code, severity, ...)
    mitigations     (record, action, operator, at, key, params, seq, source)

What goes in the child tables is :class:`~exportnb.record.facts.RecordFacts`, read from each
record's results by their kind (:data:`~exportnb.record.facts.READERS`); the results of a
record from before kinds are known by their class names
(:data:`~exportnb.record.model.LEGACY_TYPES`), so old and new records index alike.

**Keeping up.** Every record written to an archive is chained (:mod:`exportnb.archive.chain`), so
the chain is the archive's change log: before answering, :meth:`Index.sync` reads the
chain entries past the last one indexed (a single read when nothing changed) and indexes
their records. The runner tells the index of each record it saves
(:func:`record_saved`). An archive seen for the first time is indexed whole, and
:meth:`Index.reindex` (``exportnb archive reindex``) rebuilds an archive's rows from its
records at any time, records that no chain entry names included.

**The head witness.** The index remembers the newest chain entry it has seen linked to
the ones before (its seq and the sha256 of its bytes). That head lives outside the
archive, so removing the last records together with their chain entries, or rewriting
the chain, shows in ``exportnb archive verify``. A rebuild keeps the head: it refuses an
archive whose chain no longer holds it, unless told to accept the chain as it is now.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from exportnb.archive import chain
from exportnb.archive.chain import Head, Witness
from exportnb.archive.index_schema import (
    INSERT_RECORD,
    IndexedRecord,
    Query,
    connect,
    fact_rows,
    facts_of,
    mitigations_of,
    parse_time,
    record_row,
)
from exportnb.archive.store import Archive, open_archive
from exportnb.core import config
from exportnb.core.errors import ExportnbError, NotFound, PreconditionFailed, StorageError
from exportnb.record.facts import AppliedMitigation, RecordFacts
from exportnb.record.model import METADATA, RECORD_ID, Record, check_record_id, sha256

__all__ = ["Head", "Index", "IndexedRecord", "Query", "Reindexed", "index_path", "parse_time"]
INDEX_FILE = "index.sqlite"
log = logging.getLogger(__name__)


def index_path() -> Path:
    return config.home() / INDEX_FILE


@dataclass(frozen=True)
class Reindexed:
    """What a rebuild found: records indexed, those no chain entry names, those unreadable."""

    archive: str
    records: int
    unchained: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    head: Head | None = None


class Index:
    """The index file, open. Use as a context manager, or :meth:`close` it."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or index_path()
        self.db = connect(self.path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction, taken at once (two indexers do not interleave)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # Archives and their head -----------------------------------------------------------
    def _archive(self, url: str) -> tuple[int, int, Head | None] | None:
        """``(id, indexed seq, head witnessed)`` of an archive seen before."""
        row = self.db.execute(
            "SELECT id, indexed_seq, head_seq, head_sha256 FROM archives WHERE url = ?", (url,)
        ).fetchone()
        if row is None:
            return None
        return row[0], row[1], Head(row[2], row[3]) if row[2] else None

    def head(self, url: str) -> Head | None:
        """The newest chain entry of the archive this index has seen linked (None: none)."""
        found = self._archive(url)
        return found[2] if found else None

    def witness(self, url: str) -> Witness:
        """What this index saw of the archive's chain: the head, and each seq's record."""
        found = self._archive(url)
        if found is None:
            return Witness()
        chained = self._rows(
            "SELECT chain_seq, record_id FROM records WHERE archive = ? AND chain_seq IS NOT NULL",
            (found[0],),
        )
        return Witness(found[2], dict(chained))

    def set_head(self, url: str, head: Head | None) -> None:
        """Remember ``head`` as the archive's head (after a verification that passed)."""
        with self._writing():
            archive_id = self._archive_id(url)
            self.db.execute(
                "UPDATE archives SET head_seq = ?, head_sha256 = ? WHERE id = ?",
                (head.seq if head else 0, head.sha256 if head else "", archive_id),
            )

    def _archive_id(self, url: str) -> int:
        self.db.execute("INSERT OR IGNORE INTO archives (url) VALUES (?)", (url,))
        found: int = self.db.execute("SELECT id FROM archives WHERE url = ?", (url,)).fetchone()[0]
        return found

    # Keeping up --------------------------------------------------------------------------
    def sync(self, archive: Archive, known: Mapping[str, bytes] | None = None) -> int:
        """Index what the archive's chain gained since last time (the first time: all of it).

        ``known`` maps record IDs to their ``record.json`` when the caller has it in hand.
        Returns how many records were added.
        """
        try:
            seen = self._archive(archive.url)
            if seen is None:
                return self.reindex(archive).records
            if chain.read_from(archive, seen[1] + 1) is None:
                return 0  # nothing new: no write lock taken
            with self._writing():  # again, under the lock: another indexer may have been first
                archive_id, indexed, head = self._archive(archive.url) or seen
                fresh: list[chain.Link] = []
                while (link := chain.read_from(archive, indexed + len(fresh) + 1)) is not None:
                    fresh.append(link)
                added = self._add_links(archive, archive_id, fresh, known or {})
                self._set_chain(archive_id, indexed + len(fresh), chain.advance(head, fresh))
            return added
        except sqlite3.Error as exc:
            raise StorageError(f"the archive index {self.path}: {exc}") from exc

    def _add_links(
        self, archive: Archive, archive_id: int, links: list[chain.Link], known: Mapping[str, bytes]
    ) -> int:
        added = 0
        for link in links:
            entry = link.entry
            if entry is None or not RECORD_ID.match(entry.record_id):
                continue
            try:
                data = known.get(entry.record_id) or archive.read(entry.record_id, METADATA)
                record = Record.from_json(data, archive.location(entry.record_id))
            except ExportnbError as exc:  # removed or broken: verify says so
                log.warning("not indexed: %s (%s)", entry.record_id, exc)
                continue
            self._insert(archive_id, record, sha256(data), entry.seq)
            added += 1
        return added

    def _set_chain(self, archive_id: int, indexed: int, head: Head | None) -> None:
        self.db.execute(
            "UPDATE archives SET indexed_seq = ?, head_seq = ?, head_sha256 = ? WHERE id = ?",
            (indexed, head.seq if head else 0, head.sha256 if head else "", archive_id),
        )

    def add(self, url: str, record: Record, record_json: bytes, chain_seq: int | None) -> None:
        """Index one record (replacing its row, if it had one)."""
        with self._writing():
            self._insert(self._archive_id(url), record, sha256(record_json), chain_seq)

    def _insert(self, archive_id: int, record: Record, digest: str, seq: int | None) -> None:
        cursor = self.db.execute(INSERT_RECORD, record_row(archive_id, record, digest, seq))
        assert cursor.lastrowid is not None
        for sql, rows in fact_rows(cursor.lastrowid, RecordFacts.of(record)):
            self.db.executemany(sql, rows)
        self._renumber(archive_id, record.incident_id)

    def _renumber(self, archive_id: int, incident: str | None = None) -> None:
        """Versions 1, 2, ... in start order within each incident (of one, or of all)."""
        only = " AND incident_id = ?" if incident else ""
        self.db.execute(
            "UPDATE records SET version = ranked.v FROM (SELECT id, ROW_NUMBER() OVER ("
            "PARTITION BY incident_id ORDER BY started_at, record_id) AS v FROM records "
            f"WHERE archive = ?{only}) AS ranked WHERE records.id = ranked.id",
            (archive_id, incident) if incident else (archive_id,),
        )

    # Rebuilding ----------------------------------------------------------------------------
    def reindex(
        self,
        archive: Archive,
        *,
        accept_chain: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Reindexed:
        """Rebuild the archive's rows from its records; keep (and advance) the head witness.

        PreconditionFailed, changing nothing, when the archive's chain no longer holds the
        head this index witnessed, unless ``accept_chain`` (trust the chain as it is now).
        """
        links = chain.links(archive)
        seen = self._archive(archive.url)
        head = seen[2] if seen and not accept_chain else None
        if head is not None:
            _check_head(archive.url, head, {link.seq: link for link in links})
        chained = {lk.entry.record_id: lk.entry.seq for lk in links if lk.entry is not None}
        read = read_records(archive, archive.record_ids(), on_progress=on_progress)
        try:
            with self._writing():
                archive_id = self._archive_id(archive.url)
                self.db.execute("DELETE FROM records WHERE archive = ?", (archive_id,))
                for record, data in read.records:
                    self._insert(archive_id, record, sha256(data), chained.get(record.record_id))
                after = [lk for lk in links if head is None or lk.seq > head.seq]
                contiguous = chain.contiguous(links)
                self._set_chain(archive_id, contiguous, chain.advance(head, after))
        except sqlite3.Error as exc:
            raise StorageError(f"the archive index {self.path}: {exc}") from exc
        unchained = [r.record_id for r, _ in read.records if r.record_id not in chained]
        return Reindexed(
            archive.url, len(read.records), unchained, read.unreadable, self.head(archive.url)
        )

    # Reading -------------------------------------------------------------------------------
    def search(self, url: str, query: Query | None = None) -> list[IndexedRecord]:
        """The records of the archive at ``url`` that match, oldest first."""
        where, args = (query or Query()).where()
        sql = (
            f"SELECT {IndexedRecord.COLUMNS} FROM records r JOIN archives a ON "
            f"r.archive = a.id WHERE a.url = ?{where} ORDER BY r.started_at, r.record_id"
        )
        if query and query.limit:
            sql += f" LIMIT {int(query.limit)}"
        return [IndexedRecord.from_row(row) for row in self._rows(sql, (url, *args))]

    def entry(self, url: str, record_id: str) -> IndexedRecord:
        found = self.search(url, Query(record_id=record_id))
        if not found:
            raise NotFound(f"no record {record_id} in the index of {url}")
        return found[0]

    def facts(self, url: str, record_id: str) -> RecordFacts:
        """What the index holds of one record: job IDs, tenants, buckets, findings..."""
        rid = self._rows(
            "SELECT r.id FROM records r JOIN archives a ON r.archive = a.id "
            "WHERE a.url = ? AND r.record_id = ?",
            (url, record_id),
        )
        if not rid:
            raise NotFound(f"no record {record_id} in the index of {url}")
        return facts_of(self._rows, rid[0][0])

    def mitigations(self, url: str, query: Query | None = None) -> list[AppliedMitigation]:
        """The mitigations the matching records show applied, once each, by time."""
        where, args = (query or Query()).where()
        return mitigations_of(self._rows, f"a.url = ?{where}", (url, *args))

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"the archive index {self.path}: {exc}") from exc


def _check_head(url: str, head: Head, links: Mapping[int, chain.Link]) -> None:
    link = links.get(head.seq)
    if link is None or link.sha256 != head.sha256:
        what = "no longer holds" if link is None else "holds another"
        raise PreconditionFailed(
            f"the chain of {url} {what} entry {head.seq}, the newest this index witnessed "
            f"(sha256 {head.sha256[:16]}): records may have been removed or the chain "
            "rewritten. Run `exportnb archive verify`; `exportnb archive reindex "
            "--accept-chain` trusts the chain as it is now"
        )


@dataclass
class _Read:
    records: list[tuple[Record, bytes]] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)


def read_records(
    archive: Archive, ids: list[str], on_progress: Callable[[int, int], None] | None = None
) -> _Read:
    """Each record's ``record.json``, read on a pool of threads; those that fail, and why."""

    def read(record_id: str) -> tuple[Record, bytes] | str:
        try:
            data = archive.read(record_id, METADATA)
            return Record.from_json(data, archive.location(record_id)), data
        except ExportnbError as exc:
            return exc.message

    found = _Read()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for done, (record_id, got) in enumerate(zip(ids, pool.map(read, ids), strict=True), 1):
            if isinstance(got, str):
                found.unreadable[record_id] = got
            else:
                found.records.append(got)
            if on_progress and (done % 100 == 0 or done == len(ids)):
                on_progress(done, len(ids))
    return found


# The library's entry points: each opens the index, brings it up to date, answers. ----------
def search(
    archive: str | Archive | None = None,
    *,
    incident: str | None = None,
    job_id: str | None = None,
    tenant: str | None = None,
    bucket: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    finding: str | None = None,
    limit: int | None = None,
) -> list[IndexedRecord]:
    """The archive's records that match every filter given, oldest first."""
    query = Query(incident, job_id, tenant, bucket, status, since, until, finding, limit=limit)
    store = open_archive(archive)
    with Index() as index:
        index.sync(store)
        return index.search(store.url, query)


def mitigations(
    archive: str | Archive | None = None,
    *,
    incident: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AppliedMitigation]:
    """The mitigations the records (of an incident, or started in a time range) show
    applied, once each, by time."""
    query = Query(incident, since=since, until=until)
    store = open_archive(archive)
    with Index() as index:
        index.sync(store)
        return index.mitigations(store.url, query)


def facts(record_id: str, archive: str | Archive | None = None) -> RecordFacts:
    """What the index holds of one record (job IDs, tenants, buckets, findings,
    mitigations; ``files`` are in the record itself: ``RecordFacts.of(record)``)."""
    store = open_archive(archive)
    with Index() as index:
        index.sync(store)
        return index.facts(store.url, check_record_id(record_id))


def reindex(
    archive: str | Archive | None = None,
    *,
    accept_chain: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Reindexed:
    """Rebuild the index of the archive from its records (see :meth:`Index.reindex`)."""
    store = open_archive(archive)
    with Index() as index:
        return index.reindex(store, accept_chain=accept_chain, on_progress=on_progress)


def record_saved(store: Archive, record: Record, files: Mapping[str, bytes]) -> None:
    """The runner's hook once a record is archived: index it. Never raises: the record is
    safe in the archive, and ``exportnb archive reindex`` rebuilds the index."""
    try:
        with Index() as index:
            index.sync(store, known={record.record_id: files[METADATA]})
            if not index.search(store.url, Query(record_id=record.record_id)):
                index.add(store.url, record, files[METADATA], None)
    except ExportnbError as exc:
        log.warning(
            "the archive index was not updated for %s: %s; `exportnb archive reindex` rebuilds it",
            record.record_id,
            exc.message,
        )
