"""The dispatcher: the loop in ``exportnb serve`` that moves runs along.

Every :data:`TICK` seconds, in a thread of its own, it

1. queues the oldest waiting run of each incident that has none queued or running
   (attempt 1; the message goes to the queue before the store says ``queued``, so a crash
   between the two queues it twice, and the claim makes the second a no-op);
2. follows the queued and running runs through the keys the workers write
   (:mod:`exportnb.service.runs`): a claim makes a run ``running``; ``done`` finishes it
   (and a final run closes its incident); a lease whose worker is gone gives the run a new
   attempt, at most :data:`MAX_ATTEMPTS` in all;
3. adds an ``update`` run to each open incident whose last run ended ``[serve]
   update_interval`` ago (15 minutes by default): the periodic re-run;
4. queues again, every :data:`SWEEP_EVERY` s, a run that has been ``queued`` for
   :data:`LOST_AFTER` s while no worker claimed it and the queue no longer holds its
   message: a worker took the message and died before its claim (see :meth:`recover`);
5. checkpoints the incident store's write-ahead log every :data:`CHECKPOINT_EVERY` s.

When a Slack webhook is configured, a run finishes with its status update in the outbox,
in the same transaction (:meth:`~exportnb.service.incidents.IncidentStore.finish`), and the
dispatcher wakes the delivery loop, which posts it in a thread of its own
(:func:`exportnb.service.outbox.deliver_updates`): a slow or absent Slack delays nothing
here, and loses nothing.

:meth:`Dispatcher.recover` also runs once at start, with no grace: a run the store says is
queued, that no worker claimed and that is not in the queue (lost between the two when the
service died) is queued again. Queuing a message twice is harmless: the claim lets one
delivery of an attempt run and turns every other into a no-op.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from exportnb.core.errors import ExportnbError
from exportnb.service import slack
from exportnb.service.incidents import IncidentStore, Outcome, Run, record_link
from exportnb.service.queue import Queue, RunSpec
from exportnb.service.runs import gone
from exportnb.service.settings import ServeSettings

TICK = 0.2
CHECKPOINT_EVERY = 2.0
SWEEP_EVERY = 5.0
LOST_AFTER = 15.0
MAX_ATTEMPTS = 3
log = logging.getLogger("exportnb.service")


def spec_of(run: Run, attempt: int) -> RunSpec:
    return RunSpec(run.incident_id, run.number, attempt, run.reason, run.alert, run.job_ids)


class Dispatcher:
    def __init__(
        self,
        store: IncidentStore,
        queue: Queue,
        settings: ServeSettings,
        *,
        on_update: Callable[[], None] | None = None,
    ) -> None:
        """``on_update`` is called once a finished run's status update is in the outbox."""
        self.store, self.queue, self.settings = store, queue, settings
        self.on_update = on_update
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._updates_every = max(0.5, min(5.0, settings.update_interval / 4))
        self._next_updates = self._next_checkpoint = 0.0
        self._next_sweep = 0.0

    def start(self) -> None:
        self.recover()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(TICK):
            try:
                self.tick()
            except ExportnbError as exc:
                log.warning("dispatcher: %s", exc.message)
            except Exception:  # the loop must go on; the next tick retries
                log.exception("dispatcher failed; retrying")

    def tick(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        startable = self.store.startable()
        for run in startable:
            self.queue.enqueue(spec_of(run, 1))
        if startable:
            self.store.mark(startable, "queued", now, attempt=1)
        for run in self.store.active():
            self.follow(run, now)
        clock = now.timestamp()
        if clock >= self._next_sweep:
            self._next_sweep = clock + SWEEP_EVERY
            self.recover(now, grace=LOST_AFTER)
        if clock >= self._next_checkpoint:
            self._next_checkpoint = clock + CHECKPOINT_EVERY
            self.store.checkpoint()
        if clock >= self._next_updates:
            self._next_updates = clock + self._updates_every
            for incident, number in self.store.schedule_updates(now, self.settings.update_interval):
                log.info("incident %s: periodic update, run %d", incident, number)

    def follow(self, run: Run, now: datetime) -> None:
        done = self.queue.get(f"done:{run.incident_id}:{run.number}")
        if done is not None:
            self.finish(run, done, now)
            return
        claim = self.queue.claim_of(run.incident_id, run.number, run.attempt)
        if claim is None:
            return
        if run.state == "queued":
            started = datetime.fromisoformat(str(claim.get("at")).replace("Z", "+00:00"))
            self.store.mark([run], "running", started)
        holder = self.queue.get(f"lease:{run.incident_id}:{run.number}") or claim
        if holder.get("attempt", run.attempt) == run.attempt and gone(holder, now.timestamp()):
            self.retry(run, now)

    def retry(self, run: Run, now: datetime) -> None:
        if run.attempt >= MAX_ATTEMPTS:
            error = f"the worker was lost during each of {run.attempt} attempts"
            self.store.finish(run, Outcome("error", error=error), now)
            return
        log.warning(
            "run %s:%d: its worker is gone; attempt %d",
            run.incident_id,
            run.number,
            run.attempt + 1,
        )
        self.queue.enqueue(spec_of(run, run.attempt + 1))
        self.store.mark([run], "queued", now, attempt=run.attempt + 1)

    def finish(self, run: Run, done: dict[str, object], now: datetime) -> None:
        fields = {k: v for k, v in done.items() if k in Outcome.__dataclass_fields__}
        outcome = Outcome(**fields)  # type: ignore[arg-type]
        update = self.slack_update(run, outcome) if self.settings.slack_webhook else None
        self.store.finish(run, outcome, now, update=update)
        self.queue.forget(run.incident_id, run.number)
        log.info(
            "run %s:%d %s %s",
            run.incident_id,
            run.number,
            outcome.state,
            outcome.record_id or outcome.error or "",
        )
        if update is not None and self.on_update is not None:
            self.on_update()

    def slack_update(self, run: Run, outcome: Outcome) -> dict[str, Any]:
        """The run's Slack post, with a link to its record's page when ``public_url`` is set."""
        base, page = self.settings.public_url, outcome.html
        if base and outcome.record_id:
            page = record_link(outcome.record_id, base)  # a link the reader can open
        return slack.message(
            run.incident_id,
            run.number,
            run.reason,
            status_update=outcome.status_update,
            record_id=outcome.record_id,
            record_status=outcome.record_status,
            html=page,
            error=outcome.error,
        )

    def recover(self, now: datetime | None = None, *, grace: float = 0.0) -> None:
        """Queue again the runs queued over ``grace`` seconds ago that the queue lost."""
        now = now or datetime.now(UTC)
        lost = [
            r
            for r in self.store.active()
            if r.state == "queued" and _age(r.queued_at, now) >= grace
        ]
        if not lost:
            return
        waiting = self.queue.queued()
        for run in lost:
            claimed = self.queue.claim_of(run.incident_id, run.number, run.attempt)
            if claimed is None and (run.incident_id, run.number, run.attempt) not in waiting:
                log.warning(
                    "run %s:%d was lost from the queue; queued again", run.incident_id, run.number
                )
                self.queue.enqueue(spec_of(run, run.attempt))


def _age(stamped: str | None, now: datetime) -> float:
    """Seconds since a store timestamp; infinite when there is none."""
    if not stamped:
        return float("inf")
    return (now - datetime.fromisoformat(stamped.replace("Z", "+00:00"))).total_seconds()
