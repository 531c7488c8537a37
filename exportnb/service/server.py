"""``exportnb serve`` and ``exportnb worker``: the processes, and how they fit together.

``serve`` is one process with four parts, plus a child:

- uvicorn serving the app (:mod:`exportnb.service.app`) on loopback by default, with
  ``/metrics`` (:mod:`exportnb.service.metrics`);
- the dispatcher thread (:mod:`exportnb.service.dispatch`);
- the delivery loop of the Slack outbox (:class:`~exportnb.service.runs.OutboxLoop`), when a
  webhook is configured: it posts each finished run's status update as soon as the
  dispatcher has put it in the outbox, and again every ``[serve] outbox_interval`` what
  Slack did not take (:func:`~exportnb.service.outbox.deliver_updates`);
- the embedded consumer: ``exportnb worker --workers N`` started as a child process, niced,
  and killed with its parent (``PR_SET_PDEATHSIG`` on Linux, and a watch on the parent
  pid elsewhere). Notebooks never compete with the acknowledgements for the interpreter.
  ``--workers 0`` leaves consuming to ``exportnb worker`` processes elsewhere (Redis).

``worker`` drains the queue with N threads, and delivers the record outbox every ``[serve]
outbox_interval`` with the same loop. On SIGTERM or SIGINT, ``serve`` stops taking
requests, asks the consumer to finish its runs (:data:`STOP_GRACE` seconds), then kills it,
and lets a Slack post in progress end; a run cut short runs again after the restart, and
an update still in the outbox is posted after it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from exportnb.core.errors import PreconditionFailed
from exportnb.service import slack
from exportnb.service.app import create_app
from exportnb.service.auth import Credentials
from exportnb.service.dispatch import Dispatcher
from exportnb.service.incidents import IncidentStore
from exportnb.service.metrics import ServiceMetrics
from exportnb.service.outbox import deliver_updates, outbox_dir
from exportnb.service.queue import Queue
from exportnb.service.runs import OutboxLoop, deliver_records, perform
from exportnb.service.settings import ServeSettings, service_dir

STOP_GRACE = 30.0
NICENESS = 5
PR_SET_PDEATHSIG = 1
log = logging.getLogger("exportnb.service")


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 9788,
    workers: int | None = None,
    insecure: bool = False,
    settings: ServeSettings | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT. ConfigError before anything starts when there are no
    credentials (unless ``insecure``) or the settings are wrong."""
    import uvicorn

    settings = settings or ServeSettings.load()
    credentials = Credentials.of(settings, insecure=insecure)
    check_address(host, port)
    if credentials.insecure:
        log.warning("serving WITHOUT authentication (--insecure-no-auth)")
    store = IncidentStore(service_dir() / "incidents.db")
    queue = Queue(settings)
    metrics = ServiceMetrics(store.path, queue, outbox_dir())
    updates = slack_outbox(store, settings, metrics)
    dispatcher = Dispatcher(store, queue, settings, on_update=updates.wake if updates else None)
    count = settings.workers if workers is None else workers

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        dispatcher.start()
        if updates:
            updates.start()
        consumer = Consumer.start(count) if count else None
        log.info(
            "receiving on http://%s:%d/alerts/alertmanager; %s",
            host,
            port,
            f"{count} worker(s)" if count else "no embedded worker",
        )
        try:
            yield
        finally:
            if consumer:
                consumer.stop()
            dispatcher.stop()
            if updates:
                updates.stop()

    app = create_app(store, settings, credentials, metrics=metrics, lifespan=lifespan)
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    finally:
        store.close()


def slack_outbox(
    store: IncidentStore, settings: ServeSettings, metrics: ServiceMetrics
) -> OutboxLoop | None:
    """The delivery loop of the Slack outbox; None without a webhook (what waits, waits)."""
    if not settings.slack_webhook:
        waiting = len(store.pending_updates())
        if waiting:
            log.warning(
                "%d status update(s) wait in the outbox, but no Slack webhook is set", waiting
            )
        return None
    webhook = slack.client(settings.slack_webhook, slack.RetryPolicy.of(settings))
    post = partial(slack.send, webhook)
    steps = {"Slack updates": partial(deliver_updates, store, post, metrics.slack)}
    return OutboxLoop(settings.outbox_interval, steps, name="slack-outbox")


def check_address(host: str, port: int) -> None:
    """PreconditionFailed now, before anything starts, when ``host:port`` is taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as exc:
        raise PreconditionFailed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


class Consumer:
    """The embedded consumer: ``exportnb worker`` as a child that dies with this process."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    @classmethod
    def start(cls, workers: int) -> Consumer:
        args = [
            sys.executable,
            "-m",
            "exportnb.cli",
            "worker",
            "--workers",
            str(workers),
            "--parent",
            str(os.getpid()),
        ]
        prctl = _prctl()  # looked up here: the child must not import between fork and exec

        def as_child() -> None:
            """In the child: yield the CPU to the receiver, and die with it (Linux)."""
            with contextlib.suppress(OSError):
                os.nice(NICENESS)
            if prctl is not None:
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, preexec_fn=as_child)
        return cls(process)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Let the runs in progress finish (up to ``grace`` seconds), then kill."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _prctl() -> Callable[..., int] | None:
    try:
        import ctypes

        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):  # not Linux: the worker watches its parent instead
        return None


def work(*, workers: int = 2, parent: int | None = None) -> None:
    """Drain the queue until SIGTERM or SIGINT, delivering the outbox meanwhile."""
    settings = ServeSettings.load()
    queue = Queue(settings, handler=perform)
    records = OutboxLoop(settings.outbox_interval, {"records": partial(deliver_records, queue)})
    records.start()
    if parent is not None:
        threading.Thread(
            target=_watch, args=(parent, _exit_now), name="parent", daemon=True
        ).start()
    try:
        queue.consume(max(workers, 1))
    finally:
        records.stop(grace=5.0)


def _watch(parent: int, on_gone: Callable[[], None], every: float = 1.0) -> None:
    """Call ``on_gone`` once ``parent`` is no longer this process's parent."""
    while os.getppid() == parent:
        time.sleep(every)
    on_gone()


def _exit_now() -> None:
    log.error("exportnb serve is gone; the worker stops (its runs resume after a restart)")
    os._exit(1)
