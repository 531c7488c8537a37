"""A worker executes one attempt of one run, once: claim, lease, adopt or execute, report.

1. **Claim.** ``claim:<incident>:<run>:<attempt>`` is written with ``put_if_empty`` before
   anything runs. A second delivery of the same message finds it taken and does nothing.
2. **Lease.** While the attempt runs, ``lease:<incident>:<run>`` says who runs it (host,
   pid and process start time) and until when; it is renewed every
   :data:`RENEW_EVERY` seconds. The dispatcher gives the run a new attempt only when the
   lease says its worker is gone: a dead process on the same host, or an expired lease.
3. **Adopt or execute.** Attempt 2 or later first looks for the record the lost attempt
   may have written before it died: the ``record`` key (written right after the archive
   took the record), else a record of the incident in the archive or the outbox that
   started after the first claim (runs of an incident never overlap, so it can only be
   this run's). Found: that record is the run's, and nothing executes. Otherwise the
   notebook runs (:func:`exportnb.run.runner.run`) with the alert as one JSON value.
4. **Report.** ``done:<incident>:<run>`` holds the
   :class:`~exportnb.service.incidents.Outcome` for the dispatcher.

So a run that was mid-flight when its worker was killed runs again once, and ends with
exactly one record.

:func:`deliver_outbox` is the delivery loop of the outboxes (:mod:`exportnb.service.outbox`):
each worker runs it for the records it kept (and reports how many wait, for ``/metrics``),
and ``exportnb serve`` for the Slack status updates (:class:`OutboxLoop`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exportnb.core.errors import ExportnbError
from exportnb.platform.registry import local_environment
from exportnb.record.model import HTML, Record
from exportnb.run import runner
from exportnb.service.incidents import Outcome, stamp
from exportnb.service.outbox import Delivery, OutboxArchive, deliver
from exportnb.service.queue import Queue, RunSpec

LEASE_SECONDS = 60.0
RENEW_EVERY = 5.0
OPERATOR = "exportnb serve"
log = logging.getLogger("exportnb.service")


def identity() -> dict[str, Any]:
    """Who runs an attempt: host, pid, and the process's start time (against pid reuse)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _started(os.getpid())}


