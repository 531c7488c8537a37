"""The mitigations one by one: their parameters, what each would change, and how it is done.

For each action of :data:`exportnb.mitigation.policy.MITIGATIONS` there is a normalizer (parameters
as given -> canonical parameters, :class:`~exportnb.core.errors.InvalidInput` when they are
wrong), a planner (reads the platform: what would change, how many jobs, tenants and
buckets, the runbook commands; PreconditionFailed/NotFound when it cannot run) and an
applier (calls the platform, noting each change it made in a :class:`Progress`).
:mod:`exportnb.mitigation.lifecycle` puts them together with the journal and the policy.

Canonical parameters make the idempotency key: sizes in bytes, TTLs in seconds, job IDs
sorted and unique, defaults filled in, and ``round`` (1 unless an engineer deliberately
does the same thing again).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from exportnb.core import codec
from exportnb.core.errors import ExportnbError, InvalidInput, NotFound, PreconditionFailed
from exportnb.core.quantities import format_duration, format_size, parse_size, parse_ttl
from exportnb.incident.steps import assessment
from exportnb.mitigation.policy import check_action
from exportnb.platform import Platform
from exportnb.platform.model import BULK_PAUSE_FLAG, FALLBACK_FLAG, STATUSES, Flag, Job, JobQuery

if TYPE_CHECKING:
    from exportnb.core.config import Settings

DEFAULTS: dict[str, dict[str, Any]] = {
    "retry": {"concurrency": 2, "limit": 20},
    "fallback-bucket": {"ttl": "30m"},
    "chunk-size": {"chunk_size": "50MB", "force": False},
}
PARAMETERS: dict[str, set[str]] = {
    "pause-bulk": {"round"},
    "resume-bulk": {"round"},
    "revert": {"changes"},
    "retry": {"job_ids", "job_id", "status", "limit", "concurrency", "round"},
    "fallback-bucket": {"bucket", "ttl", "round"},
    "chunk-size": {"job_ids", "job_id", "chunk_size", "force", "round"},
}
REVERTIBLE: tuple[str, ...] = ("fallback-bucket", "pause-bulk", "chunk-size")
SCAN = 1000
MAX_ROUND = 1000
FLAG_TIME_SLACK = 0.001  # seconds: times may lose precision on the way through JSON


@dataclass(frozen=True)
class Change:
    """One thing an action changes: ``kind`` flag|bulk_pause|chunk_size|retry, from old to new."""

    kind: str
    target: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Undo:
    """How a revert undoes this incident's changes of one target (``left``: why not)."""

    changes: list[str]  # IDs of the changes undone: "<result seq>:<kind>:<target>"
    kind: str
    target: str
    current: Any
    restore: Any
    left: str = ""


@dataclass(frozen=True)
class Draft:
    """What a planner found on the platform."""

    summary: str
    changes: list[Change]
    jobs: list[str]
    tenants: list[str]
    buckets: list[str]
    commands: list[str]
    warnings: list[str] = field(default_factory=list)
    undo: list[Undo] = field(default_factory=list)


@dataclass
class Progress:
    """What an applier has done so far (kept when it fails half-way)."""

    changes: list[Change] = field(default_factory=list)
    undone: list[tuple[Undo, str]] = field(default_factory=list)  # (undo, restored|left)
    response: Any = None


