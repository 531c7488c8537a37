"""Incidents and their runs: one incident per alert group, deduplicated, in SQLite.

The store (``$EXPORTNB_HOME/service/incidents.db``) is the receiver's source of truth.
:meth:`IncidentStore.receive` turns one notification into one :class:`Receipt`, in one
transaction:

==========================================  ============  =================================
notification                                action        run
==========================================  ============  =================================
firing, no open incident for its group      ``queued``    run 1 of a new incident
firing, every firing fingerprint seen       ``heartbeat`` none (counted)
firing, a fingerprint not seen before       ``queued``    a new run of the same incident
firing again while the incident resolves    ``queued``    a new run; the incident is open
resolved, incident open                     ``resolved``  the final run; closed after it
resolved, incident resolving or resolved    ``heartbeat`` none
resolved, no incident                       ``ignored``   none
==========================================  ============  =================================

An incident's ID is derived from its group: ``INC-<UTC date opened>-<8 hex of
sha256(groupKey)>``, with ``-2``, ``-3``... for later incidents of the same group opened
the same day. It is a valid record incident ID (:func:`exportnb.record.model.check_incident_id`).

Runs of one incident are sequential: a run is created ``waiting``; the dispatcher
(:mod:`exportnb.service.dispatch`) queues the oldest waiting run of an incident once no
other run of it is ``queued`` or ``running``. A trigger that arrives while a run is still
waiting joins that run (with the newer alert) instead of adding another. A run ends
``succeeded`` or ``failed`` (the record's status) or ``error`` (no record: the runner
refused or the archive and the outbox both failed).

The same file holds the outbox of Slack status updates (table ``updates``): a finished
run's update is kept in the very transaction that finishes the run, so a run is finished
if and only if its update waits to be posted; it leaves the outbox only once Slack took it
(:func:`exportnb.service.outbox.deliver_updates`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from exportnb.core.errors import InvalidInput, NotFound, StorageError
from exportnb.core.ids import check_incident_id
from exportnb.service.alerts import Notification

SCHEMA_VERSION = 2
ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "error")
SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, group_key TEXT NOT NULL, status TEXT NOT NULL,
    receiver TEXT NOT NULL, opened_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    closed_at TEXT, notifications INTEGER NOT NULL, heartbeats INTEGER NOT NULL,
    fingerprints TEXT NOT NULL, firing TEXT NOT NULL, alertnames TEXT NOT NULL,
    job_ids TEXT NOT NULL, alert TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS incidents_group ON incidents (group_key, opened_at);
CREATE TABLE IF NOT EXISTS runs (
    incident_id TEXT NOT NULL REFERENCES incidents (id), number INTEGER NOT NULL,
    reason TEXT NOT NULL, state TEXT NOT NULL, attempt INTEGER NOT NULL,
    created_at TEXT NOT NULL, queued_at TEXT, started_at TEXT, ended_at TEXT,
    alert TEXT NOT NULL, job_ids TEXT NOT NULL, record_id TEXT, record_status TEXT,
    location TEXT, html TEXT, status_update TEXT, error TEXT, notice TEXT,
    PRIMARY KEY (incident_id, number));
CREATE INDEX IF NOT EXISTS runs_state ON runs (state);
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT, incident_id TEXT NOT NULL, run INTEGER NOT NULL,
    created_at TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
    failures INTEGER NOT NULL DEFAULT 0, error TEXT, UNIQUE (incident_id, run));
CREATE INDEX IF NOT EXISTS updates_state ON updates (state, id);
"""


@dataclass(frozen=True)
class Run:
    incident_id: str
    number: int
    reason: str
    state: str
    attempt: int
    created_at: str
    alert: dict[str, Any]
    job_ids: list[str]
    queued_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    record_id: str | None = None
    record_status: str | None = None
    location: str | None = None
    html: str | None = None
    status_update: str | None = None
    error: str | None = None
    notice: str | None = None

    def to_json(self, base: str | None = None) -> dict[str, Any]:
        """The run as the API shows it; ``url`` is its record's page (``base``: the public URL)."""
        shown = {k: v for k, v in self.__dict__.items() if k not in ("alert", "incident_id")}
        url = record_link(self.record_id, base) if self.record_id else None
        return {"run": shown.pop("number"), **shown, "url": url}


