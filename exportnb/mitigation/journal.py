"""The incident's journal: every mitigation planned, applied, skipped or reverted, in order.

One file per incident, ``$EXPORTNB_HOME/incidents/<incident>/journal.jsonl``, one JSON
object per line, append-only::

    {"schema": 1, "seq": 3, "at": "2024-05-01T12:03:04.123456Z", "incident": "INC-7",
     "operator": "dana", "kind": "result", "action": "fallback-bucket", "key": "9f2c…",
     "params": {"bucket": "exports-fallback", "round": 1, "ttl": 1800},
     "outcome": "succeeded", "detail": {...}, "prev": "<sha256 of entry 2>",
     "sha256": "<sha256 of this entry>"}

``kind`` is one of :data:`KINDS`: ``plan`` (what would change), ``apply`` (about to call
the platform), ``result`` (what happened: ``outcome`` ``succeeded`` or ``failed``),
``revert`` (one change of this incident undone, or left alone) and ``skip`` (not applied,
and why: ``already_applied``, ``not_allowed``, ``cancelled``, ``refused``).

Tampering is evident: ``sha256`` is the hash of the entry's other fields (as canonical
JSON: sorted keys, no spaces), ``prev`` the ``sha256`` of the entry before (64 zeros for
the first) and ``seq`` counts from 1. Changing a line breaks its own hash; changing it and
its hash breaks the next line's ``prev``; inserting or removing lines breaks ``seq``.
Reading a broken journal raises :class:`~exportnb.core.errors.PreconditionFailed`, and
nothing more can be appended to it. What a chain cannot show (the last lines removed, or
rewritten with new hashes) the platform's audit log can: each entry goes there too, with
its ``sha256``.

Appends are serialized across processes and threads by an exclusive ``fcntl`` lock on
``journal.lock`` beside the journal, written with ``O_APPEND`` and made durable with
``fsync``. :meth:`Journal.locked` holds the lock across a check-and-apply, so that two
processes applying one idempotency key apply it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from exportnb.core import codec, config
from exportnb.core.errors import InvalidInput, PreconditionFailed
from exportnb.core.ids import check_incident_id

SCHEMA = 1
KINDS: tuple[str, ...] = ("plan", "apply", "result", "revert", "skip")
GENESIS = "0" * 64
FILE = "journal.jsonl"
LOCK = "journal.lock"
SUCCEEDED = "succeeded"
FAILED = "failed"


@dataclass(frozen=True)
class JournalEntry:
    """One line of the journal."""

    schema: int
    seq: int
    at: datetime
    incident: str
    operator: str
    kind: str
    action: str
    key: str
    params: dict[str, Any]
    outcome: str
    detail: dict[str, Any] = field(default_factory=dict)
    prev: str = GENESIS
    sha256: str = ""

    @property
    def ok(self) -> bool:
        """A successful result: this key has been applied."""
        return self.kind == "result" and self.outcome == SUCCEEDED


def journal_path(incident: str, home: Path | None = None) -> Path:
    """Where the journal of ``incident`` lives (the incident ID is checked)."""
    check_incident_id(incident)
    return (home or config.home()) / "incidents" / incident / FILE


class Journal:
    """The journal of one incident. Safe to share between threads."""

    def __init__(self, incident: str, *, home: Path | None = None) -> None:
        self.incident = check_incident_id(incident)
        self.path = journal_path(incident, home)
        self._mutex = threading.RLock()
        self._lock_file: IO[bytes] | None = None
        self._depth = 0

    # Locking ----------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[Journal]:
        """Hold the journal's lock (re-entrant): nobody else appends meanwhile."""
        with self._mutex:
            if self._depth == 0:
                self._acquire()
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()

    def _acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = (self.path.parent / LOCK).open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except BaseException:
            handle.close()
            raise
        self._lock_file = handle

    def _release(self) -> None:
        handle, self._lock_file = self._lock_file, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    # Reading ----------------------------------------------------------------
    def entries(self) -> list[JournalEntry]:
        """Every entry, oldest first, with the chain verified; PreconditionFailed if broken."""
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            raise self._broken(raw.count(b"\n") + 1, "the last line is incomplete")
        found: list[JournalEntry] = []
        prev = GENESIS
        for number, line in enumerate(raw.splitlines(), start=1):
            entry = self._parse(line, number)
            if entry.seq != number:
                raise self._broken(number, f"seq is {entry.seq}, expected {number}")
            if entry.prev != prev:
                raise self._broken(number, "it does not follow from the entry before (prev)")
            found.append(entry)
            prev = entry.sha256
        return found

    def _parse(self, line: bytes, number: int) -> JournalEntry:
        try:
            data = json.loads(line)
            stated = data.pop("sha256")
            entry = entry_from(data, sha256=stated)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise self._broken(number, f"it is not a journal entry ({exc})") from exc
        if stated != fingerprint(data):
            raise self._broken(number, "its content does not match its sha256")
        return entry

    def _broken(self, line: int, why: str) -> PreconditionFailed:
        return PreconditionFailed(
            f"the journal {self.path} is broken at line {line}: {why}. It may have been "
            "edited; nothing more is applied or recorded for this incident until it is "
            "restored from a copy (each entry is in the platform's audit log too)"
        )

    def applied(self, key: str) -> JournalEntry | None:
        """The successful result of ``key``, if it has one (the first such)."""
        return next((e for e in self.entries() if e.key == key and e.ok), None)

    def of_key(self, key: str) -> list[JournalEntry]:
        return [e for e in self.entries() if e.key == key]

    # Writing ----------------------------------------------------------------
    def append(
        self,
        kind: str,
        *,
        action: str,
        key: str,
        operator: str,
        params: Mapping[str, Any] | None = None,
        outcome: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> JournalEntry:
        """Append one entry, durably; returns it with its ``seq`` and ``sha256``."""
        if kind not in KINDS:
            raise InvalidInput(f"journal entry kind {kind!r}: use one of {', '.join(KINDS)}")
        with self.locked():
            before = self.entries()
            data = self._entry_data(
                kind,
                before,
                action=action,
                key=key,
                operator=operator,
                params=params,
                outcome=outcome,
                detail=detail,
            )
            data = json.loads(json.dumps(data, ensure_ascii=False, default=str))
            data["sha256"] = fingerprint(data)
            line = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            self._write(line.encode("utf-8") + b"\n")
            return entry_from(
                {k: v for k, v in data.items() if k != "sha256"}, sha256=data["sha256"]
            )

    def _entry_data(
        self,
        kind: str,
        before: list[JournalEntry],
        *,
        action: str,
        key: str,
        operator: str,
        params: Mapping[str, Any] | None,
        outcome: str,
        detail: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "seq": len(before) + 1,
            "at": codec.format_time(datetime.now(UTC)),
            "incident": self.incident,
            "operator": operator,
            "kind": kind,
            "action": action,
            "key": key,
            "params": codec.encode(dict(params or {})),
            "outcome": outcome,
            "detail": codec.encode(dict(detail or {})),
            "prev": before[-1].sha256 if before else GENESIS,
        }

    def _write(self, line: bytes) -> None:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _sync_directory(self.path.parent)


def entry_from(data: dict[str, Any], *, sha256: str) -> JournalEntry:
    """A journal entry from its JSON object; KeyError/TypeError/ValueError when it is not."""
    if data["schema"] != SCHEMA:
        raise ValueError(f"schema {data['schema']!r} is not {SCHEMA}")
    if data["kind"] not in KINDS:
        raise ValueError(f"kind {data['kind']!r}")
    if not isinstance(data["params"], dict) or not isinstance(data["detail"], dict):
        raise TypeError("params and detail must be objects")
    return JournalEntry(
        schema=data["schema"],
        seq=int(data["seq"]),
        at=_time(data["at"]),
        incident=str(data["incident"]),
        operator=str(data["operator"]),
        kind=data["kind"],
        action=str(data["action"]),
        key=str(data["key"]),
        params=data["params"],
        outcome=str(data["outcome"]),
        detail=data["detail"],
        prev=str(data["prev"]),
        sha256=sha256,
    )


def fingerprint(data: Mapping[str, Any]) -> str:
    """sha256 of an entry's fields (without ``sha256``) as canonical JSON."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _time(value: Any) -> datetime:
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"time {value!r} has no time zone")
    return parsed.astimezone(UTC)


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_journal(incident: str, *, home: Path | None = None) -> list[JournalEntry]:
    """The verified entries of an incident's journal (empty when it has none)."""
    return Journal(incident, home=home).entries()
