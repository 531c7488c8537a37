"""The run queue: huey, on SQLite by default or on Redis, and the consumer that drains it.

=====================================  ==================================================
``[serve] queue``                      storage
=====================================  ==================================================
``"sqlite"`` (default)                 ``$EXPORTNB_HOME/service/queue.db``
``"sqlite:///path/queue.db"``          that file
``"redis://host:6379/0"``              Redis; consumers on other machines run
                                       ``exportnb worker`` with the same setting
=====================================  ==================================================

One task, ``exportnb.run``, takes a :class:`RunSpec` (incident, run number, attempt, the
alert as a JSON value, job IDs). Messages and values are JSON, never pickle: nothing read
from the queue can execute code.

Besides the queue, huey's key-value storage (the same SQLite file or Redis database)
holds what makes a run happen once (:mod:`exportnb.service.runs`): per attempt a
``claim`` written with ``put_if_empty`` before the notebook runs; per run a ``lease`` the
running worker renews, the ``record`` it wrote and, once it is over, ``done`` with its
:class:`~exportnb.service.incidents.Outcome`. The dispatcher in ``exportnb serve`` reads
them; workers need nothing but the queue. One more key, ``outbox:records``, holds how many
records each worker's host keeps in its outbox (:meth:`Queue.report_outbox`), so that
``GET /metrics`` on ``exportnb serve`` sees the outboxes of workers on other machines.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huey.serializer import Serializer

from exportnb.core.errors import ConfigError, PreconditionFailed, StorageError
from exportnb.service.settings import ServeSettings, service_dir

if TYPE_CHECKING:
    from huey import Huey

NAME = "exportnb"
TASK = "exportnb.run"
OUTBOX_KEY = "outbox:records"
log = logging.getLogger("exportnb.service")


@dataclass(frozen=True)
class RunSpec:
    """What a worker needs to execute one attempt of one run."""

    incident_id: str
    number: int
    attempt: int
    reason: str
    alert: dict[str, Any]
    job_ids: list[str]

    @property
    def key(self) -> str:
        return f"{self.incident_id}:{self.number}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RunSpec:
        return cls(**doc)


def queue_path(settings: ServeSettings) -> Path:
    if settings.queue.startswith("sqlite:///"):
        return Path(settings.queue.removeprefix("sqlite://"))
    return service_dir() / "queue.db"


Handler = Callable[["RunSpec", "Queue"], None]
"""What a worker does with a run it takes (:func:`exportnb.service.runs.perform`)."""


class Queue:
    """The huey instance with the ``exportnb.run`` task, and the run keys beside it."""

    def __init__(self, settings: ServeSettings, handler: Handler | None = None) -> None:
        self.settings = settings
        self.handler = handler
        self.huey = _huey(settings)
        self.task = self.huey.task(name=TASK)(self._execute)

    def _execute(self, spec: dict[str, Any]) -> None:
        if self.handler is None:
            raise PreconditionFailed("this queue only takes runs: no handler executes them")
        self.handler(RunSpec.from_json(spec), self)

    def enqueue(self, spec: RunSpec) -> None:
        try:
            self.task(spec.to_json())
        except Exception as exc:  # sqlite3 or redis: the queue is unreachable
            raise StorageError(f"cannot queue run {spec.key}: {exc}") from exc

    def queued(self) -> set[tuple[str, int, int]]:
        """``(incident, run, attempt)`` of every message still in the queue."""
        found = set()
        for task in self.huey.pending():
            doc = task.args[0] if task.args else {}
            if isinstance(doc, dict) and {"incident_id", "number", "attempt"} <= set(doc):
                found.add((doc["incident_id"], doc["number"], doc["attempt"]))
        return found

    def depth(self) -> int:
        """Messages waiting in the queue (not yet taken by a worker)."""
        try:
            return int(self.huey.pending_count())
        except Exception as exc:  # sqlite3 or redis: the queue is unreachable
            raise StorageError(f"cannot read the run queue: {exc}") from exc

    # The outboxes of the workers' hosts ----------------------------------------------------
    def report_outbox(self, records: int) -> None:
        """Say how many records this host's outbox keeps. One key for all hosts: two hosts
        writing at once may lose one report, which its host's next pass writes again."""
        try:
            reports = self.get(OUTBOX_KEY) or {}
            reports[socket.gethostname()] = {"records": records, "at": time.time()}
            self.put(OUTBOX_KEY, reports)
        except Exception as exc:  # sqlite3 or redis: the queue is unreachable
            raise StorageError(f"cannot report the outbox to the run queue: {exc}") from exc

    def outbox_reports(self) -> dict[str, int]:
        """Records kept in the outbox, by host, as each host last said."""
        try:
            reports = self.get(OUTBOX_KEY) or {}
        except Exception as exc:  # sqlite3 or redis: the queue is unreachable
            raise StorageError(f"cannot read the outbox reports in the run queue: {exc}") from exc
        return {
            host: int(report.get("records", 0))
            for host, report in reports.items()
            if isinstance(report, dict)
        }

    # The keys of a run ---------------------------------------------------------------------
    def claim(self, spec: RunSpec, value: dict[str, Any]) -> bool:
        """Claim this attempt; False if it was claimed already (it runs elsewhere or ran)."""
        return bool(self.huey.put_if_empty(f"claim:{spec.key}:{spec.attempt}", value))

    def claim_of(self, incident_id: str, number: int, attempt: int) -> dict[str, Any] | None:
        return self.get(f"claim:{incident_id}:{number}:{attempt}")

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.huey.put(key, value)

    def get(self, key: str) -> dict[str, Any] | None:
        value = self.huey.get(key, peek=True)
        return value if isinstance(value, dict) else None

    def forget(self, incident_id: str, number: int) -> None:
        """Drop the keys of a finished run, but its claims: a late duplicate of one of its
        messages finds the attempt claimed, and does not run it again."""
        for kind in ("done", "lease", "record"):
            self.huey.delete(f"{kind}:{incident_id}:{number}")

    # The consumer ------------------------------------------------------------------------
    def consume(self, workers: int, *, poll: float = 1.0) -> None:
        """Drain the queue with ``workers`` threads until SIGTERM or SIGINT (blocks)."""
        consumer = self.huey.create_consumer(
            workers=workers,
            periodic=False,
            initial_delay=0.05,
            backoff=1.5,
            max_delay=poll,
            check_worker_health=True,
        )
        consumer.run()


