"""The outboxes: what could not be delivered yet, kept locally and delivered later, in order.
Two kinds: records the archive could not take, and status updates Slack did not take.

Records
-------

:class:`OutboxArchive` is the archive a service run writes to. It wraps the configured
archive (:func:`exportnb.archive.store.open_archive`): a record goes there, and when the archive
cannot be reached (S3 down, the bucket missing...), the record goes into the outbox,
``$EXPORTNB_HOME/service/outbox``, a :class:`~exportnb.archive.store.LocalArchive` with the same
write-once rules. Its ``location`` is still the archive's: that is where it will be.
A record the archive already holds is a real conflict, and is raised, never kept.

:func:`deliver` moves the kept records to the archive, oldest first; the worker calls it
every ``[serve] outbox_interval``. A record the archive took is removed from the outbox;
one the archive already holds with the same ``record.json`` was delivered by an earlier
attempt that stopped half-way, and is removed too.

Slack status updates
--------------------
A finished run's status update is kept in the incident store (``updates``, in the same
transaction that finishes the run: :meth:`~exportnb.service.incidents.IncidentStore.finish`).
:func:`deliver_updates` posts them, oldest first, right after a run finishes and every
``[serve] outbox_interval``: an update leaves the outbox only once Slack took it (in the
same transaction that says so in the run's notice). The first update Slack does not take,
after slack-sdk's retries (:mod:`exportnb.service.slack`), ends the pass, so the updates
behind it (the same incident's later runs among them) wait their turn: each incident's
updates reach Slack in order, each once. One Slack refuses outright (400, 413) is kept as
``refused`` and never sent again, so that it holds up nothing.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exportnb.archive import chain
from exportnb.archive.store import CONTENT_TYPES, Archive, LocalArchive, S3Archive, open_archive
from exportnb.core.errors import NotFound, StorageError
from exportnb.record.model import FILES, METADATA, RecordSummary
from exportnb.service.incidents import IncidentStore, Update
from exportnb.service.settings import service_dir
from exportnb.service.slack import Answer

POSTED = "status update posted to Slack"

log = logging.getLogger("exportnb.service")


def outbox_dir() -> Path:
    return service_dir() / "outbox"


def already_there(exc: StorageError) -> bool:
    """The archive refused the record because it holds one of that ID."""
    return exc.code in ("Exists", "PreconditionFailed") or exc.status == 412


class OutboxArchive(Archive):
    """The configured archive, with the outbox behind it for when it is unreachable.

    Reading and chaining are the archive's; only :meth:`write` differs: a record the
    archive cannot take goes to the outbox, and is chained in the archive when delivered.
    """

    def __init__(self, target: Archive | str | None = None, outbox: Path | None = None) -> None:
        self.target = open_archive(target)
        self.outbox = LocalArchive(outbox or outbox_dir())
        self.url = self.target.url

    def check(self) -> None:
        """Fine when either the archive or the outbox can take a record."""
        try:
            self.target.check()
        except StorageError as exc:
            log.warning("archive %s unreachable (%s); records go to the outbox", self.url, exc)
            self.outbox.check()

    def location(self, record_id: str) -> str:
        return self.target.location(record_id)

    def write(self, record_id: str, files: Mapping[str, bytes]) -> str:
        try:
            return self.target.write(record_id, files)
        except StorageError as exc:
            if already_there(exc):
                raise
            self.outbox.check()
            where = self.outbox.write(record_id, files)
            log.warning("record %s kept in the outbox (%s): %s", record_id, where, exc.message)
            return self.target.location(record_id)

    def chain_seqs(self) -> list[int]:
        return self.target.chain_seqs()

    def read_chain(self, seq: int) -> bytes:
        return self.target.read_chain(seq)

    def write_chain(self, seq: int, data: bytes) -> bool:
        return self.target.write_chain(seq, data)

    def holds(self, record_id: str) -> bool:
        """Whether the record waits in the outbox."""
        return (Path(self.outbox.location(record_id)) / METADATA).is_file()

    def read(self, record_id: str, name: str) -> bytes:
        if self.holds(record_id):
            return self.outbox.read(record_id, name)
        return self.target.read(record_id, name)

    def record_ids(self, incident: str | None = None) -> list[str]:
        return sorted(set(self.target.record_ids(incident)) | set(self.kept_ids(incident)))

    def summaries(self, incident: str) -> list[RecordSummary]:
        """The incident's records in the outbox and, when it answers, in the archive."""
        found = {s.record_id: s for s in self.outbox.list(incident)}
        try:
            found.update({s.record_id: s for s in self.target.list(incident)})
        except StorageError as exc:
            if not found:
                raise
            log.warning("archive %s unreachable (%s); looked in the outbox only", self.url, exc)
        return sorted(found.values(), key=lambda s: s.started_at)

    def kept_ids(self, incident: str | None = None) -> list[str]:
        return self.outbox.record_ids(incident)


