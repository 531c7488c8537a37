"""``GET /metrics`` of ``exportnb serve``, in Prometheus's text format.

A worker is another process, perhaps on another machine, so nothing a run does is counted
in a worker's memory: what the runs did is read when Prometheus scrapes, from the state
the workers share with ``serve`` (the incident store, the queue, the outbox folder and the
outbox reports in the queue). Only what ``serve`` itself does is counted in its memory:
the webhooks it answers and the Slack posts it makes.

==============================================  =========  =================================
metric                                          type       read from
==============================================  =========  =================================
``exportnb_serve_alerts_received_total{status}``   counter    this process: each webhook,
                                                           ``accepted`` (202) or
                                                           ``refused`` (400, 413, 422, 503)
``exportnb_serve_incidents{status}``            gauge      the incident store
``exportnb_serve_runs{state}``                  gauge      the incident store: runs in each
                                                           state (waiting ... error)
``exportnb_serve_runs_finished_total{state}``   counter    the incident store: runs that
                                                           ended succeeded, failed or error
``exportnb_serve_run_duration_seconds{state}``  histogram  the incident store: from the
                                                           worker's claim to the end
``exportnb_serve_queue_depth``                  gauge      the queue: messages no worker
                                                           has taken yet
``exportnb_serve_outbox_depth{kind}``           gauge      ``records``: this host's outbox
                                                           folder, plus what workers on
                                                           other hosts last reported;
                                                           ``slack_updates``: the store
``exportnb_serve_slack_failures_total{reason}`` counter    this process: posts Slack did not
                                                           take after the retries
``exportnb_serve_slack_updates_posted_total``   counter    this process
``exportnb_serve_source_up{source}``            gauge      1 when ``store``, ``queue`` and
                                                           ``outbox`` could be read
==============================================  =========  =================================

The run counts come from the store, so they survive a restart of ``serve``: the counters
from the store never go down. A source that cannot be read leaves its metrics out of that
scrape and says so in ``exportnb_serve_source_up``.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exportnb.archive.store import LocalArchive
from exportnb.core.errors import ExportnbError
from exportnb.service.incidents import FINISHED
from exportnb.service.queue import Queue
from exportnb.service.slack import REASONS, Answer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, which every Prometheus reads (the names here need no more)."""
RUN_STATES = ("waiting", "queued", "running", *FINISHED)
INCIDENT_STATUSES = ("open", "resolving", "resolved")
DURATION_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
"""Seconds: a run costs a kernel start (seconds) and at most ``cell_timeout`` per cell."""
log = logging.getLogger("exportnb.service")
T = TypeVar("T")


class ServiceMetrics:
    """The registry behind ``/metrics``: this process's counters and the shared state."""

    def __init__(self, store: Path, queue: Queue | None, records_outbox: Path) -> None:
        self.registry = CollectorRegistry()
        self.alerts = Counter(
            "exportnb_serve_alerts_received",
            "Alertmanager webhooks received, by whether they were accepted (202) or refused.",
            ["status"],
            registry=self.registry,
        )
        self.slack_failures = Counter(
            "exportnb_serve_slack_failures",
            "Slack posts not accepted after their retries, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.slack_posted = Counter(
            "exportnb_serve_slack_updates_posted",
            "Status updates Slack accepted.",
            registry=self.registry,
        )
        for status in ("accepted", "refused"):
            self.alerts.labels(status)
        for reason in REASONS:
            self.slack_failures.labels(reason)
        self.registry.register(SharedState(store, queue, records_outbox))

    def alert(self, accepted: bool) -> None:
        self.alerts.labels("accepted" if accepted else "refused").inc()

    def slack(self, answer: Answer) -> None:
        """Count one post's answer (the outbox's tally)."""
        if answer.accepted:
            self.slack_posted.inc()
        else:
            self.slack_failures.labels(answer.reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True)
class StoreCounts:
    """What the incident store says at one scrape."""

    incidents: dict[str, int]
    runs: dict[str, int]
    durations: HistogramMetricFamily
    pending_updates: int


