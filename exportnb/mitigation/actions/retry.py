"""Retry: queue finished jobs again with bounded concurrency (``exportctl retry``).

Either named jobs (``job_ids``) or the newest jobs of a status (``status``, ``failed`` by
default, and ``limit``, 20); at most ``concurrency`` (2, capped by ``[limits]
max_retry_concurrency``) run at once. The jobs retried are the ones the engineer saw in
the plan, not the newest failed jobs at the time of the click. Retries are not reverted.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from exportnb.core.config import Settings
from exportnb.core.errors import InvalidInput, PreconditionFailed
from exportnb.mitigation.actions.common import SCAN, count, job_ids, job_ids_param, jobs_named
from exportnb.mitigation.actions.common import reach as reach_of
from exportnb.mitigation.model import By, Change, Context, Draft, Progress
from exportnb.mitigation.registry import ROUND, Mitigation, Option, Param, whole
from exportnb.platform.model import STATUSES, JobQuery


def concurrency_cap(settings: Settings) -> int:
    """``[limits] max_retry_concurrency``: no retry runs more jobs at once."""
    return settings.max_retry_concurrency


class Retry(Mitigation):
    """``retry``: queue jobs again; watch for repeat errors."""

    name = "retry"
    label = "Retry failed jobs with safe concurrency"
    help = (
        "Queue failed jobs again with bounded concurrency (exportctl retry).\n\n"
        "Name the jobs (--job ID, repeatable) or a status (default: --status failed --limit 20)."
    )
    gist = "Requeue failed jobs with bounded concurrency; watch for repeat errors."
    order = 30
    params = (
        job_ids_param("One per line. Empty: retry jobs by status."),
        Param(
            "status",
            "Status",
            "choice",
            help="Used when no job IDs are given.",
            choices=("failed", "cancelled"),
            cli=Option(help="Retry the newest jobs in this status (failed).", metavar="STATUS"),
        ),
        Param(
            "limit",
            "Limit",
            "int",
            20,
            "How many jobs of that status, newest first.",
            maximum=SCAN,
            cli=Option(help="With --status: at most this many jobs."),
        ),
        Param(
            "concurrency",
            "Concurrency",
            "int",
            2,
            "Capped by [limits] max_retry_concurrency.",
            maximum=concurrency_cap,
            cli=Option(help="At most this many retried jobs run at once (capped by config)."),
        ),
        ROUND,
    )

    def form_params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Named jobs, else a status and a limit: never both."""
        given = dict(values)
        for name in ("status", "limit") if given.get("job_ids") else ("job_ids",):
            given.pop(name, None)
        return given

    def canonical(self, given: dict[str, Any], settings: Settings) -> dict[str, Any]:
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

    def replan_params(self, params: dict[str, Any], jobs: list[str]) -> dict[str, Any]:
        """The jobs of the plan, not the newest ones of the status now."""
        return {"job_ids": jobs, "concurrency": params["concurrency"]}

    def plan(self, context: Context, params: dict[str, Any]) -> Draft:
        platform = context.platform
        if "job_ids" in params:
            jobs = jobs_named(platform, params["job_ids"])
        else:
            jobs = platform.list_jobs(JobQuery(status=params["status"], limit=params["limit"]))
            if not jobs:
                raise PreconditionFailed(
                    f"no {params['status']} jobs to retry; nothing was changed"
                )
        ids, tenants, buckets = reach_of(jobs)
        changes = [
            Change("retry", j.id, {"status": j.status, "attempts": j.attempts}, "queued")
            for j in jobs
        ]
        busy = [f"{j.id} is {j.status}" for j in jobs if j.status in ("queued", "running")]
        warnings = [f"{b}: it is skipped unless its heartbeat is stale" for b in busy]
        cap, concurrency = context.settings.max_retry_concurrency, params["concurrency"]
        summary = (
            f"Queue {count(len(jobs), 'job')} again ({count(len(tenants), 'tenant')}, "
            f"{count(len(buckets), 'bucket')}); at most {concurrency} run at once "
            f"(cap {cap}). Watch for repeat errors."
        )
        return Draft(summary, changes, ids, tenants, buckets, [self.command(params)], warnings)

    def apply(
        self, context: Context, draft: Draft, params: dict[str, Any], by: By, progress: Progress
    ) -> None:
        before = {c.target: c.old for c in draft.changes}
        result = context.platform.retry(
            job_ids=draft.jobs,
            concurrency=params["concurrency"],
            actor=by.actor,
            reason=by.reason,
        )
        progress.response = result
        progress.changes += [Change("retry", j, before.get(j), "queued") for j in result.queued]

    def command(self, params: Mapping[str, Any]) -> str:
        if "status" in params:
            return (
                f"exportctl retry --status {params['status']} --limit {params['limit']} "
                f"--concurrency {params['concurrency']}"
            )
        jobs = " ".join(f"--job {shlex.quote(j)}" for j in params.get("job_ids", []))
        return f"exportctl retry {jobs} --concurrency {params['concurrency']}"


RETRY = Retry()
