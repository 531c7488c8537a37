"""Revert: undo what an incident changed, and only what is still as the incident left it.

A revert's parameters are not given: they are the incident's standing changes
(:func:`exportnb.mitigation.standing.standing`: the fallback flag, the bulk pause, chunk
sizes; retries are not undone), named by ID, so that after new changes a new revert is a
new key. The plan compares each with the platform now: a flag or chunk size someone
changed since is **left** alone and said so, a flag whose TTL has run out is already
gone, and the rest is **restored** to what it was before the incident (a fallback flag set
before the incident comes back with the time it had left). Applying notes each undone or
left change in the :class:`~exportnb.mitigation.model.Progress`, and the lifecycle
journals each as a ``revert`` entry, so that nothing is undone twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from exportnb.core.config import Settings
from exportnb.core.errors import InvalidInput, NotFound, PreconditionFailed
from exportnb.core.quantities import format_duration, format_size
from exportnb.mitigation.actions.common import count, flag_state
from exportnb.mitigation.journal import Journal
from exportnb.mitigation.model import By, Change, Context, Draft, Progress, Standing, Undo
from exportnb.mitigation.registry import Mitigation
from exportnb.mitigation.standing import standing
from exportnb.platform import Platform
from exportnb.platform.model import Flag

FLAG_TIME_SLACK = 0.001  # seconds: times may lose precision on the way through JSON
FLAG_KINDS = ("flag", "bulk_pause")


class Revert(Mitigation):
    """``revert``: the incident's changes undone, where nobody changed them since."""

    name = "revert"
    label = "Revert this incident's changes"
    help = (
        "Undo what this incident changed: fallback flag, bulk pause, chunk sizes.\n\n"
        "Changes made since by other people or incidents are left as they are."
    )
    undoes = True
    order = 60

    def params_for(self, journal: Journal, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """The IDs of the changes to undo: the journal's standing changes."""
        if given:
            raise InvalidInput("revert takes no parameters: it undoes what the journal shows")
        return {"changes": [s.id for s in standing(journal)]}

    def normalize(self, given: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
        changes = given.get("changes", [])
        wrong = set(given) - {"changes"}
        if wrong or not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
            raise InvalidInput("revert takes no parameters of its own")
        return {"changes": sorted(set(changes))}

    def plan(self, context: Context, params: dict[str, Any]) -> Draft:
        pending = standing(context.journal)
        if sorted(s.id for s in pending) != params["changes"]:
            raise PreconditionFailed(
                "this incident's changes are not what the revert plan "
                "showed any more; plan the revert again"
            )
        return plan_revert(context.platform, pending)

    def apply(
        self, context: Context, draft: Draft, params: dict[str, Any], by: By, progress: Progress
    ) -> None:
        """Restore each target; the ones ``left`` are noted, not touched."""
        for item in draft.undo:
            if item.left:
                progress.undone.append((item, "left"))
                continue
            _restore(context.platform, item, by)
            progress.changes.append(Change(item.kind, item.target, item.current, item.restore))
            progress.undone.append((item, "restored"))

    def command(self, params: Mapping[str, Any]) -> str:
        """Nothing fixed: the commands depend on the platform now (see the plan's)."""
        return ""


def plan_revert(platform: Platform, pending: list[Standing]) -> Draft:
    """Undo what ``pending`` changed, where it is still as this incident left it."""
    if not pending:
        raise PreconditionFailed(
            "this incident has changed nothing that a revert undoes "
            "(fallback bucket, bulk pause, chunk sizes)"
        )
    undo = [
        *(u for kind in FLAG_KINDS for u in _undo_flags(platform, pending, kind)),
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


def _undo_flags(platform: Platform, pending: list[Standing], kind: str) -> list[Undo]:
    """One undo per flag this incident changed (a ``flag`` or the ``bulk_pause``)."""
    keys = dict.fromkeys(d.change.target for d in pending if d.change.kind == kind)
    return [_undo_flag(platform, pending, key, kind) for key in keys]


def _undo_flag(platform: Platform, pending: list[Standing], key: str, kind: str) -> Undo:
    mine = [d for d in pending if d.change.kind == kind and d.change.target == key]
    ids, ours, original = [d.id for d in mine], mine[-1].change.new, mine[0].change.old
    current = platform.get_flag(key)
    if current is None:
        return Undo(ids, kind, key, None, None, "it has expired or was unset since")
    if not _same_flag(current, ours):
        left = f"{current.set_by} set it to {current.value} since"
        return Undo(ids, kind, key, flag_state(current), None, left)
    return Undo(ids, kind, key, flag_state(current), _still_live(original))


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
    for change in pending:
        if change.change.kind == "chunk_size":
            by_job.setdefault(change.change.target, []).append(change)
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


def _restore(platform: Platform, item: Undo, by: By) -> None:
    if item.kind == "chunk_size":
        platform.set_chunk_size(item.target, int(item.restore), actor=by.actor, reason=by.reason)
    elif item.kind == "bulk_pause":
        platform.resume_bulk(actor=by.actor, reason=by.reason)
    elif item.restore is None:
        platform.unset_flag(item.target, actor=by.actor, reason=by.reason)
    else:
        ttl = item.restore["ttl"]
        platform.set_flag(
            item.target, item.restore["value"], ttl=ttl, actor=by.actor, reason=by.reason
        )


REVERT = Revert()
