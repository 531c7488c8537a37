"""The Platform contract: everything the runbook reads or changes on an export platform.

An implementation answers in the objects of :mod:`exportnb.platform.model`. The sandbox
(:mod:`exportnb.sandbox.platform`) and the command platform
(:mod:`exportnb.platform.command`) are the two that ship; :mod:`exportnb.platform.registry`
finds one by name.
"""

from __future__ import annotations

import getpass
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any

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
