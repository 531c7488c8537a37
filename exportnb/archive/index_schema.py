"""The archive index's schema, its rows as objects, and the queries that read them.

:mod:`exportnb.archive.index` keeps the index up to date; this module says what is in it
(:data:`SCHEMA`, version :data:`SCHEMA_VERSION`) and how a search reads it
(:class:`Query`, :class:`IndexedRecord`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from exportnb.core.errors import InvalidInput, StorageError
from exportnb.core.findings import Finding
from exportnb.core.quantities import parse_ttl
from exportnb.record.facts import AppliedMitigation, RecordFacts
from exportnb.record.model import (
    STATUSES,
    Record,
    RecordSummary,
    check_incident_id,
    check_record_id,
)

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS archives (
    id INTEGER PRIMARY KEY, url TEXT NOT NULL UNIQUE,
    indexed_seq INTEGER NOT NULL DEFAULT 0,
    head_seq INTEGER NOT NULL DEFAULT 0, head_sha256 TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    archive INTEGER NOT NULL REFERENCES archives(id) ON DELETE CASCADE,
    record_id TEXT NOT NULL, incident_id TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL NOT NULL,
    duration_seconds REAL NOT NULL, operator TEXT NOT NULL, error TEXT,
    location TEXT NOT NULL, record_sha256 TEXT NOT NULL, chain_seq INTEGER,
    critical INTEGER NOT NULL, warning INTEGER NOT NULL, info INTEGER NOT NULL,
    UNIQUE (archive, record_id)
);
CREATE INDEX IF NOT EXISTS records_by_incident ON records (archive, incident_id, started_at);
CREATE INDEX IF NOT EXISTS records_by_time ON records (archive, started_at);
CREATE TABLE IF NOT EXISTS record_jobs (
    record INTEGER NOT NULL REFERENCES records(id) ON DELETE CASCADE, job_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS record_jobs_by_job ON record_jobs (job_id);
CREATE INDEX IF NOT EXISTS record_jobs_by_record ON record_jobs (record);
CREATE TABLE IF NOT EXISTS record_tenants (
    record INTEGER NOT NULL REFERENCES records(id) ON DELETE CASCADE, tenant TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS record_tenants_by_tenant ON record_tenants (tenant);
CREATE INDEX IF NOT EXISTS record_tenants_by_record ON record_tenants (record);
CREATE TABLE IF NOT EXISTS record_buckets (
    record INTEGER NOT NULL REFERENCES records(id) ON DELETE CASCADE, bucket TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS record_buckets_by_bucket ON record_buckets (bucket);
CREATE INDEX IF NOT EXISTS record_buckets_by_record ON record_buckets (record);
CREATE TABLE IF NOT EXISTS findings (
    record INTEGER NOT NULL REFERENCES records(id) ON DELETE CASCADE,
    code TEXT NOT NULL, severity TEXT NOT NULL, step TEXT NOT NULL, summary TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS findings_by_code ON findings (code);
CREATE INDEX IF NOT EXISTS findings_by_record ON findings (record);
CREATE TABLE IF NOT EXISTS mitigations (
    record INTEGER NOT NULL REFERENCES records(id) ON DELETE CASCADE,
    action TEXT NOT NULL, operator TEXT NOT NULL, at REAL, key TEXT NOT NULL,
    params TEXT NOT NULL, seq INTEGER, source TEXT NOT NULL, summary TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS mitigations_by_record ON mitigations (record);
"""


