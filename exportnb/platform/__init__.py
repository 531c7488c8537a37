"""The platform: the one boundary through which exportnb reads export state and acts on it.

A platform is found by name::

    platform = get_platform("sandbox")
    failed = platform.list_jobs(JobQuery(status="failed", limit=20))

Built-in names are ``sandbox`` (the reference platform) and ``command`` (an
organisation's own exportctl/featurectl through the JSON contract). Third parties
register more through the ``exportnb.platforms`` entry-point group, or at run time
with :func:`register`.
"""

from __future__ import annotations

import getpass
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any

from exportnb.errors import ConfigError, NotFound
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

__all__ = ["Platform", "available_platforms", "current_actor", "get_platform", "register"]


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


PlatformFactory = Callable[..., Platform]
_registry: dict[str, PlatformFactory] = {}


def register(name: str, factory: PlatformFactory) -> None:
    """Make a platform available under ``name`` (overrides entry points of the same name)."""
    _registry[name] = factory


def _entry_point_factories() -> dict[str, PlatformFactory]:
    return {ep.name: ep.load() for ep in entry_points(group="exportnb.platforms")}


def available_platforms() -> list[str]:
    names = set(_registry) | {ep.name for ep in entry_points(group="exportnb.platforms")}
    return sorted(names | {"sandbox", "command"})


def get_platform(name: str | None = None, **options: Any) -> Platform:
    """The platform registered under ``name``; configuration decides when ``name`` is None."""
    from exportnb.config import Settings

    settings = Settings.load()
    name = name or settings.platform
    if name == settings.platform:
        options = {**settings.platform_options, **options}
    factory = _registry.get(name)
    if factory is None:
        factory = _builtin(name) or _entry_point_factories().get(name)
    if factory is None:
        known = ", ".join(available_platforms())
        raise NotFound(f"unknown platform {name!r} (known: {known})")
    try:
        return factory(**options)
    except TypeError as exc:
        raise ConfigError(f"platform {name!r}: {exc}") from exc


def _builtin(name: str) -> PlatformFactory | None:
    if name == "sandbox":
        from exportnb.sandbox.platform import SandboxPlatform

        return SandboxPlatform
    if name == "command":
        from exportnb.platform.command import CommandPlatform

        return CommandPlatform
    return None