# Parameters -----------------------------------------------------------------------
def normalize(action: str, params: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """The canonical parameters of ``action``; InvalidInput when they are wrong."""
    check_action(action)
    unknown = sorted(set(params) - PARAMETERS[action])
    if unknown:
        known = ", ".join(sorted(PARAMETERS[action] - {"job_id"})) or "none"
        raise InvalidInput(f"{action} takes no parameter {', '.join(unknown)} (takes: {known})")
    given = {**DEFAULTS.get(action, {}), **{k: v for k, v in params.items() if v is not None}}
    canonical = NORMALIZERS[action](given, settings)
    if action != "revert":
        canonical["round"] = whole(given.get("round", 1), "round", 1, MAX_ROUND)
    return canonical


def whole(value: Any, name: str, low: int, high: int, hint: str = "") -> int:
    """A whole number from ``low`` to ``high`` (digit strings welcome)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(
            f"{name} must be a whole number from {low} to {high}, not {value!r}{hint}"
        )
    return value


def job_ids(given: Mapping[str, Any]) -> list[str]:
    ids = given.get("job_ids") or []
    if isinstance(ids, str):
        ids = [ids]
    if given.get("job_id"):
        ids = [*ids, given["job_id"]]
    if not all(isinstance(j, str) and j.strip() for j in ids):
        raise InvalidInput(f"job IDs must be non-empty strings, not {ids!r}")
    return sorted({j.strip() for j in ids})


def _retry_params(given: dict[str, Any], settings: Settings) -> dict[str, Any]:
    cap = settings.max_retry_concurrency
    concurrency = whole(
        given["concurrency"], "concurrency", 1, cap, " ([limits] max_retry_concurrency caps it)"
    )
    ids, status = job_ids(given), given.get("status")
    if ids and status:
        raise InvalidInput("retry either named jobs (job_ids) or jobs of a status, not both")
    if ids:
        return {"job_ids": ids, "concurrency": concurrency}
    status = status or "failed"
    if status not in STATUSES or status in ("queued", "running"):
        raise InvalidInput(
            f"retry jobs that finished (failed, cancelled, succeeded), not {status!r}"
        )
    limit = whole(given["limit"], "limit", 1, SCAN)
    return {"status": status, "limit": limit, "concurrency": concurrency}


def _fallback_params(given: dict[str, Any], settings: Settings) -> dict[str, Any]:
    bucket = given.get("bucket")
    if not isinstance(bucket, str) or not bucket.strip():
        raise InvalidInput("fallback-bucket needs a bucket name (--bucket)")
    ttl = parse_ttl(given["ttl"])
    if ttl > settings.max_flag_ttl:
        raise InvalidInput(
            f"TTL of {format_duration(ttl)} is above the configured maximum of "
            f"{format_duration(settings.max_flag_ttl)} ([limits] max_flag_ttl)"
        )
    return {"bucket": bucket.strip(), "ttl": int(ttl) if ttl == int(ttl) else ttl}


def _chunk_params(given: dict[str, Any], settings: Settings) -> dict[str, Any]:
    ids = job_ids(given)
    if not ids:
        raise InvalidInput("chunk-size needs the job(s) to change (--job)")
    if not isinstance(given["force"], bool):
        raise InvalidInput(f"force is true or false, not {given['force']!r}")
    return {"job_ids": ids, "chunk_size": parse_size(given["chunk_size"]), "force": given["force"]}


def _no_params(given: dict[str, Any], settings: Settings) -> dict[str, Any]:
    return {}


def _revert_params(given: dict[str, Any], settings: Settings) -> dict[str, Any]:
    changes = given.get("changes", [])
    if not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
        raise InvalidInput("revert takes no parameters of its own")
    return {"changes": sorted(set(changes))}


NORMALIZERS = {
    "retry": _retry_params,
    "fallback-bucket": _fallback_params,
    "chunk-size": _chunk_params,
    "pause-bulk": _no_params,
    "resume-bulk": _no_params,
    "revert": _revert_params,
}


# Reading the platform ---------------------------------------------------------------
def _jobs(platform: Platform, ids: list[str]) -> list[Job]:
    found, missing = [], []
    for job_id in ids:
        try:
            found.append(platform.get_job(job_id).job)
        except NotFound:
            missing.append(job_id)
    if missing:
        raise NotFound(f"job(s) not found: {', '.join(missing)}; nothing was changed")
    return found


def _reach(jobs: list[Job]) -> tuple[list[str], list[str], list[str]]:
    """Job IDs, tenants and buckets of ``jobs``."""
    return (
        [j.id for j in jobs],
        sorted({j.tenant for j in jobs}),
        sorted({j.bucket for j in jobs}),
    )


def _queued(platform: Platform, kind: str | None = None) -> list[Job]:
    jobs = platform.list_jobs(JobQuery(status="queued", limit=SCAN))
    return [j for j in jobs if kind is None or j.kind == kind]


def flag_state(flag: Flag | None) -> dict[str, Any] | None:
    return codec.encode(flag) if flag is not None else None


def count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


# Planners ---------------------------------------------------------------------------
def plan_retry(platform: Platform, params: dict[str, Any], settings: Settings) -> Draft:
    if "job_ids" in params:
        jobs = _jobs(platform, params["job_ids"])
    else:
        jobs = platform.list_jobs(JobQuery(status=params["status"], limit=params["limit"]))
        if not jobs:
            raise PreconditionFailed(f"no {params['status']} jobs to retry; nothing was changed")
    ids, tenants, buckets = _reach(jobs)
    changes = [
        Change("retry", j.id, {"status": j.status, "attempts": j.attempts}, "queued") for j in jobs
    ]
    busy = [f"{j.id} is {j.status}" for j in jobs if j.status in ("queued", "running")]
    warnings = [f"{b}: it is skipped unless its heartbeat is stale" for b in busy]
    cap, concurrency = settings.max_retry_concurrency, params["concurrency"]
    summary = (
        f"Queue {count(len(jobs), 'job')} again ({count(len(tenants), 'tenant')}, "
        f"{count(len(buckets), 'bucket')}); at most {concurrency} run at once "
        f"(cap {cap}). Watch for repeat errors."
    )
    command = assessment.command("retry", params)
    return Draft(summary, changes, ids, tenants, buckets, [command], warnings)


def plan_fallback(platform: Platform, params: dict[str, Any], settings: Settings) -> Draft:
    bucket, ttl = params["bucket"], params["ttl"]
    info = platform.info()
    if bucket not in info.buckets:
        raise PreconditionFailed(
            f"bucket {bucket!r} does not exist (buckets: "
            f"{', '.join(info.buckets)}); nothing was changed"
        )
    warnings = []
    if bucket == info.export_bucket:
        warnings.append(f"{bucket} is the export bucket itself: redirecting to it avoids nothing")
    elif bucket not in info.fallback_buckets:
        warnings.append(
            f"{bucket} is not one of the platform's fallback buckets "
            f"({', '.join(info.fallback_buckets) or 'none'})"
        )
    current = platform.get_flag(FALLBACK_FLAG)
    if current is not None:
        warnings.append(
            f"{FALLBACK_FLAG} is {current.value} now (set by {current.set_by}); "
            "this replaces it, and revert puts it back while it lasts"
        )
    queued = [j for j in _queued(platform) if j.bucket != bucket]
    ids, tenants, sources = _reach(queued)
    expires = datetime.now(UTC) + timedelta(seconds=ttl)
    new = {"value": bucket, "ttl": ttl, "expires_at": codec.format_time(expires)}
    summary = (
        f"Set {FALLBACK_FLAG} = {bucket} for {format_duration(ttl)} (until "
        f"{codec.format_time(expires.replace(microsecond=0))}): new exports and "
        f"retries land in {bucket}; {count(len(ids), 'queued job')} of "
        f"{count(len(tenants), 'tenant')} would go there."
    )
    command = assessment.command("fallback-bucket", {"bucket": bucket, "ttl": format_duration(ttl)})
    changes = [Change("flag", FALLBACK_FLAG, flag_state(current), new)]
    buckets = sorted({*sources, info.export_bucket, bucket})
    return Draft(summary, changes, ids, tenants, buckets, [command], warnings)


def plan_chunk_size(platform: Platform, params: dict[str, Any], settings: Settings) -> Draft:
    size = params["chunk_size"]
    jobs = _jobs(platform, params["job_ids"])
    raised = [j for j in jobs if j.chunk_size < size]
    if raised and not params["force"]:
        shown = ", ".join(f"{j.id} ({format_size(j.chunk_size)})" for j in raised)
        raise PreconditionFailed(
            f"the runbook reduces chunk sizes, and {shown} would grow to "
            f"{format_size(size)}; force it (--force) to raise them, "
            "or leave those jobs out. Nothing was changed"
        )
    changing = [j for j in jobs if j.chunk_size != size]
    if not changing:
        raise PreconditionFailed(
            f"the chunk size of {', '.join(params['job_ids'])} is "
            f"{format_size(size)} already; nothing to change"
        )
    warnings = [
        f"{j.id} is at {format_size(size)} already: left as it is"
        for j in jobs
        if j not in changing
    ]
    warnings += [
        f"{j.id} is running: the new size applies from its next attempt"
        for j in changing
        if j.status == "running"
    ]
    ids, tenants, buckets = _reach(changing)
    changes = [Change("chunk_size", j.id, j.chunk_size, size) for j in changing]
    moves = ", ".join(
        f"{j.id} {format_size(j.chunk_size)} -> {format_size(size)}" for j in changing
    )
    summary = (
        f"Change the chunk size of {count(len(ids), 'job')} ({count(len(tenants), 'tenant')}"
        f", {count(len(buckets), 'bucket')}) for their next attempt: {moves}."
    )
    command = assessment.command("chunk-size", {"job_ids": ids, "chunk_size": size})
    return Draft(summary, changes, ids, tenants, buckets, command.splitlines(), warnings)


def plan_pause(platform: Platform, params: dict[str, Any], settings: Settings) -> Draft:
    return _plan_bulk(platform, pause=True)


def plan_resume(platform: Platform, params: dict[str, Any], settings: Settings) -> Draft:
    return _plan_bulk(platform, pause=False)


def _plan_bulk(platform: Platform, *, pause: bool) -> Draft:
    flag = platform.get_flag(BULK_PAUSE_FLAG)
    paused = flag is not None and bool(flag.value)
    if pause and flag is not None and paused:
        when = codec.format_time(flag.set_at)
        raise PreconditionFailed(
            f"bulk exports are already paused (by {flag.set_by} at {when}); nothing to do"
        )
    if not pause and not paused:
        raise PreconditionFailed("bulk exports are not paused; nothing to do")
    ids, tenants, buckets = _reach(_queued(platform, "bulk"))
    queued = f"{count(len(ids), 'queued bulk export')} of {count(len(tenants), 'tenant')}"
    summary = (
        f"Pause new bulk exports: {queued} wait in the queue; running ones finish."
        if pause
        else f"Resume bulk exports: {queued} may start."
    )
    changes = [Change("bulk_pause", BULK_PAUSE_FLAG, flag_state(flag), True if pause else None)]
    command = f"exportctl {'pause' if pause else 'resume'} bulk"
    return Draft(summary, changes, ids, tenants, buckets, [command])


PLANNERS = {
    "retry": plan_retry,
    "fallback-bucket": plan_fallback,
    "chunk-size": plan_chunk_size,
    "pause-bulk": plan_pause,
    "resume-bulk": plan_resume,
}


# Appliers ---------------------------------------------------------------------------
def apply_change(
    platform: Platform,
    action: str,
    draft: Draft,
    params: dict[str, Any],
    *,
    actor: str,
    reason: str,
    progress: Progress,
) -> None:
    """Carry out ``draft``; every change made is in ``progress`` even if this raises."""
    if action == "revert":
        from exportnb.mitigation.revert import undo_changes

        undo_changes(platform, draft.undo, actor=actor, reason=reason, progress=progress)
    else:
        APPLIERS[action](platform, draft, params, {"actor": actor, "reason": reason}, progress)


def _retry(
    platform: Platform, draft: Draft, params: dict[str, Any], by: dict[str, str], progress: Progress
) -> None:
    before = {c.target: c.old for c in draft.changes}
    result = platform.retry(
        job_ids=draft.jobs,
        concurrency=params["concurrency"],
        actor=by["actor"],
        reason=by["reason"],
    )
    progress.response = result
    progress.changes += [Change("retry", j, before.get(j), "queued") for j in result.queued]


def _fallback(
    platform: Platform, draft: Draft, params: dict[str, Any], by: dict[str, str], progress: Progress
) -> None:
    flag = platform.set_flag(FALLBACK_FLAG, params["bucket"], ttl=params["ttl"], **by)
    progress.response = flag
    progress.changes.append(Change("flag", FALLBACK_FLAG, draft.changes[0].old, flag_state(flag)))


def _chunk_sizes(
    platform: Platform, draft: Draft, params: dict[str, Any], by: dict[str, str], progress: Progress
) -> None:
    progress.response = []
    for change in draft.changes:
        done = platform.set_chunk_size(change.target, params["chunk_size"], **by)
        progress.response.append(done)
        progress.changes.append(Change("chunk_size", done.job_id, done.old, done.new))


def _pause(
    platform: Platform, draft: Draft, params: dict[str, Any], by: dict[str, str], progress: Progress
) -> None:
    flag = platform.pause_bulk(**by)
    progress.response = flag
    progress.changes.append(Change("bulk_pause", BULK_PAUSE_FLAG, None, flag_state(flag)))


def _resume(
    platform: Platform, draft: Draft, params: dict[str, Any], by: dict[str, str], progress: Progress
) -> None:
    platform.resume_bulk(**by)
    progress.changes.append(Change("bulk_pause", BULK_PAUSE_FLAG, draft.changes[0].old, None))


APPLIERS = {
    "retry": _retry,
    "fallback-bucket": _fallback,
    "chunk-size": _chunk_sizes,
    "pause-bulk": _pause,
    "resume-bulk": _resume,
}


def failure(exc: ExportnbError) -> dict[str, Any]:
    return {"error": exc.message, "error_type": type(exc).__name__, "exit_code": exc.exit_code}
