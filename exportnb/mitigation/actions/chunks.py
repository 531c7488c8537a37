"""Chunk size: smaller chunks for jobs' next attempts (``exportctl update --chunk-size``).

The runbook reduces chunk sizes so that each upload finishes in time; a size that would
grow is refused unless ``force`` allows it. A running job takes the new size from its
next attempt. A revert puts each job back to its size before the incident's first change.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from exportnb.core.config import Settings
from exportnb.core.errors import InvalidInput, PreconditionFailed
from exportnb.core.quantities import format_size, parse_size
from exportnb.mitigation.actions.common import count, job_ids, job_ids_param, jobs_named, reach
from exportnb.mitigation.model import By, Change, Context, Draft, Progress
from exportnb.mitigation.registry import ROUND, Mitigation, Option, Param
from exportnb.platform.model import Job


class ChunkSize(Mitigation):
    """``chunk-size``: the named jobs' next attempts upload smaller chunks."""

    name = "chunk-size"
    label = "Reduce the chunk size"
    help = "Reduce the chunk size of jobs for their next attempt (exportctl update --chunk-size)."
    gist = "Lower the chunk size of the named jobs so each upload finishes in time."
    revertible = True
    order = 50
    params = (
        job_ids_param("One per line: the jobs whose chunk size to reduce."),
        Param(
            "chunk_size",
            "Chunk size",
            "size",
            "50MB",
            "e.g. 50MB",
            cli=Option(help="The new chunk size, such as 50MB or 64MiB."),
        ),
        Param(
            "force",
            "Allow larger",
            "flag",
            False,
            "Allow a chunk size above the current one.",
            cli=Option(help="Allow raising a chunk size (the runbook reduces)."),
        ),
        ROUND,
    )

    def canonical(self, given: dict[str, Any], settings: Settings) -> dict[str, Any]:
        ids = job_ids(given)
        if not ids:
            raise InvalidInput("chunk-size needs the job(s) to change (--job)")
        if not isinstance(given["force"], bool):
            raise InvalidInput(f"force is true or false, not {given['force']!r}")
        size = parse_size(given["chunk_size"])
        return {"job_ids": ids, "chunk_size": size, "force": given["force"]}

    def plan(self, context: Context, params: dict[str, Any]) -> Draft:
        size = params["chunk_size"]
        jobs = jobs_named(context.platform, params["job_ids"])
        _refuse_growth(jobs, size, params["force"])
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
        ids, tenants, buckets = reach(changing)
        changes = [Change("chunk_size", j.id, j.chunk_size, size) for j in changing]
        moves = ", ".join(
            f"{j.id} {format_size(j.chunk_size)} -> {format_size(size)}" for j in changing
        )
        summary = (
            f"Change the chunk size of {count(len(ids), 'job')} "
            f"({count(len(tenants), 'tenant')}, {count(len(buckets), 'bucket')}) "
            f"for their next attempt: {moves}."
        )
        commands = self.command({"job_ids": ids, "chunk_size": size}).splitlines()
        return Draft(summary, changes, ids, tenants, buckets, commands, warnings)

    def apply(
        self, context: Context, draft: Draft, params: dict[str, Any], by: By, progress: Progress
    ) -> None:
        progress.response = []
        for change in draft.changes:
            done = context.platform.set_chunk_size(
                change.target, params["chunk_size"], actor=by.actor, reason=by.reason
            )
            progress.response.append(done)
            progress.changes.append(Change("chunk_size", done.job_id, done.old, done.new))

    def command(self, params: Mapping[str, Any]) -> str:
        size = format_size(params["chunk_size"])
        return "\n".join(
            f"exportctl update --job {shlex.quote(j)} --chunk-size {size}"
            for j in params["job_ids"] or ["<job-id>"]
        )


def _refuse_growth(jobs: list[Job], size: int, force: bool) -> None:
    """PreconditionFailed when a job's chunks would grow and ``force`` does not allow it."""
    raised = [j for j in jobs if j.chunk_size < size]
    if raised and not force:
        shown = ", ".join(f"{j.id} ({format_size(j.chunk_size)})" for j in raised)
        raise PreconditionFailed(
            f"the runbook reduces chunk sizes, and {shown} would grow to "
            f"{format_size(size)}; force it (--force) to raise them, "
            "or leave those jobs out. Nothing was changed"
        )


CHUNK_SIZE = ChunkSize()