@dataclass
class Delivery:
    delivered: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    error: str | None = None


def deliver(archive: OutboxArchive) -> Delivery:
    """Move the records kept in the outbox to the archive; stop at the first failure."""
    outcome = Delivery()
    kept = archive.kept_ids()
    for index, record_id in enumerate(kept):
        try:
            _deliver_one(archive, record_id)
        except StorageError as exc:
            outcome.error = exc.message
            outcome.waiting = kept[index:]
            return outcome
        outcome.delivered.append(record_id)
    return outcome


def _deliver_one(archive: OutboxArchive, record_id: str) -> None:
    files = {name: archive.outbox.read(record_id, name) for name in FILES}
    try:
        archive.target.write(record_id, files)
    except StorageError as exc:
        if not already_there(exc):
            raise
        _complete(archive, record_id, files, exc)
    shutil.rmtree(Path(archive.outbox.location(record_id)))
    log.info("record %s delivered from the outbox to %s", record_id, archive.url)


def _complete(
    archive: OutboxArchive, record_id: str, files: Mapping[str, bytes], refused: StorageError
) -> None:
    """The archive holds (part of) the record: an earlier write stopped half-way. What it
    holds must be these very bytes; on S3 the objects still missing are put now; and the
    record is chained unless an entry names it already."""
    target = archive.target
    for name in FILES:
        try:
            same = target.read(record_id, name) == files[name]
        except NotFound:
            if not isinstance(target, S3Archive):
                raise StorageError(f"record {record_id} is incomplete in {archive.url}") from None
            # the archive's own put-once, with the bucket's Object Lock retention
            target._put_once(target.key(record_id, name), files[name], CONTENT_TYPES[name])
            continue
        if not same:
            raise StorageError(
                f"record {record_id} in the outbox differs from the one in {archive.url} "
                f"({name}); left in {archive.outbox.location(record_id)}"
            ) from refused
    if not any(link.entry and link.entry.record_id == record_id for link in chain.links(target)):
        chain.append(target, record_id, files[METADATA])


def deliver_updates(
    store: IncidentStore,
    send: Callable[[dict[str, Any]], Answer],
    tally: Callable[[Answer], None] | None = None,
) -> Delivery:
    """Post the status updates waiting in the outbox, oldest first, each with ``send``
    (:func:`exportnb.service.slack.send` with its retries); stop at the first Slack did not
    take. ``tally`` sees every answer (the metrics)."""
    outcome = Delivery()
    while pending := store.pending_updates():
        for index, update in enumerate(pending):
            answer = send(update.payload)
            if tally is not None:
                tally(answer)
            if answer.accepted:
                store.update_posted(update, POSTED)
                outcome.delivered.append(update.key)
            elif answer.refused:
                _refused(store, update, answer)
            else:
                _failed(store, update, answer)
                outcome.error = answer.why
                outcome.waiting = [u.key for u in pending[index:]]
                return outcome
    return outcome


def _failed(store: IncidentStore, update: Update, answer: Answer) -> None:
    """Said in the run's notice the first time only: the outbox retries it quietly."""
    notice = None
    if update.failures == 0:
        notice = f"Slack post failed: {answer.why}; the update waits in the outbox"
    store.update_failed(update, answer.why, notice)


def _refused(store: IncidentStore, update: Update, answer: Answer) -> None:
    log.error("run %s: Slack refused its status update: %s", update.key, answer.why)
    notice = f"Slack refused the status update ({answer.why}); kept in the outbox as refused"
    store.update_refused(update, answer.why, notice)
