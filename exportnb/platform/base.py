"""The Platform contract: everything the runbook reads or changes on an export platform.

An implementation answers in the objects of :mod:`exportnb.platform.model`. The sandbox
(:mod:`exportnb.sandbox.platform`) and the command platform
(:mod:`exportnb.platform.command`) are the two that ship; :mod:`exportnb.platform.registry`
finds one by name.

Two methods have a default built on the others, for the impact sweep
(:mod:`exportnb.incident.steps.impact`), which verifies every delivery of a time range:
:meth:`Platform.deliveries` lists them (:class:`Delivery`) and :meth:`Platform.manifests`
reads their manifests. The defaults make one ``list_jobs`` call and one ``manifest`` call
per delivery; a platform that can answer in batches overrides them (the sandbox does, in
one SQL query each).
"""

from __future__ import annotations

import getpass
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from exportnb.core.errors import ExportnbError, InvalidInput, NotFound
from exportnb.platform.model import (
    AuditEntry,
    ChunkSizeChange,
    Flag,
    Job,
    JobDetail,
    JobQuery,
    LatencyPercentiles,
    Manifest,
    MinuteCount,
    PlatformInfo,
    RetryResult,
    Verification,
)

DELIVERY_LOOKBACK = timedelta(days=1)
"""How long before a range the default :meth:`Platform.deliveries` looks for jobs created
earlier that delivered within it (``list_jobs`` bounds ``created_at``, not deliveries)."""
DELIVERY_SCAN = 2
"""The default :meth:`Platform.deliveries` lists this many jobs per delivery asked for
(some jobs in a range delivered nothing)."""


@dataclass(frozen=True)
class Delivery:
    """One delivery: an attempt of a job that wrote a manifest, the data a tenant received.

    ``attempt`` is None where the platform lists only each job's latest delivery without
    saying which attempt it was (the default :meth:`Platform.deliveries`); its manifest says.
    """

    job_id: str
    tenant: str
    connector: str
    bucket: str
    attempt: int | None = None
    delivered_at: datetime | None = None
    manifest_key: str | None = None


@dataclass(frozen=True)
class Deliveries:
    """The deliveries of a time range, oldest first, up to a limit.

    ``total`` is how many the range holds; when ``exact`` is False the platform could not
    count past what it listed, and the range holds at least ``total``.
    """

    items: list[Delivery] = field(default_factory=list)
    total: int = 0
    exact: bool = True

    @property
    def complete(self) -> bool:
        """Whether ``items`` is every delivery of the range."""
        return self.exact and len(self.items) >= self.total


ManifestOutcome = Manifest | ExportnbError
"""A delivery's manifest, or why it cannot be read (NotFound, StorageError, ...)."""


def current_actor() -> str:
    """Who is acting: ``$EXPORTNB_OPERATOR``, else the login name."""
    explicit = os.environ.get("EXPORTNB_OPERATOR")
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


