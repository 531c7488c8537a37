"""The sandbox's job store: SQLite in WAL mode, one file under ``$EXPORTNB_HOME/sandbox``.

Aggregates are computed in SQL. Finished attempts are also rolled up per minute
and status in ``minute_counts`` when they are written, so that a week of per-minute
counts reads a few thousand rows instead of every job.

``fault_hits`` (schema 2) holds what each injected fault actually struck, one row per
hit as the export worker or the S3 fault proxy reported it
(:class:`~exportnb.sandbox.faults.FaultHit`): the ground truth of an incident.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

from exportnb.core.errors import NotFound
from exportnb.platform.model import (
    Attempt,
    AuditEntry,
    Flag,
    Job,
    JobQuery,
    LatencyPercentiles,
    LogLine,
    MinuteCount,
    Segment,
)
from exportnb.sandbox.faults import FaultHit

HEARTBEAT_LOST = "HeartbeatLost"
"""The error code of a running attempt a retry abandoned for its stale heartbeat."""
SCHEMA_VERSION = 2
"""1: the first; 2 adds ``fault_hits``."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL, tier TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS connectors (name TEXT PRIMARY KEY, family TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, region TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    connector TEXT NOT NULL,
    bucket TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    chunk_size INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    heartbeat_at REAL,
    error_code TEXT,
    error_message TEXT,
    delivered_bucket TEXT,
    batch TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status_created ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch, status) WHERE batch IS NOT NULL;
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    bucket TEXT NOT NULL,
    chunk_size INTEGER NOT NULL,
    error_code TEXT,
    error_message TEXT,
    PRIMARY KEY (job_id, number)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attempts_finished ON attempts (finished_at, status, started_at);
