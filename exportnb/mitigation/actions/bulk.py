"""Pause and resume bulk exports: ``exportctl pause bulk`` / ``exportctl resume bulk``.

Pausing sets ``export.bulk_paused``: queued bulk exports wait in the queue and running
ones finish. A revert of the incident resumes what its pause held back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exportnb.core import codec
from exportnb.core.errors import PreconditionFailed
from exportnb.mitigation.actions.common import count, flag_state, queued, reach
from exportnb.mitigation.model import By, Change, Context, Draft, Progress
from exportnb.mitigation.registry import ROUND, Mitigation
from exportnb.platform.model import BULK_PAUSE_FLAG, Flag


class _Bulk(Mitigation):
    """Pausing or resuming new bulk exports."""

    pause = True
    params = (ROUND,)

    def plan(self, context: Context, params: dict[str, Any]) -> Draft:
        platform = context.platform
        flag = platform.get_flag(BULK_PAUSE_FLAG)
        self._check(flag)
        ids, tenants, buckets = reach(queued(platform, "bulk"))
        waiting = f"{count(len(ids), 'queued bulk export')} of {count(len(tenants), 'tenant')}"
        summary = (
            f"Pause new bulk exports: {waiting} wait in the queue; running ones finish."
            if self.pause
            else f"Resume bulk exports: {waiting} may start."
        )
        new = True if self.pause else None
        changes = [Change("bulk_pause", BULK_PAUSE_FLAG, flag_state(flag), new)]
        return Draft(summary, changes, ids, tenants, buckets, [self.command(params)])

    def _check(self, flag: Flag | None) -> None:
        """PreconditionFailed when there is nothing to do."""
        if self.pause and flag is not None and bool(flag.value):
            when = codec.format_time(flag.set_at)
            raise PreconditionFailed(
                f"bulk exports are already paused (by {flag.set_by} at {when}); nothing to do"
            )
        if not self.pause and (flag is None or not bool(flag.value)):
            raise PreconditionFailed("bulk exports are not paused; nothing to do")

    def command(self, params: Mapping[str, Any]) -> str:
        return f"exportctl {'pause' if self.pause else 'resume'} bulk"


class PauseBulk(_Bulk):
    """``pause-bulk``: queued bulk exports wait, running ones finish."""

    name = "pause-bulk"
    sets_flag = BULK_PAUSE_FLAG
    label = "Pause new bulk exports"
    help = "Pause new bulk exports (exportctl pause bulk); running ones finish."
    gist = "Set export.bulk_paused: queued bulk exports wait, running ones finish."
    revertible = True
    order = 10

    def apply(
        self, context: Context, draft: Draft, params: dict[str, Any], by: By, progress: Progress
    ) -> None:
        flag = context.platform.pause_bulk(actor=by.actor, reason=by.reason)
        progress.response = flag
        progress.changes.append(Change("bulk_pause", BULK_PAUSE_FLAG, None, flag_state(flag)))


class ResumeBulk(_Bulk):
    """``resume-bulk``: queued bulk exports may start again."""

    name = "resume-bulk"
    label = "Resume bulk exports"
    help = "Resume new bulk exports (exportctl resume bulk)."
    pause = False
    order = 20

    def apply(
        self, context: Context, draft: Draft, params: dict[str, Any], by: By, progress: Progress
    ) -> None:
        context.platform.resume_bulk(actor=by.actor, reason=by.reason)
        progress.changes.append(Change("bulk_pause", BULK_PAUSE_FLAG, draft.changes[0].old, None))


PAUSE_BULK = PauseBulk()
RESUME_BULK = ResumeBulk()