@dataclass(frozen=True)
class Incident:
    id: str
    group_key: str
    status: str
    receiver: str
    opened_at: str
    updated_at: str
    closed_at: str | None
    notifications: int
    heartbeats: int
    fingerprints: list[str]
    firing: list[str]
    alertnames: list[str]
    job_ids: list[str]
    runs: list[Run] = field(default_factory=list)

    def summary(self, base: str | None = None) -> dict[str, Any]:
        """The incident as ``GET /incidents`` lists it (``base``: the public URL)."""
        skip = ("runs", "fingerprints", "firing")
        return {
            **{k: v for k, v in self.__dict__.items() if k not in skip},
            "fingerprints": len(self.fingerprints),
            "firing": len(self.firing),
            "runs": len(self.runs),
            "records": [
                {
                    "id": r.record_id,
                    "run": r.number,
                    "status": r.record_status,
                    "html": r.html,
                    "url": record_link(r.record_id, base),
                }
                for r in self.runs
                if r.record_id
            ],
        }


@dataclass(frozen=True)
class Receipt:
    """What a notification did: the answer of ``POST /alerts/alertmanager``."""

    incident: str | None
    action: str
    run: int | None = None
    new_alerts: int = 0


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as the worker reports it."""

    state: str
    record_id: str | None = None
    record_status: str | None = None
    location: str | None = None
    html: str | None = None
    status_update: str | None = None
    error: str | None = None
    notice: str | None = None


@dataclass(frozen=True)
class Update:
    """A run's status update waiting in the outbox for Slack; ``failures``: posts so far
    that Slack did not take."""

    id: int
    incident_id: str
    run: int
    payload: dict[str, Any]
    failures: int = 0

    @property
    def key(self) -> str:
        return f"{self.incident_id}:{self.run}"


def incident_id_for(group_key: str, opened: datetime, taken: int = 0) -> str:
    """``INC-<YYYYMMDD>-<8 hex>`` (``-<n>`` for the n-th incident of the group that day)."""
    digest = hashlib.sha256(group_key.encode()).hexdigest()[:8]
    base = f"INC-{opened.astimezone(UTC).strftime('%Y%m%d')}-{digest}"
    return check_incident_id(base if taken == 0 else f"{base}-{taken + 1}")


def record_link(record_id: str, base: str | None = None) -> str:
    """Where ``exportnb serve`` shows a record's page: ``/records/<record id>/notebook.html``,
    after ``base`` (``[serve] public_url``) when there is one."""
    return f"{base or ''}/records/{record_id}/notebook.html"


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class IncidentStore:
    """The incidents and runs, in one SQLite file; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._checkpointer: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # durable across a kill -9
            self.db.execute("PRAGMA busy_timeout=10000")
            self.db.execute("PRAGMA wal_autocheckpoint=0")  # see checkpoint()
            self.db.executescript(SCHEMA)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the incident store {path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self.db.close()
        self.checkpoint()
        if self._checkpointer is not None:
            self._checkpointer.close()

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database, on a connection of its own, so that
        no notification's commit pays for it (the dispatcher calls this every few seconds)."""
        try:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(self.path, check_same_thread=False)
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            raise StorageError(f"incident store {self.path}: {exc}") from exc

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield self.db
                except BaseException:
                    self.db.execute("ROLLBACK")
                    raise
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StorageError(f"incident store {self.path}: {exc}") from exc

    # Notifications ---------------------------------------------------------------------
    def receive(self, note: Notification, now: datetime | None = None) -> Receipt:
        """Record one notification; see the module docstring for what it does."""
        now = now or datetime.now(UTC)
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM incidents WHERE group_key = ? ORDER BY opened_at "
                "DESC, rowid DESC LIMIT 1",
                (note.group_key,),
            ).fetchone()
            current = _incident(row) if row else None
            if note.status == "firing":
                if current is None or current.status == "resolved" or not note.firing:
                    if not note.firing:
                        return self._heard(db, current, note, now)
                    return self._open(db, note, now)
                return self._firing(db, current, note, now)
            if current is None:
                return Receipt(None, "ignored")
            if current.status != "open":
                return self._heard(db, current, note, now)
            self._update(db, current, note, now, status="resolving")
            number = self._add_run(db, current.id, "resolved", note, now)
            return Receipt(current.id, "resolved", number)

    def _open(self, db: sqlite3.Connection, note: Notification, now: datetime) -> Receipt:
        same_day = incident_id_for(note.group_key, now)
        taken = db.execute(
            "SELECT COUNT(*) FROM incidents WHERE id = ? OR id LIKE ?", (same_day, same_day + "-%")
        ).fetchone()[0]
        incident = incident_id_for(note.group_key, now, taken)
        firing = sorted(note.firing)
        db.execute(
            "INSERT INTO incidents VALUES (?, ?, 'open', ?, ?, ?, NULL, 1, 0, ?, ?, ?, ?, ?)",
            (
                incident,
                note.group_key,
                note.receiver,
                stamp(now),
                stamp(now),
                json.dumps(firing),
                json.dumps(firing),
                json.dumps(_alertnames(note)),
                json.dumps(note.job_ids()),
                json.dumps(note.to_json()),
            ),
        )
        number = self._add_run(db, incident, "opened", note, now)
        return Receipt(incident, "queued", number, len(firing))

    def _firing(
        self, db: sqlite3.Connection, current: Incident, note: Notification, now: datetime
    ) -> Receipt:
        new = note.firing - set(current.fingerprints)
        self._update(db, current, note, now, status="open", heartbeat=not new)
        if not new and current.status == "open":
            return Receipt(current.id, "heartbeat")
        reason = "new_alerts" if new else "firing_again"
        return Receipt(
            current.id, "queued", self._add_run(db, current.id, reason, note, now), len(new)
        )

    def _heard(
        self, db: sqlite3.Connection, current: Incident | None, note: Notification, now: datetime
    ) -> Receipt:
        if current is None:
            return Receipt(None, "ignored")
        db.execute(
            "UPDATE incidents SET notifications = notifications + 1, heartbeats = "
            "heartbeats + 1, updated_at = ? WHERE id = ?",
            (stamp(now), current.id),
        )
        return Receipt(current.id, "heartbeat")

    def _update(
        self,
        db: sqlite3.Connection,
        current: Incident,
        note: Notification,
        now: datetime,
        *,
        status: str,
        heartbeat: bool = False,
    ) -> None:
        seen = sorted(set(current.fingerprints) | note.firing)
        names = list(dict.fromkeys(current.alertnames + _alertnames(note)))
        jobs = list(dict.fromkeys(current.job_ids + note.job_ids()))
        db.execute(
            "UPDATE incidents SET status = ?, updated_at = ?, notifications = notifications + 1, "
            "heartbeats = heartbeats + ?, fingerprints = ?, firing = ?, alertnames = ?, "
            "job_ids = ?, alert = ? WHERE id = ?",
            (
                status,
                stamp(now),
                int(heartbeat),
                json.dumps(seen),
                json.dumps(sorted(note.firing)),
                json.dumps(names),
                json.dumps(jobs),
                json.dumps(note.to_json()),
                current.id,
            ),
        )

    def _add_run(
        self,
        db: sqlite3.Connection,
        incident: str,
        reason: str,
        note: Notification | None,
        now: datetime,
    ) -> int:
        """A waiting run with the notification's alert, or the waiting run it joins."""
        if note is None:
            row = db.execute(
                "SELECT alert, job_ids FROM incidents WHERE id = ?", (incident,)
            ).fetchone()
            alert, jobs = row["alert"], row["job_ids"]
        else:
            alert, jobs = json.dumps(note.to_json()), json.dumps(note.job_ids())
        waiting = db.execute(
            "SELECT number FROM runs WHERE incident_id = ? AND state = "
            "'waiting' ORDER BY number LIMIT 1",
            (incident,),
        ).fetchone()
        if waiting:
            db.execute(
                "UPDATE runs SET reason = ?, alert = ?, job_ids = ? WHERE incident_id = ? "
                "AND number = ?",
                (reason, alert, jobs, incident, waiting[0]),
            )
            return int(waiting[0])
        number = db.execute(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM runs WHERE incident_id = ?", (incident,)
        ).fetchone()[0]
        db.execute(
            "INSERT INTO runs (incident_id, number, reason, state, attempt, created_at, "
            "alert, job_ids) VALUES (?, ?, ?, 'waiting', 0, ?, ?, ?)",
            (incident, number, reason, stamp(now), alert, jobs),
        )
        return int(number)

    # The dispatcher's side ---------------------------------------------------------------
    def startable(self) -> list[Run]:
        """The oldest waiting run of each incident that has no queued or running run."""
        with self._lock:
            rows = self.db.execute(
                "SELECT * FROM runs r WHERE state = 'waiting' AND number = (SELECT MIN(number) "
                "FROM runs w WHERE w.incident_id = r.incident_id AND w.state = 'waiting') AND "
                "NOT EXISTS (SELECT 1 FROM runs a WHERE a.incident_id = r.incident_id AND "
                "a.state IN ('queued', 'running')) ORDER BY created_at"
            ).fetchall()
        return [_run(row) for row in rows]

    def active(self) -> list[Run]:
        with self._lock:
            rows = self.db.execute(
                "SELECT * FROM runs WHERE state IN ('queued', 'running') ORDER BY queued_at"
            ).fetchall()
        return [_run(row) for row in rows]

    def mark(
        self, runs: list[Run], state: str, now: datetime, *, attempt: int | None = None
    ) -> None:
        """``queued`` (with the attempt) or ``running``, in one transaction."""
        column = "queued_at" if state == "queued" else "started_at"
        rows = [
            (
                state,
                stamp(now),
                run.attempt if attempt is None else attempt,
                run.incident_id,
                run.number,
            )
            for run in runs
        ]
        with self._tx() as db:
            db.executemany(
                f"UPDATE runs SET state = ?, {column} = ?, attempt = ? WHERE "
                "incident_id = ? AND number = ?",
                rows,
            )

    def finish(
        self, run: Run, outcome: Outcome, now: datetime, *, update: dict[str, Any] | None = None
    ) -> None:
        """Record how a run ended; a final run closes its incident. ``update``, the run's
        Slack post, goes into the outbox in the same transaction."""
        if outcome.state not in FINISHED:
            raise InvalidInput(f"a run ends {', '.join(FINISHED)}, not {outcome.state!r}")
        with self._tx() as db:
            if update is not None:
                db.execute(
                    "INSERT OR IGNORE INTO updates (incident_id, run, created_at, payload) "
                    "VALUES (?, ?, ?, ?)",
                    (run.incident_id, run.number, stamp(now), json.dumps(update)),
                )
            db.execute(
                "UPDATE runs SET state = ?, ended_at = ?, record_id = ?, record_status = ?, "
                "location = ?, html = ?, status_update = ?, error = ?, notice = ? "
                "WHERE incident_id = ? AND number = ?",
                (
                    outcome.state,
                    stamp(now),
                    outcome.record_id,
                    outcome.record_status,
                    outcome.location,
                    outcome.html,
                    outcome.status_update,
                    outcome.error,
                    outcome.notice,
                    run.incident_id,
                    run.number,
                ),
            )
            if run.reason == "resolved":
                db.execute(
                    "UPDATE incidents SET status = 'resolved', closed_at = ?, updated_at "
                    "= ? WHERE id = ? AND status = 'resolving' AND NOT EXISTS (SELECT 1 "
                    "FROM runs WHERE incident_id = ? AND state = 'waiting')",
                    (stamp(now), stamp(now), run.incident_id, run.incident_id),
                )

    def note(self, run: Run, notice: str) -> None:
        """Add a line to a finished run's notice (the Slack post, say)."""
        with self._tx() as db:
            _note(db, run.incident_id, run.number, notice)

    # The outbox of Slack status updates ---------------------------------------------------
    def pending_updates(self, limit: int = 100) -> list[Update]:
        """The updates Slack has not taken yet, oldest first (so each incident's in order)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT id, incident_id, run, payload, failures FROM updates WHERE state = "
                "'pending' ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [Update(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    def update_posted(self, update: Update, notice: str) -> None:
        """Slack took the update: out of the outbox, and said in the run's notice, at once."""
        with self._tx() as db:
            db.execute("DELETE FROM updates WHERE id = ?", (update.id,))
            _note(db, update.incident_id, update.run, notice)

    def update_failed(self, update: Update, error: str, notice: str | None = None) -> None:
        """Slack did not take the update; it stays, first in line for its incident."""
        with self._tx() as db:
            db.execute(
                "UPDATE updates SET failures = failures + 1, error = ? WHERE id = ?",
                (error, update.id),
            )
            if notice:
                _note(db, update.incident_id, update.run, notice)

    def update_refused(self, update: Update, error: str, notice: str) -> None:
        """Slack refused the post itself: kept as ``refused``, never sent again."""
        with self._tx() as db:
            db.execute(
                "UPDATE updates SET state = 'refused', failures = failures + 1, error = ? "
                "WHERE id = ?",
                (error, update.id),
            )
            _note(db, update.incident_id, update.run, notice)

    def schedule_updates(self, now: datetime, interval: float) -> list[tuple[str, int]]:
        """A waiting ``update`` run for each open incident whose last run ended
        ``interval`` seconds ago or more and that has no run waiting, queued or running."""
        due = stamp(now - timedelta(seconds=interval))
        with self._tx() as db:
            rows = db.execute(
                "SELECT i.id FROM incidents i WHERE i.status = 'open' AND NOT EXISTS (SELECT 1 "
                "FROM runs r WHERE r.incident_id = i.id AND r.state IN ('waiting', 'queued', "
                "'running')) AND (SELECT MAX(ended_at) FROM runs r WHERE r.incident_id = i.id) "
                "<= ?",
                (due,),
            ).fetchall()
            return [(row[0], self._add_run(db, row[0], "update", None, now)) for row in rows]

    # Reading ---------------------------------------------------------------------------
    def incidents(self, *, status: str | None = None, limit: int = 100) -> list[Incident]:
        """The incidents, newest first, with their runs."""
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        with self._lock:
            rows = self.db.execute(
                f"SELECT * FROM incidents {where} ORDER BY opened_at DESC, rowid DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
            runs = self._runs([row["id"] for row in rows])
        return [_incident(row, runs.get(row["id"], [])) for row in rows]

    def incident(self, incident_id: str) -> Incident:
        with self._lock:
            row = self.db.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row is None:
                raise NotFound(f"no incident {incident_id}")
            return _incident(row, self._runs([incident_id]).get(incident_id, []))

    def _runs(self, ids: list[str]) -> dict[str, list[Run]]:
        found: dict[str, list[Run]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(
                f"SELECT * FROM runs WHERE incident_id IN ({marks}) ORDER BY number", chunk
            ):
                found.setdefault(row["incident_id"], []).append(_run(row))
        return found

    def counts(self) -> dict[str, int]:
        """Incidents by status, and the notifications received (for health and benchmarks)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT status, COUNT(*), SUM(notifications) FROM incidents GROUP BY status"
            ).fetchall()
        counts = {row[0]: int(row[1]) for row in rows}
        counts["notifications"] = sum(int(row[2]) for row in rows)
        return counts


def _note(db: sqlite3.Connection, incident_id: str, number: int, notice: str) -> None:
    db.execute(
        "UPDATE runs SET notice = CASE WHEN COALESCE(notice, '') = '' THEN ? "
        "ELSE notice || char(10) || ? END WHERE incident_id = ? AND number = ?",
        (notice, notice, incident_id, number),
    )


def _alertnames(note: Notification) -> list[str]:
    names = [a.labels.get("alertname", "") for a in note.alerts]
    return [n for n in dict.fromkeys(names) if n]


def _incident(row: sqlite3.Row, runs: list[Run] | None = None) -> Incident:
    return Incident(
        id=row["id"],
        group_key=row["group_key"],
        status=row["status"],
        receiver=row["receiver"],
        opened_at=row["opened_at"],
        updated_at=row["updated_at"],
        closed_at=row["closed_at"],
        notifications=row["notifications"],
        heartbeats=row["heartbeats"],
        fingerprints=json.loads(row["fingerprints"]),
        firing=json.loads(row["firing"]),
        alertnames=json.loads(row["alertnames"]),
        job_ids=json.loads(row["job_ids"]),
        runs=runs or [],
    )


def _run(row: sqlite3.Row) -> Run:
    values = dict(row)
    values["alert"] = json.loads(values["alert"])
    values["job_ids"] = json.loads(values["job_ids"])
    return Run(**values)