CREATE TABLE IF NOT EXISTS minute_counts (
    minute INTEGER NOT NULL, status TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (minute, status)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS manifests (
    job_id TEXT NOT NULL, attempt INTEGER NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL,
    total_bytes INTEGER NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segments (
    job_id TEXT NOT NULL, attempt INTEGER NOT NULL, idx INTEGER NOT NULL,
    key TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY, job_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    at REAL NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS logs_job ON logs (job_id, at);
CREATE TABLE IF NOT EXISTS flags (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, set_by TEXT NOT NULL,
    set_at REAL NOT NULL, expires_at REAL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, old TEXT, new TEXT, reason TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS audit_target ON audit (target, id);
CREATE TABLE IF NOT EXISTS retry_batches (
    id TEXT PRIMARY KEY, concurrency INTEGER NOT NULL, created_at REAL NOT NULL,
    actor TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faults (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, params TEXT NOT NULL,
    injected_at REAL NOT NULL, cleared_at REAL);
CREATE TABLE IF NOT EXISTS fault_hits (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL,
    fault_id INTEGER, bucket TEXT NOT NULL, key TEXT NOT NULL, job_id TEXT, tenant TEXT,
    connector TEXT, attempt INTEGER, segment INTEGER, size INTEGER, chunk_size INTEGER,
    limit_bytes INTEGER);
CREATE INDEX IF NOT EXISTS fault_hits_at ON fault_hits (at);
"""

JOB_COLUMNS = (
    "id, tenant, connector, bucket, kind, status, attempts, chunk_size, bytes, created_at, "
    "started_at, finished_at, heartbeat_at, error_code, error_message, delivered_bucket"
)


@overload
def to_dt(ts: float) -> datetime: ...
@overload
def to_dt(ts: None) -> None: ...
@overload
def to_dt(ts: float | None) -> datetime | None: ...
def to_dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def to_ts(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def _job(row: sqlite3.Row | tuple[Any, ...]) -> Job:
    (
        jid,
        tenant,
        connector,
        bucket,
        kind,
        status,
        attempts,
        chunk,
        size,
        created,
        started,
        finished,
        heartbeat,
        code,
        message,
        delivered,
    ) = tuple(row)
    return Job(
        id=jid,
        tenant=tenant,
        connector=connector,
        bucket=bucket,
        kind=kind,
        status=status,
        attempts=attempts,
        chunk_size=chunk,
        bytes=size,
        created_at=to_dt(created),
        started_at=to_dt(started),
        finished_at=to_dt(finished),
        heartbeat_at=to_dt(heartbeat),
        error_code=code,
        error_message=message,
        delivered_bucket=delivered,
    )


class Store:
    """One SQLite database. Safe to share between threads; each thread gets its connection."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise NotFound(f"no sandbox store at {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        if create:
            self.db.executescript(SCHEMA)
            with self.transaction() as db:
                db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )

    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (BEGIN IMMEDIATE), so writers never deadlock."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # Meta ---------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO meta VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    # Reference data -----------------------------------------------------
    def buckets(self) -> list[tuple[str, str, str]]:
        """``(name, role, region)`` for every bucket, primary first."""
        return self.db.execute(
            "SELECT name, role, region FROM buckets ORDER BY role != 'primary', role, name"
        ).fetchall()

    def tenants(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT id FROM tenants ORDER BY id")]

    def connectors(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT name, family FROM connectors ORDER BY name"))

    # Jobs ---------------------------------------------------------------
    def list_jobs(self, query: JobQuery) -> list[Job]:
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("status", query.status),
            ("connector", query.connector),
            ("bucket", query.bucket),
            ("tenant", query.tenant),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if query.since is not None:
            clauses.append("created_at >= ?")
            args.append(query.since.timestamp())
        if query.until is not None:
            clauses.append("created_at < ?")
            args.append(query.until.timestamp())
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {JOB_COLUMNS} FROM jobs {where} ORDER BY created_at DESC LIMIT ?"
        return [_job(r) for r in self.db.execute(sql, (*args, query.limit))]

    def get_job(self, job_id: str) -> Job:
        row = self.db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id!r} not found")
        return _job(row)

    def existing_job_ids(self, job_ids: Iterable[str]) -> set[str]:
        ids = list(dict.fromkeys(job_ids))
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0] for r in self.db.execute(f"SELECT id FROM jobs WHERE id IN ({marks})", chunk)
            )
        return found

    def attempts(self, job_id: str) -> list[Attempt]:
        rows = self.db.execute(
            "SELECT job_id, number, status, started_at, finished_at, bucket, chunk_size, "
            "error_code, error_message FROM attempts WHERE job_id = ? ORDER BY number",
            (job_id,),
        )
        return [
            Attempt(
                job_id=r[0],
                number=r[1],
                status=r[2],
                started_at=to_dt(r[3]),
                finished_at=to_dt(r[4]),
                bucket=r[5],
                chunk_size=r[6],
                error_code=r[7],
                error_message=r[8],
            )
            for r in rows
        ]

    def logs(self, job_id: str, limit: int = 200) -> list[LogLine]:
        rows = self.db.execute(
            "SELECT job_id, at, level, message, attempt FROM logs WHERE job_id = ? "
            "ORDER BY at, id LIMIT ?",
            (job_id, limit),
        )
        return [LogLine(r[0], to_dt(r[1]), r[2], r[3], r[4]) for r in rows]

    def add_log(self, job_id: str, attempt: int, level: str, message: str, at: float) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO logs (job_id, attempt, at, level, message) VALUES (?, ?, ?, ?, ?)",
                (job_id, attempt, at, level, message),
            )

    def create_job(
        self,
        *,
        job_id: str,
        tenant: str,
        connector: str,
        bucket: str,
        kind: str,
        chunk_size: int,
        size: int,
        created_at: float,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, tenant, connector, bucket, kind, status, attempts, "
                "chunk_size, bytes, created_at) VALUES (?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?)",
                (job_id, tenant, connector, bucket, kind, chunk_size, size, created_at),
            )

    def claim(self, *, now: float, bulk_paused: bool) -> Job | None:
        """Take the oldest runnable queued job and mark it running, honouring retry batches.

        A job queued by a retry batch runs only while fewer than the batch's
        concurrency of its jobs are running. Bulk jobs wait while bulk exports are paused.
        """
        with self.transaction() as db:
            row = db.execute(
                "SELECT j.id FROM jobs j LEFT JOIN retry_batches b ON b.id = j.batch "
                "WHERE j.status = 'queued' AND (? = 0 OR j.kind != 'bulk') "
                "AND (j.batch IS NULL OR (SELECT count(*) FROM jobs r "
                "     WHERE r.batch = j.batch AND r.status = 'running') < b.concurrency) "
                "ORDER BY j.created_at LIMIT 1",
                (int(bulk_paused),),
            ).fetchone()
            if row is None:
                return None
            job_id = row[0]
            db.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?, "
                "heartbeat_at = ?, finished_at = NULL, error_code = NULL, error_message = NULL "
                "WHERE id = ?",
                (now, now, job_id),
            )
            job = _job(
                db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            )
            db.execute(
                "INSERT INTO attempts (job_id, number, status, started_at, bucket, chunk_size) "
                "VALUES (?, ?, 'running', ?, ?, ?)",
                (job_id, job.attempts, now, job.bucket, job.chunk_size),
            )
            return job

    def heartbeat(self, job_id: str, now: float) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND status = 'running'",
                (now, job_id),
            )

    def finish(
        self,
        job_id: str,
        attempt: int,
        *,
        status: str,
        finished_at: float,
        bucket: str,
        error_code: str | None = None,
        error_message: str | None = None,
        started_at: float | None = None,
    ) -> bool:
        """Close an attempt. Returns False when the attempt was already closed (abandoned)."""
        with self.transaction() as db:
            current = db.execute(
                "SELECT attempts, status FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if current is None or current[0] != attempt or current[1] != "running":
                return False
            db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, heartbeat_at = NULL, error_code = ?, "
                "error_message = ?, delivered_bucket = CASE WHEN ? = 'succeeded' THEN ? "
                "ELSE delivered_bucket END, started_at = COALESCE(?, started_at) WHERE id = ?",
                (
                    status,
                    finished_at,
                    error_code,
                    error_message,
                    status,
                    bucket,
                    started_at,
                    job_id,
                ),
            )
            db.execute(
                "UPDATE attempts SET status = ?, finished_at = ?, bucket = ?, error_code = ?, "
                "error_message = ?, started_at = COALESCE(?, started_at) "
                "WHERE job_id = ? AND number = ?",
                (
                    status,
                    finished_at,
                    bucket,
                    error_code,
                    error_message,
                    started_at,
                    job_id,
                    attempt,
                ),
            )
            self._count(db, finished_at, status)
            return True

    @staticmethod
    def _count(db: sqlite3.Connection, finished_at: float, status: str, n: int = 1) -> None:
        db.execute(
            "INSERT INTO minute_counts VALUES (?, ?, ?) "
            "ON CONFLICT(minute, status) DO UPDATE SET n = n + excluded.n",
            (int(finished_at // 60) * 60, status, n),
        )

    def record_manifest(
        self,
        job_id: str,
        attempt: int,
        bucket: str,
        key: str,
        segments: Sequence[Segment],
        created_at: float,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO manifests VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, attempt, bucket, key, sum(s.size for s in segments), created_at),
            )
            db.executemany(
                "INSERT OR REPLACE INTO segments VALUES (?, ?, ?, ?, ?, ?)",
                [(job_id, attempt, s.index, s.key, s.size, s.sha256) for s in segments],
            )

    def latest_manifest(self, job_id: str) -> tuple[int, str, str] | None:
        """``(attempt, bucket, key)`` of the job's newest manifest, if it wrote one."""
        return self.db.execute(
            "SELECT attempt, bucket, key FROM manifests WHERE job_id = ? "
            "ORDER BY attempt DESC LIMIT 1",
            (job_id,),
        ).fetchone()

    def deliveries(self, since: float, until: float, limit: int) -> tuple[list[Any], int]:
        """The manifests written in ``[since, until)``, oldest first, at most ``limit``:
        ``(job_id, attempt, tenant, connector, bucket, key, created_at)`` each, and how many
        the range holds. One query (the count is a window over the same rows)."""
        rows = self.db.execute(
            "SELECT m.job_id, m.attempt, j.tenant, j.connector, m.bucket, m.key, m.created_at, "
            "count(*) OVER () FROM manifests m JOIN jobs j ON j.id = m.job_id "
            "WHERE m.created_at >= ? AND m.created_at < ? "
            "ORDER BY m.created_at, m.job_id, m.attempt LIMIT ?",
            (since, until, limit),
        ).fetchall()
        return [row[:7] for row in rows], rows[0][7] if rows else 0

    def manifest_segments(self, pairs: Sequence[tuple[str, int]]) -> list[Any]:
        """Every segment of the manifests of ``(job_id, attempt)`` pairs, in one query:
        ``(job_id, attempt, bucket, key, total_bytes, created_at, idx, segment_key, size,
        sha256)`` each (the segment's None for a manifest without any), by job, attempt and
        segment."""
        return self.db.execute(
            "SELECT m.job_id, m.attempt, m.bucket, m.key, m.total_bytes, m.created_at, "
            "s.idx, s.key, s.size, s.sha256 FROM manifests m "
            "LEFT JOIN segments s ON s.job_id = m.job_id AND s.attempt = m.attempt "
            "WHERE (m.job_id, m.attempt) IN "
            "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)) "
            "ORDER BY m.job_id, m.attempt, s.idx",
            (json.dumps([list(pair) for pair in pairs]),),
        ).fetchall()

    def stale_running(self, older_than: float) -> list[Job]:
        rows = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'running' AND heartbeat_at < ? "
            "ORDER BY heartbeat_at",
            (older_than,),
        )
        return [_job(r) for r in rows]

    def running_summary(self) -> tuple[int, float | None]:
        """How many jobs are running, and the oldest heartbeat among them."""
        n, oldest = self.db.execute(
            "SELECT count(*), min(heartbeat_at) FROM jobs WHERE status = 'running'"
        ).fetchone()
        return n, oldest

    def requeue(
        self,
        job_ids: Sequence[str],
        *,
        batch: str,
        concurrency: int,
        actor: str,
        now: float,
        abandon_before: float,
    ) -> tuple[list[str], dict[str, str]]:
        """Queue jobs again under a new retry batch. Returns (queued, skipped with reasons).

        Failed, cancelled and succeeded jobs (a re-export) are queued again. A running
        job is queued again only when its heartbeat is older than ``abandon_before``;
        its attempt is closed as failed with ``HeartbeatLost``.
        """
        queued: list[str] = []
        skipped: dict[str, str] = {}
        with self.transaction() as db:
            db.execute(
                "INSERT INTO retry_batches VALUES (?, ?, ?, ?)", (batch, concurrency, now, actor)
            )
            for job_id in job_ids:
                row = db.execute(
                    "SELECT status, heartbeat_at, attempts, bucket FROM jobs WHERE id = ?",
                    (job_id,),
                ).fetchone()
                if row is None:
                    skipped[job_id] = "not found"
                    continue
                status, heartbeat, attempt, _ = row
                if status == "queued":
                    skipped[job_id] = "already queued"
                    continue
                if status == "running":
                    if heartbeat is None or heartbeat >= abandon_before:
                        skipped[job_id] = "running with a live heartbeat"
                        continue
                    message = "heartbeat lost; attempt abandoned by retry"
                    db.execute(
                        "UPDATE attempts SET status = 'failed', finished_at = ?, "
                        "error_code = ?, error_message = ? "
                        "WHERE job_id = ? AND number = ?",
                        (now, HEARTBEAT_LOST, message, job_id, attempt),
                    )
                    self._count(db, now, "failed")
                db.execute(
                    "UPDATE jobs SET status = 'queued', batch = ?, heartbeat_at = NULL "
                    "WHERE id = ?",
                    (batch, job_id),
                )
                queued.append(job_id)
        return queued, skipped

    def set_chunk_size(self, job_id: str, size: int) -> int:
        """Set a job's chunk size; returns the old one."""
        with self.transaction() as db:
            row = db.execute("SELECT chunk_size FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"job {job_id!r} not found")
            db.execute("UPDATE jobs SET chunk_size = ? WHERE id = ?", (size, job_id))
            return int(row[0])

    def batch_running_peak(self, batch: str) -> int:
        return self.db.execute(
            "SELECT count(*) FROM jobs WHERE batch = ? AND status = 'running'", (batch,)
        ).fetchone()[0]

    # Aggregates ---------------------------------------------------------
    def status_counts(self, since: float, until: float) -> list[MinuteCount]:
        rows = self.db.execute(
            "SELECT minute, status, n FROM minute_counts WHERE minute >= ? AND minute < ? "
            "ORDER BY minute, status",
            (int(since // 60) * 60, until),
        )
        return [MinuteCount(to_dt(m), s, n) for m, s, n in rows]

    def latency(self, since: float, until: float, *, per_minute: bool) -> list[LatencyPercentiles]:
        """Exact nearest-rank percentiles of finished attempt durations, computed in SQL."""
        group = "CAST(finished_at / 60 AS INTEGER) * 60" if per_minute else "0"
        rows = self.db.execute(
            f"""
            WITH d AS (
                SELECT {group} AS g, finished_at - started_at AS dur,
                       row_number() OVER (PARTITION BY {group}
                                          ORDER BY finished_at - started_at) AS rn,
                       count(*) OVER (PARTITION BY {group}) AS n
                FROM attempts
                WHERE finished_at >= ? AND finished_at < ? AND status IN ('succeeded', 'failed')
            )
            SELECT g, max(n),
                   max(CASE WHEN rn = max(1, CAST(ceil(0.50 * n) AS INTEGER)) THEN dur END),
                   max(CASE WHEN rn = max(1, CAST(ceil(0.95 * n) AS INTEGER)) THEN dur END),
                   max(CASE WHEN rn = max(1, CAST(ceil(0.99 * n) AS INTEGER)) THEN dur END)
            FROM d GROUP BY g ORDER BY g
            """,
            (since, until),
        ).fetchall()
        start, end = to_dt(since), to_dt(until)
        if not per_minute:
            if not rows:
                return [LatencyPercentiles(start, end, 0, None, None, None)]
            _, n, p50, p95, p99 = rows[0]
            return [LatencyPercentiles(start, end, n, p50, p95, p99)]
        return [
            LatencyPercentiles(to_dt(g), to_dt(g + 60), n, p50, p95, p99, minute=to_dt(g))
            for g, n, p50, p95, p99 in rows
        ]

    # Flags and audit ----------------------------------------------------
    def flag(self, key: str, now: float) -> Flag | None:
        row = self.db.execute(
            "SELECT key, value, set_by, set_at, expires_at FROM flags WHERE key = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (key, now),
        ).fetchone()
        return _flag(row) if row else None

    def flags(self, now: float) -> list[Flag]:
        rows = self.db.execute(
            "SELECT key, value, set_by, set_at, expires_at FROM flags "
            "WHERE expires_at IS NULL OR expires_at > ? ORDER BY key",
            (now,),
        )
        return [_flag(r) for r in rows]

    def put_flag(
        self,
        key: str,
        value: Any,
        *,
        actor: str,
        now: float,
        expires_at: float | None,
        reason: str,
    ) -> Flag:
        with self.transaction() as db:
            self._expire(db, now)
            old = db.execute("SELECT value FROM flags WHERE key = ?", (key,)).fetchone()
            db.execute(
                "INSERT INTO flags VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                "value = excluded.value, set_by = excluded.set_by, set_at = excluded.set_at, "
                "expires_at = excluded.expires_at",
                (key, json.dumps(value), actor, now, expires_at),
            )
            new = {
                "value": value,
                "expires_at": to_dt(expires_at).isoformat() if expires_at else None,
            }
            self._audit(
                db, now, actor, "flag.set", key, json.loads(old[0]) if old else None, new, reason
            )
        return Flag(key, value, actor, to_dt(now), to_dt(expires_at))

    def delete_flag(self, key: str, *, actor: str, now: float, reason: str) -> bool:
        with self.transaction() as db:
            self._expire(db, now)
            old = db.execute("SELECT value FROM flags WHERE key = ?", (key,)).fetchone()
            if old is None:
                return False
            db.execute("DELETE FROM flags WHERE key = ?", (key,))
            self._audit(db, now, actor, "flag.unset", key, json.loads(old[0]), None, reason)
            return True

    def expire_flags(self, now: float) -> int:
        with self.transaction() as db:
            return self._expire(db, now)

    def _expire(self, db: sqlite3.Connection, now: float) -> int:
        """Remove flags past their TTL, with an audit entry each, at the time they expired."""
        expired = db.execute(
            "SELECT key, value, expires_at FROM flags WHERE expires_at IS NOT NULL "
            "AND expires_at <= ?",
            (now,),
        ).fetchall()
        for key, value, expires_at in expired:
            db.execute("DELETE FROM flags WHERE key = ?", (key,))
            self._audit(db, expires_at, "ttl", "flag.expire", key, json.loads(value), None, "")
        return len(expired)

    def audit(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        old: Any = None,
        new: Any = None,
        reason: str = "",
        now: float | None = None,
    ) -> None:
        with self.transaction() as db:
            self._audit(db, now or time.time(), actor, action, target, old, new, reason)

    @staticmethod
    def _audit(
        db: sqlite3.Connection,
        at: float,
        actor: str,
        action: str,
        target: str,
        old: Any,
        new: Any,
        reason: str,
    ) -> None:
        db.execute(
            "INSERT INTO audit (at, actor, action, target, old, new, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (at, actor, action, target, json.dumps(old), json.dumps(new), reason),
        )

    def audit_entries(
        self, *, target: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        clauses: list[str] = []
        args: list[Any] = []
        if target is not None:
            clauses.append("target = ?")
            args.append(target)
        if since is not None:
            clauses.append("at >= ?")
            args.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.execute(
            f"SELECT id, at, actor, action, target, old, new, reason FROM audit {where} "
            "ORDER BY id DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [
            AuditEntry(
                r[0], to_dt(r[1]), r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6]), r[7]
            )
            for r in reversed(rows)
        ]

    # Faults -------------------------------------------------------------
    def add_fault(self, kind: str, params: dict[str, Any], now: float) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO faults (kind, params, injected_at) VALUES (?, ?, ?)",
                (kind, json.dumps(params, sort_keys=True), now),
            )
            self._audit(db, now, "sandbox", "fault.inject", kind, None, params, "")
            return int(cur.lastrowid or 0)

    def clear_faults(self, now: float, fault_id: int | None = None) -> int:
        with self.transaction() as db:
            clause, args = ("AND id = ?", (fault_id,)) if fault_id is not None else ("", ())
            rows = db.execute(
                f"SELECT id, kind, params FROM faults WHERE cleared_at IS NULL {clause}", args
            ).fetchall()
            for fid, kind, params in rows:
                db.execute("UPDATE faults SET cleared_at = ? WHERE id = ?", (now, fid))
                self._audit(db, now, "sandbox", "fault.clear", kind, json.loads(params), None, "")
            return len(rows)

    def active_faults(self) -> list[tuple[int, str, dict[str, Any], float]]:
        rows = self.db.execute(
            "SELECT id, kind, params, injected_at FROM faults WHERE cleared_at IS NULL ORDER BY id"
        )
        return [(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def faults_version(self) -> tuple[int, int]:
        """Changes whenever a fault is injected or cleared; cheap to poll."""
        return self.db.execute(
            "SELECT count(*), coalesce(sum(cleared_at IS NOT NULL), 0) FROM faults"
        ).fetchone()

    # Fault hits ---------------------------------------------------------------
    def record_fault_hit(self, hit: FaultHit) -> None:
        """Write down one thing a fault struck; the attempt's connector and chunk size come
        from the store where the hit does not say."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO fault_hits (at, kind, source, fault_id, bucket, key, job_id, tenant, "
                "connector, attempt, segment, size, chunk_size, limit_bytes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                "COALESCE(?, (SELECT connector FROM jobs WHERE id = ?)), ?, ?, ?, "
                "COALESCE(?, (SELECT chunk_size FROM attempts WHERE job_id = ? AND number = ?)), "
                "?)",
                (
                    hit.at,
                    hit.kind,
                    hit.source,
                    hit.fault_id,
                    hit.bucket,
                    hit.key,
                    hit.job_id,
                    hit.tenant,
                    hit.connector,
                    hit.job_id,
                    hit.attempt,
                    hit.segment,
                    hit.size,
                    hit.chunk_size,
                    hit.job_id,
                    hit.attempt,
                    hit.limit,
                ),
            )

    def fault_hits(self, until: float | None = None) -> list[FaultHit]:
        """Every recorded fault hit (up to ``until``), oldest first."""
        where, args = ("WHERE at <= ?", (until,)) if until is not None else ("", ())
        rows = self.db.execute(
            "SELECT kind, source, at, bucket, key, job_id, tenant, attempt, segment, size, "
            f"limit_bytes, fault_id, connector, chunk_size FROM fault_hits {where} "
            "ORDER BY at, id",
            args,
        )
        return [FaultHit(*row) for row in rows]

    def delivered(self, pairs: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
        """The ``(job, attempt)`` pairs among ``pairs`` that wrote a manifest."""
        found: set[tuple[str, int]] = set()
        for job_id, attempt in set(pairs):
            row = self.db.execute(
                "SELECT 1 FROM manifests WHERE job_id = ? AND attempt = ?", (job_id, attempt)
            ).fetchone()
            if row is not None:
                found.add((job_id, attempt))
        return found

    def succeeded_chunk_sizes(self, since: float, until: float) -> dict[str, list[int]]:
        """Bucket -> the chunk sizes of attempts that started in ``[since, until]`` and
        succeeded there, ascending."""
        rows = self.db.execute(
            "SELECT DISTINCT bucket, chunk_size FROM attempts WHERE status = 'succeeded' "
            "AND started_at >= ? AND started_at <= ? ORDER BY bucket, chunk_size",
            (since, until),
        )
        found: dict[str, list[int]] = {}
        for bucket, size in rows:
            found.setdefault(bucket, []).append(size)
        return found

    def all_faults(self) -> list[tuple[int, str, dict[str, Any], float, float | None]]:
        """``(id, kind, params, injected_at, cleared_at)`` of every fault ever injected."""
        rows = self.db.execute(
            "SELECT id, kind, params, injected_at, cleared_at FROM faults ORDER BY id"
        )
        return [(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]


def _flag(row: tuple[Any, ...]) -> Flag:
    return Flag(row[0], json.loads(row[1]), row[2], to_dt(row[3]), to_dt(row[4]))
