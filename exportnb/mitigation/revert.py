"""Revert: undo what an incident changed, and only what is still as the incident left it.

:func:`exportnb.mitigation.lifecycle.standing` reads the journal for the changes a revert would
undo (the fallback flag, the bulk pause, chunk sizes; retries are not undone).
:func:`plan_revert` compares each with the platform now: a flag or chunk size someone
changed since is **left** alone and said so, a flag whose TTL has run out is already
gone, and the rest is **restored** to what it was before the incident (a fallback flag
set before the incident comes back with the time it had left). :func:`undo_changes`
carries the plan out, noting each change in the :class:`~exportnb.mitigation.actions.Progress`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exportnb.core.errors import NotFound, PreconditionFailed
from exportnb.core.quantities import format_duration, format_size
from exportnb.mitigation.actions import (
    FLAG_TIME_SLACK,
    Change,
    Draft,
    Progress,
    Undo,
    count,
    flag_state,
)
from exportnb.platform import Platform
from exportnb.platform.model import BULK_PAUSE_FLAG, FALLBACK_FLAG, Flag


@dataclass(frozen=True)
class Standing:
    """A change this incident made and has not undone: ``id`` is ``<seq>:<kind>:<target>``."""

    id: str
    action: str
    change: Change


def plan_revert(platform: Platform, pending: list[Standing]) -> Draft:
    """Undo what ``pending`` changed, where it is still as this incident left it."""
    if not pending:
        raise PreconditionFailed(
            "this incident has changed nothing that a revert undoes "
            "(fallback bucket, bulk pause, chunk sizes)"
        )
    undo = [
        *_undo_flag(platform, pending, FALLBACK_FLAG, "flag"),
        *_undo_flag(platform, pending, BULK_PAUSE_FLAG, "bulk_pause"),
        *_undo_chunks(platform, pending),
    ]
    doing = [u for u in undo if not u.left]
    changes = [Change(u.kind, u.target, u.current, u.restore) for u in doing]
    warnings = [f"{u.target}: left as it is, {u.left}" for u in undo if u.left]
    jobs = [u.target for u in doing if u.kind == "chunk_size"]
    commands = [_undo_command(u) for u in doing]
    doing_now = "; ".join(commands) or "nothing to restore"
    summary = f"Undo {count(len(doing), 'change')} of this incident: {doing_now}."
    return Draft(summary, changes, jobs, [], [], commands, warnings, undo)


def _undo_flag(platform: Platform, pending: list[Standing], key: str, kind: str) -> list[Undo]:
    mine = [d for d in pending if d.change.kind == kind and d.change.target == key]
    if not mine:
        return []
    ids, ours, original = [d.id for d in mine], mine[-1].change.new, mine[0].change.old
    current = platform.get_flag(key)
    if current is None:
        return [Undo(ids, kind, key, None, None, "it has expired or was unset since")]
    if not _same_flag(current, ours):
        left = f"{current.set_by} set it to {current.value} since"
        return [Undo(ids, kind, key, flag_state(current), None, left)]
    return [Undo(ids, kind, key, flag_state(current), _still_live(original))]


def _same_flag(current: Flag, ours: Any) -> bool:
    """Is ``current`` the flag this incident set (same value, set and expiry times)?"""
    if not isinstance(ours, dict) or current.value != ours.get("value"):
        return False
    mine = flag_state(current) or {}
    return all(_same_time(mine.get(name), ours.get(name)) for name in ("set_at", "expires_at"))


def _same_time(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    try:
        gap = datetime.fromisoformat(str(a)) - datetime.fromisoformat(str(b))
    except ValueError:
        return False
    return abs(gap.total_seconds()) <= FLAG_TIME_SLACK


def _still_live(original: Any) -> dict[str, Any] | None:
    """The flag as it was before this incident, if it would still be set now."""
    if not isinstance(original, dict):
        return None
    expires = original.get("expires_at")
    if expires is None:
        return {**original, "ttl": None}
    left = (datetime.fromisoformat(str(expires)) - datetime.now(UTC)).total_seconds()
    return {**original, "ttl": int(left)} if left >= 1 else None


def _undo_chunks(platform: Platform, pending: list[Standing]) -> list[Undo]:
    by_job: dict[str, list[Standing]] = {}
    for standing in pending:
        if standing.change.kind == "chunk_size":
            by_job.setdefault(standing.change.target, []).append(standing)
    undo = []
    for job_id, mine in by_job.items():
        ids, ours, original = [d.id for d in mine], mine[-1].change.new, mine[0].change.old
        try:
            current: Any = platform.get_job(job_id).job.chunk_size
        except NotFound:
            undo.append(Undo(ids, "chunk_size", job_id, None, original, "the job is gone"))
            continue
        left = (
            "" if current == ours else f"its chunk size was changed to {format_size(current)} since"
        )
        undo.append(Undo(ids, "chunk_size", job_id, current, original, left))
    return undo


def _undo_command(undo: Undo) -> str:
    if undo.kind == "chunk_size":
        return f"exportctl update --job {undo.target} --chunk-size {format_size(undo.restore)}"
    if undo.kind == "bulk_pause":
        return "exportctl resume bulk"
    if undo.restore is None:
        return f"featurectl unset {undo.target}"
    ttl = format_duration(undo.restore["ttl"]) if undo.restore["ttl"] else None
    return f"featurectl set {undo.target} {undo.restore['value']}" + (
        f" --ttl {ttl}" if ttl else ""
    )


def undo_changes(
    platform: Platform, undo: list[Undo], *, actor: str, reason: str, progress: Progress
) -> None:
    """Restore each target; the ones ``left`` are noted, not touched."""
    for item in undo:
        if item.left:
            progress.undone.append((item, "left"))
            continue
        _restore(platform, item, actor=actor, reason=reason)
        progress.changes.append(Change(item.kind, item.target, item.current, item.restore))
        progress.undone.append((item, "restored"))


def _restore(platform: Platform, item: Undo, *, actor: str, reason: str) -> None:
    if item.kind == "chunk_size":
        platform.set_chunk_size(item.target, int(item.restore), actor=actor, reason=reason)
    elif item.kind == "bulk_pause":
        platform.resume_bulk(actor=actor, reason=reason)
    elif item.restore is None:
        platform.unset_flag(item.target, actor=actor, reason=reason)
    else:
        platform.set_flag(
            item.target, item.restore["value"], ttl=item.restore["ttl"], actor=actor, reason=reason
        )