def _huey(settings: ServeSettings) -> Huey:
    from huey import RedisHuey, SqliteHuey

    serializer = JSONSerializer()
    if settings.queue.startswith(("redis://", "rediss://")):
        try:
            return RedisHuey(NAME, url=settings.queue, results=False, serializer=serializer)
        except Exception as exc:
            raise ConfigError(f"[serve] queue: cannot use {settings.queue}: {exc}") from exc
    path = queue_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(
            NAME, filename=str(path), results=False, serializer=serializer, timeout=30
        )
    except Exception as exc:
        raise StorageError(f"cannot open the run queue {path}: {exc}") from exc


class JSONSerializer(Serializer):
    """huey's messages and values as JSON (never pickle); times as ISO strings."""

    def _serialize(self, data: Any) -> bytes:
        from huey.registry import Message

        if isinstance(data, Message):
            fields = [_encode_time(v) for v in data]
            return json.dumps({"message": fields}).encode()
        return json.dumps({"value": data}).encode()

    def _deserialize(self, data: bytes) -> Any:
        from huey.registry import Message

        doc = json.loads(data)
        if "message" in doc:
            fields = [_decode_time(v) for v in doc["message"]]
            args = fields[Message._fields.index("args")]
            fields[Message._fields.index("args")] = tuple(args or ())
            return Message(*fields)
        return doc["value"]


def _encode_time(value: Any) -> Any:
    return {"$time": value.isoformat()} if isinstance(value, datetime) else value


def _decode_time(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$time"}:
        return datetime.fromisoformat(value["$time"])
    return value