class SharedState(Collector):
    """Reads the incident store, the queue and the record outboxes at each scrape."""

    def __init__(self, store: Path, queue: Queue | None, records_outbox: Path) -> None:
        self.store, self.queue, self.records_outbox = store, queue, records_outbox
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "exportnb_serve_source_up",
            "Whether a source of these metrics could be read for this scrape.",
            labels=["source"],
        )
        counts = _attempt("store", up, self.read_store)
        depth = _attempt("queue", up, self.read_queue) if self.queue is not None else None
        records = _attempt("outbox", up, self.read_records)
        if counts is not None:
            yield from _store_families(counts)
        if depth is not None:
            family = GaugeMetricFamily(
                "exportnb_serve_queue_depth", "Run messages in the queue no worker has taken."
            )
            family.add_metric([], depth)
            yield family
        yield _outbox(records, counts.pending_updates if counts is not None else None)
        yield up

    def _connection(self) -> sqlite3.Connection:
        """A read-only connection of our own: a scrape never waits for the store's lock."""
        if self._db is None:
            uri = f"{self.store.absolute().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=5000")
        return self._db

    def read_store(self) -> StoreCounts:
        with self._lock:
            db = self._connection()
            incidents = dict(db.execute("SELECT status, COUNT(*) FROM incidents GROUP BY status"))
            runs = dict(db.execute("SELECT state, COUNT(*) FROM runs GROUP BY state"))
            durations = _durations(db)
            pending = db.execute("SELECT COUNT(*) FROM updates WHERE state = 'pending'")
            return StoreCounts(incidents, runs, durations, int(pending.fetchone()[0]))

    def read_queue(self) -> int:
        assert self.queue is not None
        return self.queue.depth()

    def read_records(self) -> int:
        """This host's outbox folder, and what workers on other hosts last reported."""
        records = len(LocalArchive(self.records_outbox).record_ids())
        if self.queue is not None:
            me = socket.gethostname()
            reports = self.queue.outbox_reports()
            records += sum(count for host, count in reports.items() if host != me)
        return records


def _attempt(source: str, up: GaugeMetricFamily, read: Callable[[], T]) -> T | None:
    """What ``read`` gives, or None when its source cannot be read now (logged)."""
    try:
        value = read()
    except (ExportnbError, sqlite3.Error, OSError) as exc:
        log.warning("metrics: cannot read the %s: %s", source, exc)
        up.add_metric([source], 0)
        return None
    up.add_metric([source], 1)
    return value


def _store_families(counts: StoreCounts) -> Iterator[Metric]:
    yield _by(
        "exportnb_serve_incidents",
        "Incidents by status.",
        "status",
        counts.incidents,
        INCIDENT_STATUSES,
    )
    yield _by("exportnb_serve_runs", "Runs by state, now.", "state", counts.runs, RUN_STATES)
    finished = CounterMetricFamily(
        "exportnb_serve_runs_finished",
        "Runs that ended: succeeded, failed (the notebook failed) or error (no record).",
        labels=["state"],
    )
    for state in FINISHED:
        finished.add_metric([state], counts.runs.get(state, 0))
    yield finished
    yield counts.durations


def _outbox(records: int | None, updates: int | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "exportnb_serve_outbox_depth",
        "What waits in the outboxes: records the archive has not taken (records), "
        "status updates Slack has not taken (slack_updates).",
        labels=["kind"],
    )
    if records is not None:
        family.add_metric(["records"], records)
    if updates is not None:
        family.add_metric(["slack_updates"], updates)
    return family


def _by(
    name: str, documentation: str, label: str, counts: dict[str, int], names: tuple[str, ...]
) -> GaugeMetricFamily:
    """A gauge with one series per name in ``names`` (0 when absent), and any other found."""
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value in dict.fromkeys([*names, *counts]):
        family.add_metric([value], counts.get(value, 0))
    return family


def _durations(db: sqlite3.Connection) -> HistogramMetricFamily:
    """The finished runs' durations, bucketed by SQLite (one row per state)."""
    seconds = "(julianday(ended_at) - julianday(started_at)) * 86400.0"
    buckets = ", ".join(f"SUM(d <= {le!r})" for le in DURATION_BUCKETS)
    rows = db.execute(
        f"SELECT state, COUNT(*), COALESCE(SUM(d), 0), {buckets} FROM (SELECT state, "
        f"{seconds} AS d FROM runs WHERE state IN ('succeeded', 'failed', 'error') AND "
        "started_at IS NOT NULL AND ended_at IS NOT NULL) GROUP BY state"
    ).fetchall()
    found = {row[0]: row for row in rows}
    family = HistogramMetricFamily(
        "exportnb_serve_run_duration_seconds",
        "How long finished runs took, from the worker's claim to the end.",
        labels=["state"],
    )
    for state in FINISHED:
        row = found.get(state) or (state, 0, 0.0, *([0] * len(DURATION_BUCKETS)))
        cumulative = [
            (repr(le), int(n or 0)) for le, n in zip(DURATION_BUCKETS, row[3:], strict=True)
        ]
        family.add_metric([state], [*cumulative, ("+Inf", int(row[1]))], float(row[2]))
    return family
