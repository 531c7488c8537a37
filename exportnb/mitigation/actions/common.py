"""What several built-in mitigations share: the job IDs parameter, reading jobs and what
they reach (jobs, tenants, buckets), a flag's state as the journal keeps it, counting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exportnb.core import codec
from exportnb.core.errors import InvalidInput, NotFound
from exportnb.mitigation.registry import Option, Param
from exportnb.platform import Platform
from exportnb.platform.model import Flag, Job, JobQuery

SCAN = 1000  # at most this many jobs are read for one plan


def job_ids_param(hint: str) -> Param:
    """The job IDs an action names (``--job ID``, repeatable; ``job_id`` for one)."""
    return Param(
        "job_ids",
        "Job IDs",
        "ids",
        help=hint,
        aliases=("job_id",),
        cli=Option(flag="--job", help="A job ID; repeat for more jobs.", metavar="ID"),
    )


def job_ids(given: Mapping[str, Any]) -> list[str]:
    """The job IDs given (``job_ids`` and ``job_id``), sorted and unique."""
    ids = given.get("job_ids") or []
    if isinstance(ids, str):
        ids = [ids]
    if given.get("job_id"):
        ids = [*ids, given["job_id"]]
    if not all(isinstance(j, str) and j.strip() for j in ids):
        raise InvalidInput(f"job IDs must be non-empty strings, not {ids!r}")
    return sorted({j.strip() for j in ids})


def jobs_named(platform: Platform, ids: list[str]) -> list[Job]:
    """The jobs of ``ids``; NotFound naming every one that does not exist."""
    found, missing = [], []
    for job_id in ids:
        try:
            found.append(platform.get_job(job_id).job)
        except NotFound:
            missing.append(job_id)
    if missing:
        raise NotFound(f"job(s) not found: {', '.join(missing)}; nothing was changed")
    return found


def reach(jobs: list[Job]) -> tuple[list[str], list[str], list[str]]:
    """Job IDs, tenants and buckets of ``jobs``."""
    return (
        [j.id for j in jobs],
        sorted({j.tenant for j in jobs}),
        sorted({j.bucket for j in jobs}),
    )


def queued(platform: Platform, kind: str | None = None) -> list[Job]:
    """The queued jobs (of one kind, bulk say)."""
    jobs = platform.list_jobs(JobQuery(status="queued", limit=SCAN))
    return [j for j in jobs if kind is None or j.kind == kind]


def flag_state(flag: Flag | None) -> dict[str, Any] | None:
    """A flag as a change records it (None: not set)."""
    return codec.encode(flag) if flag is not None else None


def count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")