def connect(path: Path) -> sqlite3.Connection:
    """The index at ``path``, created if need be; StorageError if it cannot be used."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.executescript(
                f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )
        elif version != SCHEMA_VERSION:
            raise StorageError(
                f"the archive index {path} has schema version {version}, not "
                f"{SCHEMA_VERSION}: move it away and run `exportnb archive reindex`"
            )
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"cannot open the archive index {path}: {exc}") from exc
    return db


INSERT_RECORD = (
    "INSERT OR REPLACE INTO records (archive, record_id, incident_id, status, started_at, "
    "ended_at, duration_seconds, operator, error, location, record_sha256, chain_seq, "
    "critical, warning, info) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def record_row(archive: int, record: Record, digest: str, seq: int | None) -> tuple[Any, ...]:
    """The ``records`` row of a record (for :data:`INSERT_RECORD`)."""
    counts = record.severity_counts()
    error = record.error.describe() if record.error else None
    return (
        archive,
        record.record_id,
        record.incident_id,
        record.status,
        record.started_at.timestamp(),
        record.ended_at.timestamp(),
        record.duration_seconds,
        record.operator,
        error,
        record.location,
        digest,
        seq,
        counts["critical"],
        counts["warning"],
        counts["info"],
    )


def fact_rows(rid: int, facts: RecordFacts) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """``(INSERT statement, rows)`` for each child table of record row ``rid``."""
    listed = [
        (table, column, values)
        for table, column, values in (
            ("record_jobs", "job_id", facts.job_ids),
            ("record_tenants", "tenant", facts.tenants),
            ("record_buckets", "bucket", facts.buckets),
        )
    ]
    found: list[tuple[str, list[tuple[Any, ...]]]] = [
        (f"INSERT INTO {table} (record, {column}) VALUES (?, ?)", [(rid, v) for v in values])
        for table, column, values in listed
    ]
    found.append(
        (
            "INSERT INTO findings (record, code, severity, step, summary) VALUES (?,?,?,?,?)",
            [(rid, f.code, f.severity, f.step, f.summary) for f in facts.findings],
        )
    )
    found.append(
        (
            "INSERT INTO mitigations (record, action, operator, at, key, params, seq, "
            "source, summary) VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (
                    rid,
                    m.action,
                    m.operator,
                    m.at.timestamp() if m.at else None,
                    m.key,
                    json.dumps(m.params, sort_keys=True, default=str),
                    m.seq,
                    m.source,
                    m.summary,
                )
                for m in facts.mitigations
            ],
        )
    )
    return found


@dataclass(frozen=True)
class IndexedRecord:
    """One record as the index has it; ``version`` counts the incident's records from 1."""

    record_id: str
    incident_id: str
    version: int
    status: str
    started_at: datetime
    ended_at: datetime
    duration_seconds: float
    operator: str
    findings: dict[str, int]
    error: str | None
    location: str
    chain_seq: int | None
    record_sha256: str

    COLUMNS = (
        "r.record_id, r.incident_id, r.version, r.status, r.started_at, r.ended_at, "
        "r.duration_seconds, r.operator, r.critical, r.warning, r.info, r.error, "
        "r.location, r.chain_seq, r.record_sha256"
    )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> IndexedRecord:
        (
            record_id,
            incident,
            version,
            status,
            started,
            ended,
            duration,
            operator,
            critical,
            warning,
            info,
            error,
            location,
            seq,
            digest,
        ) = row
        counts = {"critical": critical, "warning": warning, "info": info}
        return cls(
            record_id,
            incident,
            version,
            status,
            _time(started),
            _time(ended),
            duration,
            operator,
            counts,
            error,
            location,
            seq,
            digest,
        )

    def summary(self) -> RecordSummary:
        """The record as ``Archive.list`` gives it."""
        return RecordSummary(
            self.record_id,
            self.incident_id,
            self.status,
            self.started_at,
            self.duration_seconds,
            self.operator,
            dict(self.findings),
            self.error,
            self.location,
        )