def _started(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def gone(holder: dict[str, Any], now: float | None = None) -> bool:
    """Whether the worker that holds a lease (or a claim) is gone."""
    if holder.get("host") == socket.gethostname():
        pid = int(holder.get("pid", 0))
        started = _started(pid)
        if started is not None or holder.get("start") is not None:
            return started != holder.get("start")
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return float(holder.get("until", 0)) < (now or time.time())


def perform(spec: RunSpec, queue: Queue) -> None:
    """Execute one attempt of a run once (see the module docstring)."""
    me = identity()
    claim = {**me, "at": stamp(datetime.now(UTC)), "until": time.time() + LEASE_SECONDS}
    if not queue.claim(spec, claim):
        log.info("run %s attempt %d is claimed already; skipped", spec.key, spec.attempt)
        return
    lease = Lease(queue, spec, me)
    lease.start()
    try:
        outcome = adopt(spec, queue) or execute(spec, queue)
    except ExportnbError as exc:
        outcome = Outcome("error", error=exc.message)
    except Exception as exc:  # the worker must report, whatever the run did
        log.exception("run %s failed unexpectedly", spec.key)
        outcome = Outcome("error", error=f"{type(exc).__name__}: {exc}")
    finally:
        lease.stop()
    queue.put(f"done:{spec.key}", {**asdict(outcome), "attempt": spec.attempt})
    log.info(
        "run %s attempt %d: %s %s",
        spec.key,
        spec.attempt,
        outcome.state,
        outcome.record_id or outcome.error or "",
    )


class Lease:
    """Renews ``lease:<run>`` in a thread while the attempt runs."""

    def __init__(self, queue: Queue, spec: RunSpec, me: dict[str, Any]) -> None:
        self.queue, self.spec, self.me = queue, spec, me
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{spec.key}", daemon=True)

    def start(self) -> None:
        self._put()
        self._thread.start()

    def _put(self) -> None:
        value = {**self.me, "attempt": self.spec.attempt, "until": time.time() + LEASE_SECONDS}
        self.queue.put(f"lease:{self.spec.key}", value)

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_EVERY):
            try:
                self._put()
            except Exception as exc:  # the queue hiccupped; the next renewal may pass
                log.warning("cannot renew the lease of run %s: %s", self.spec.key, exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def adopt(spec: RunSpec, queue: Queue) -> Outcome | None:
    """The record a lost earlier attempt of this run wrote, if it wrote one."""
    if spec.attempt <= 1:
        return None
    marked = queue.get(f"record:{spec.key}")
    if marked:
        return Outcome(**marked)
    claims = [queue.claim_of(spec.incident_id, spec.number, a) for a in range(1, spec.attempt)]
    times = [datetime.fromisoformat(c["at"]) for c in claims if c and c.get("at")]
    if not times:
        return None
    archive = OutboxArchive()
    later = [s for s in archive.summaries(spec.incident_id) if s.started_at >= min(times)]
    if not later:
        return None
    log.info("run %s: adopting record %s of a lost attempt", spec.key, later[-1].record_id)
    return outcome_of(archive.show(later[-1].record_id), archive)


def execute(spec: RunSpec, queue: Queue) -> Outcome:
    """Run the notebook for this run; the record goes to the archive (or the outbox)."""
    settings = queue.settings
    archive = OutboxArchive()
    found = local_environment()
    env, defaults = found if found else ({}, {})
    defaults = {k: v for k, v in defaults.items() if k != "job_ids"}  # the alert's, or none

    def on_record(record: Record) -> None:
        queue.put(f"record:{spec.key}", asdict(outcome_of(record, archive)))

    record = runner.run(
        settings.notebook,
        incident_id=spec.incident_id,
        job_ids=spec.job_ids,
        alert=spec.alert,
        defaults=defaults,
        env=env,
        archive=archive,
        cell_timeout=settings.cell_timeout,
        operator=OPERATOR,
        hooks=runner.Hooks(on_record=on_record),
    )
    return outcome_of(record, archive)


def outcome_of(record: Record, archive: OutboxArchive) -> Outcome:
    kept = archive.holds(record.record_id)
    return Outcome(
        state=record.status,
        record_id=record.record_id,
        record_status=record.status,
        location=record.location,
        html=record.path(HTML),
        status_update=status_update(record),
        notice=f"kept in the outbox until {archive.url} takes it" if kept else None,
    )


def status_update(record: Record) -> str | None:
    """The notebook's status update (the communication step's ``StatusUpdate``), if any."""
    for result in reversed(record.results):
        body = result.get("result")
        is_update = result.get("step") == "communication" and result.get("type") == "StatusUpdate"
        if is_update and isinstance(body, dict):
            text = body.get("markdown") or body.get("text")
            if isinstance(text, str) and text:
                return text
    return None


Step = Callable[[], Delivery]
"""One outbox's delivery pass (:func:`deliver_records`, or Slack updates in ``serve``)."""


def deliver_records(queue: Queue | None = None) -> Delivery:
    """Deliver the records kept in this host's outbox, and tell ``queue`` how many wait
    (so that ``/metrics`` on ``exportnb serve`` sees them wherever this worker runs)."""
    result = deliver(OutboxArchive())
    if queue is not None:
        queue.report_outbox(len(result.waiting))
    return result


def deliver_outbox(
    every: float,
    stop: threading.Event,
    steps: Mapping[str, Step] | None = None,
    wake: threading.Event | None = None,
) -> None:
    """Deliver each outbox (``steps``, by kind; the records by default) every ``every``
    seconds, and at once whenever ``wake`` is set, until ``stop`` is set."""
    steps = steps or {"records": deliver_records}
    while True:
        if wake is None:
            if stop.wait(every):
                return
        else:
            wake.wait(every)
            wake.clear()
            if stop.is_set():
                return
        for kind, step in steps.items():
            _deliver(kind, step)


def _deliver(kind: str, step: Step) -> None:
    try:
        result = step()
    except (ExportnbError, OSError) as exc:
        log.warning("outbox of %s: delivery failed: %s", kind, exc)
        return
    except Exception:  # the loop must go on; the next pass retries
        log.exception("outbox of %s: delivery failed; retrying", kind)
        return
    if result.error:
        log.warning("outbox: %d %s wait: %s", len(result.waiting), kind, result.error)


class OutboxLoop:
    """:func:`deliver_outbox` in a thread of its own: a pass as it starts (for what waited
    across a restart), every ``every`` seconds, and whenever :meth:`wake` asks for one."""

    def __init__(self, every: float, steps: Mapping[str, Step], name: str = "outbox") -> None:
        self._stop, self._wake = threading.Event(), threading.Event()
        self._thread = threading.Thread(
            target=deliver_outbox,
            args=(every, self._stop, steps, self._wake),
            name=name,
            daemon=True,
        )

    def start(self) -> None:
        self._wake.set()
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, grace: float = 30.0) -> None:
        """Let a pass in progress end (a post Slack took is marked so before the store
        closes), for up to ``grace`` seconds."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(grace)