class Platform(ABC):
    """Everything the runbook reads or changes on an export platform."""

    name: str = "platform"

    @abstractmethod
    def info(self) -> PlatformInfo: ...

    # Jobs ---------------------------------------------------------------
    @abstractmethod
    def list_jobs(self, query: JobQuery) -> list[Job]: ...

    @abstractmethod
    def get_job(self, job_id: str) -> JobDetail:
        """One job with its attempts, error and logs. Raises NotFound."""

    @abstractmethod
    def manifest(self, job_id: str) -> Manifest:
        """The manifest of the job's latest delivery. Raises NotFound."""

    @abstractmethod
    def verify(self, job_id: str, *, rehash: bool = False) -> Verification:
        """Compare the manifest with stored checksums; ``rehash`` downloads and hashes."""

    def deliveries(self, since: datetime, until: datetime, *, limit: int) -> Deliveries:
        """The deliveries made in ``[since, until)``, oldest first, at most ``limit``.

        The default is one ``list_jobs`` call: jobs created from :data:`DELIVERY_LOOKBACK`
        before ``since`` to ``until`` (newest first, :data:`DELIVERY_SCAN` per delivery
        asked for) that have delivered (``delivered_bucket``) and finished in the range,
        each job's latest delivery once (``attempt`` None). When the listing was full,
        ``exact`` is False. A platform that knows when each attempt delivered overrides it.
        """
        check_limit(limit)
        scan = max(limit * DELIVERY_SCAN, limit + 1)
        query = JobQuery(since=since - DELIVERY_LOOKBACK, until=until, limit=scan)
        jobs = self.list_jobs(query)
        delivered = [j for j in jobs if j.delivered_bucket and since <= _delivered(j) < until]
        found = sorted(map(_latest_delivery, delivered), key=lambda d: (d.delivered_at, d.job_id))
        return Deliveries(found[:limit], len(found), exact=len(jobs) < scan)

    def manifests(self, deliveries: Sequence[Delivery]) -> dict[Delivery, ManifestOutcome]:
        """The manifest of each delivery, or the error that kept it unread.

        The default is one ``manifest`` call per delivery (a job's latest delivery: one of
        another attempt is NotFound). A platform that reads manifests in batches overrides
        it; either way an unreadable manifest is that delivery's error, not the batch's.
        """
        found: dict[Delivery, ManifestOutcome] = {}
        for delivery in deliveries:
            try:
                manifest = self.manifest(delivery.job_id)
            except ExportnbError as exc:
                found[delivery] = exc
                continue
            if delivery.attempt not in (None, manifest.attempt):
                found[delivery] = NotFound(
                    f"job {delivery.job_id!r}: the platform reads only its latest delivery's "
                    f"manifest (attempt {manifest.attempt}), not attempt {delivery.attempt}'s"
                )
                continue
            found[delivery] = manifest
        return found

    # Aggregates ---------------------------------------------------------
    @abstractmethod
    def status_counts(self, since: datetime, until: datetime) -> list[MinuteCount]:
        """Finished attempts per minute and status, aggregated where the data lives."""

    @abstractmethod
    def latency(
        self, since: datetime, until: datetime, *, per_minute: bool = False
    ) -> list[LatencyPercentiles]:
        """p50/p95/p99 of attempt durations: one row for the window, or one per minute."""

    # Actions ------------------------------------------------------------
    @abstractmethod
    def retry(
        self,
        *,
        job_ids: Sequence[str] = (),
        status: str | None = None,
        limit: int = 20,
        concurrency: int = 2,
        actor: str | None = None,
        reason: str = "",
    ) -> RetryResult: ...

    @abstractmethod
    def set_chunk_size(
        self, job_id: str, size: int, *, actor: str | None = None, reason: str = ""
    ) -> ChunkSizeChange: ...

    @abstractmethod
    def pause_bulk(self, *, actor: str | None = None, reason: str = "") -> Flag: ...

    @abstractmethod
    def resume_bulk(self, *, actor: str | None = None, reason: str = "") -> None: ...

    # Flags and audit ----------------------------------------------------
    @abstractmethod
    def set_flag(
        self,
        key: str,
        value: Any,
        *,
        ttl: float | None,
        actor: str | None = None,
        reason: str = "",
    ) -> Flag: ...

    @abstractmethod
    def get_flag(self, key: str) -> Flag | None: ...

    @abstractmethod
    def list_flags(self) -> list[Flag]: ...

    @abstractmethod
    def unset_flag(self, key: str, *, actor: str | None = None, reason: str = "") -> None: ...

    @abstractmethod
    def flag_history(self, key: str) -> list[AuditEntry]: ...

    @abstractmethod
    def audit_log(self, *, since: datetime | None = None, limit: int = 100) -> list[AuditEntry]: ...

    def note(  # noqa: B027 - optional hook
        self,
        *,
        actor: str,
        action: str,
        target: str,
        detail: dict[str, Any],
        reason: str = "",
    ) -> None:
        """Add an entry of exportnb's own to the platform's audit log. Optional.

        exportnb notes every mitigation journal entry here (``action`` such as
        ``mitigation.result``, ``target`` ``<incident>/<action>``, ``detail`` the entry
        with its sha256, its bulky ``detail`` cut to a one-line ``summary``).
        The default does nothing: a platform without a place for such notes still gets
        each change it makes with ``reason="<incident> <action> <key[:12]>"``, which
        links its own audit trail back to the incident's journal.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Optional."""


def check_limit(limit: int) -> int:
    """A limit of deliveries: a whole number of at least 1 (InvalidInput otherwise)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput(f"limit must be a whole number of at least 1, not {limit!r}")
    return limit


def _latest_delivery(job: Job) -> Delivery:
    bucket = job.delivered_bucket or job.bucket
    return Delivery(job.id, job.tenant, job.connector, bucket, None, _delivered(job))


def _delivered(job: Job) -> datetime:
    """When a job delivered, as far as a Job says: when it finished, else when it was made."""
    return job.finished_at or job.created_at