@dataclass(frozen=True)
class Query:
    """What a search asks for; every field narrows it (None: any). ``until`` is exclusive."""

    incident: str | None = None
    job_id: str | None = None
    tenant: str | None = None
    bucket: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    finding: str | None = None
    record_id: str | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.incident is not None:
            check_incident_id(self.incident)
        if self.record_id is not None:
            check_record_id(self.record_id)
        if self.status is not None and self.status not in STATUSES:
            raise InvalidInput(f"status {self.status!r}: use one of {', '.join(STATUSES)}")
        if self.limit is not None and self.limit < 1:
            raise InvalidInput("the limit must be at least 1")
        if self.since and self.until and self.since >= self.until:
            raise InvalidInput("--since must be before --until")

    def where(self) -> tuple[str, tuple[Any, ...]]:
        """SQL conditions on ``records r`` (each starting with `` AND``), and their values."""
        parts: list[tuple[str, Any]] = []
        simple = (
            ("r.incident_id", self.incident),
            ("r.status", self.status),
            ("r.record_id", self.record_id),
        )
        parts += [(f"{column} = ?", value) for column, value in simple if value is not None]
        related = (
            ("record_jobs", "job_id", self.job_id),
            ("record_tenants", "tenant", self.tenant),
            ("record_buckets", "bucket", self.bucket),
            ("findings", "code", self.finding),
        )
        parts += [
            (f"r.id IN (SELECT record FROM {table} WHERE {column} = ?)", value)
            for table, column, value in related
            if value is not None
        ]
        if self.since is not None:
            parts.append(("r.started_at >= ?", _epoch(self.since)))
        if self.until is not None:
            parts.append(("r.started_at < ?", _epoch(self.until)))
        return "".join(f" AND {sql}" for sql, _ in parts), tuple(v for _, v in parts)


Rows = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]


def facts_of(rows: Rows, rid: int) -> RecordFacts:
    """One record's facts from the index's child tables."""

    def values(table: str, column: str) -> list[str]:
        found = rows(f"SELECT {column} FROM {table} WHERE record = ? ORDER BY {column}", (rid,))
        return [v for (v,) in found]

    findings = [
        Finding(code, severity, summary, step, {})
        for code, severity, step, summary in rows(
            "SELECT code, severity, step, summary FROM findings WHERE record = ? ORDER BY rowid",
            (rid,),
        )
    ]
    mitigations = [
        _mitigation(row)
        for row in rows(
            f"SELECT {MITIGATION_COLUMNS} FROM mitigations m WHERE record = ? ORDER BY rowid",
            (rid,),
        )
    ]
    return RecordFacts(
        values("record_jobs", "job_id"),
        values("record_tenants", "tenant"),
        values("record_buckets", "bucket"),
        [],
        findings,
        mitigations,
    )


MITIGATION_COLUMNS = "m.action, m.operator, m.at, m.key, m.params, m.seq, m.source, m.summary"


def mitigations_of(rows: Rows, where: str, args: tuple[Any, ...]) -> list[AppliedMitigation]:
    """The mitigations of the records matching ``where``, once each, by time.

    Each record shows the journal as it was then, so a later record repeats what an earlier
    one showed: a journaled mitigation counts once per incident and key, a planned one once
    per incident, action and key.
    """
    found = rows(
        f"SELECT r.incident_id, {MITIGATION_COLUMNS} FROM mitigations m JOIN records r "
        f"ON m.record = r.id JOIN archives a ON r.archive = a.id WHERE {where} "
        "ORDER BY r.started_at, r.record_id, m.rowid",
        args,
    )
    once: dict[tuple[str, ...], AppliedMitigation] = {}
    for incident, *row in found:
        done = _mitigation(tuple(row))
        key = done.key or f"{done.action}#{done.seq}"
        once.setdefault((incident, done.source, key, done.action), done)
    return sorted(once.values(), key=lambda m: m.at or datetime.max.replace(tzinfo=UTC))


def _mitigation(row: tuple[Any, ...]) -> AppliedMitigation:
    action, operator, at, key, params, seq, source, summary = row
    return AppliedMitigation(
        action,
        operator,
        _time(at) if at is not None else None,
        key,
        json.loads(params),
        seq,
        source,
        summary,
    )


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """A time given on the command line: ISO-8601 (``2024-05-01``, ``2024-05-01T12:00Z``;
    UTC unless it says otherwise) or a duration ago (``30d``, ``12h``, ``1h30m``)."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=parse_ttl(text))
        except InvalidInput:
            raise InvalidInput(
                f"{text!r} is neither a time (2024-05-01, 2024-05-01T12:00Z) "
                "nor a duration ago (30d, 12h)"
            ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
