"""``exportctl``: the runbook's export job commands, on the sandbox platform.

The runbook's lines work verbatim::

    exportctl list --status failed --limit 20
    exportctl verify --job <job-id>
    exportctl retry --status failed --limit 20 --concurrency 2
    exportctl update --job <job-id> --chunk-size 50MB

Each command is a thin call into one :class:`~exportnb.platform.Platform` method.
``--output json`` prints the versioned contract (``docs/contract.md``), which is also
what the ``command`` platform expects from an organisation's own exportctl.

This exportctl always drives the sandbox. ``$EXPORTNB_CTL_PLATFORM`` (a registered
platform name, or ``module:Class``) points it elsewhere; it is a hook for tests and
extensions, not for production use.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import click

from exportnb import __version__
from exportnb.core.console import echo_fields, echo_table, seconds, shorten, warn
from exportnb.core.errors import ConfigError, InvalidInput
from exportnb.core.quantities import format_size, parse_size, parse_ttl
from exportnb.platform import Platform, current_actor, get_platform
from exportnb.platform.contract import Done
from exportnb.platform.model import (
    BULK_PAUSE_FLAG,
    STATUSES,
    ChunkSizeChange,
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
from exportnb.sandbox.ctl.output import echo_audit, echo_flag, emit, output_option, reports_errors

PLATFORM_ENV = "EXPORTNB_CTL_PLATFORM"
VERIFY_FAILED_EXIT = 10
"""Exit code of ``verify`` when a segment is mismatched or missing, or a manifest unreadable."""

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# The platform ---------------------------------------------------------------
def resolve_platform(default: str = "sandbox") -> Platform:
    """``$EXPORTNB_CTL_PLATFORM`` (a registered name or ``module:Class``), else ``default``."""
    spec = os.environ.get(PLATFORM_ENV, "").strip()
    if not spec:
        return get_platform(default)
    if ":" not in spec:
        return get_platform(spec)
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"${PLATFORM_ENV}={spec!r}: {exc}") from exc
    found = factory()
    if not isinstance(found, Platform):
        raise ConfigError(f"${PLATFORM_ENV}={spec!r} is not a Platform")
    return found


def platform() -> Platform:
    """The platform this exportctl drives: the sandbox."""
    return resolve_platform("sandbox")


@contextmanager
def using(factory: Callable[[], Platform]) -> Iterator[Platform]:
    """A platform from ``factory``, closed afterwards."""
    opened = factory()
    try:
        yield opened
    finally:
        opened.close()


# Input ----------------------------------------------------------------------
def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """``2024-05-01T12:00:00Z``, or a duration ago such as ``2h``, as a UTC datetime."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text.lower() == "now":
        return now
    try:
        return now - timedelta(seconds=parse_ttl(text))
    except InvalidInput:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"invalid time {text!r}: use ISO-8601 such as 2024-05-01T12:00:00Z, "
            "or a duration ago such as 30m or 2h"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def window(since: str, until: str | None) -> tuple[datetime, datetime]:
    """``--since``/``--until`` as a time window; ``until`` defaults to now."""
    now = datetime.now(UTC)
    start = parse_when(since, now=now)
    end = parse_when(until, now=now) if until else now
    if start >= end:
        raise InvalidInput(f"--since ({since}) must be before --until ({until or 'now'})")
    return start, end


def check_status(status: str | None) -> str | None:
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"unknown status {status!r} (statuses: {', '.join(STATUSES)})")
    return status


def check_at_least_one(option: str, value: int) -> int:
    if value < 1:
        raise InvalidInput(f"invalid {option} {value}: must be at least 1")
    return value


def unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


# Options ----------------------------------------------------------------------
job_option = click.option("--job", "job_id", required=True, metavar="ID", help="The job ID.")
reason_option = click.option(
    "--reason", default="", metavar="TEXT", help="Why: recorded in the audit trail."
)


# Commands -----------------------------------------------------------------------
@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="exportctl")
def exportctl() -> None:
    """Export jobs on the sandbox platform: list, inspect, verify, retry, tune.

    Every command takes --output json for the versioned JSON contract
    (apiVersion exportnb.dev/v1). Exit codes: 0 ok, 2 invalid input, 3 not found,
    4 precondition failed, 5 sandbox not running, 6 platform or storage error,
    10 verification found mismatched or missing segments.
    """


@exportctl.command("list")
@click.option("--status", metavar="STATUS", help=f"Only jobs in this status: {'/'.join(STATUSES)}.")
@click.option("--since", metavar="WHEN", help="Created at or after WHEN (ISO-8601, or 2h = ago).")
@click.option("--until", metavar="WHEN", help="Created before WHEN (ISO-8601, or 2h = ago).")
@click.option("--connector", metavar="NAME", help="Only jobs of this connector.")
@click.option("--bucket", metavar="NAME", help="Only jobs writing to this bucket.")
@click.option("--tenant", metavar="ID", help="Only jobs of this tenant.")
@click.option("--limit", type=int, default=20, show_default=True, help="At most this many jobs.")
@output_option
@reports_errors
def list_jobs(
    status: str | None,
    since: str | None,
    until: str | None,
    connector: str | None,
    bucket: str | None,
    tenant: str | None,
    limit: int,
    output: str,
) -> None:
    """List jobs, newest first, with their error reasons."""
    query = JobQuery(
        status=check_status(status),
        since=parse_when(since) if since else None,
        until=parse_when(until) if until else None,
        connector=connector,
        bucket=bucket,
        tenant=tenant,
        limit=check_at_least_one("--limit", limit),
    )
    with using(platform) as p:
        jobs = p.list_jobs(query)
    emit(output, "JobList", jobs, _echo_jobs)


def _echo_jobs(jobs: list[Job]) -> None:
    echo_table(
        ("ID", "STATUS", "TENANT", "CONNECTOR", "BUCKET", "KIND", "TRIES", "CREATED", "ERROR"),
        [_job_row(j) for j in jobs],
        empty="No jobs match.",
    )


def _job_row(j: Job) -> tuple[object, ...]:
    error = _error(j.error_code, j.error_message)
    return (
        j.id,
        j.status,
        j.tenant,
        j.connector,
        j.bucket,
        j.kind,
        j.attempts,
        j.created_at,
        error,
    )


def _error(code: str | None, message: str | None) -> str:
    if not code and not message:
        return "-"
    return shorten(f"{code or 'Error'}: {message or ''}".rstrip(": "), 80)


@exportctl.command("show")
@job_option
@click.option(
    "--logs",
    "log_lines",
    type=int,
    default=20,
    show_default=True,
    help="Show this many of the last log lines (tables only; JSON has them all).",
)
@output_option
@reports_errors
def show(job_id: str, log_lines: int, output: str) -> None:
    """Show one job: attempts, error and last logs.

    Prints the job's fields, its attempts, its error and its last log lines.
    """
    check_at_least_one("--logs", log_lines)
    with using(platform) as p:
        detail = p.get_job(job_id)
    emit(output, "JobDetail", detail, lambda d: _echo_detail(d, log_lines))


def _echo_detail(detail: JobDetail, log_lines: int) -> None:
    job = detail.job
    echo_fields(
        [
            ("Job", job.id),
            ("Status", job.status),
            ("Tenant", job.tenant),
            ("Connector", job.connector),
            ("Kind", job.kind),
            ("Bucket", job.bucket),
            ("Delivered to", job.delivered_bucket),
            ("Chunk size", format_size(job.chunk_size)),
            ("Size", format_size(job.bytes)),
            ("Attempts", job.attempts),
            ("Created", job.created_at),
            ("Started", job.started_at),
            ("Finished", job.finished_at),
            ("Duration", seconds(job.duration)),
            ("Heartbeat", job.heartbeat_at),
            ("Error", _error(job.error_code, job.error_message)),
        ]
    )
    click.echo("\nAttempts")
    echo_table(
        ("#", "STATUS", "STARTED", "FINISHED", "BUCKET", "CHUNK", "ERROR"),
        [
            (
                a.number,
                a.status,
                a.started_at,
                a.finished_at,
                a.bucket,
                format_size(a.chunk_size),
                _error(a.error_code, a.error_message),
            )
            for a in detail.attempts
        ],
    )
    logs = detail.logs[-log_lines:]
    click.echo(f"\nLogs (last {len(logs)} of {len(detail.logs)})")
    echo_table(
        ("AT", "LEVEL", "ATTEMPT", "MESSAGE"),
        [(line.at, line.level, line.attempt, line.message) for line in logs],
    )


@exportctl.command("manifest")
@job_option
@output_option
@reports_errors
def manifest(job_id: str, output: str) -> None:
    """Show the manifest of a job's latest delivery.

    Lists its segments with their sizes and SHA-256 checksums.
    """
    with using(platform) as p:
        found = p.manifest(job_id)
    emit(output, "Manifest", found, _echo_manifest)


def _echo_manifest(found: Manifest) -> None:
    echo_fields(
        [
            ("Job", found.job_id),
            ("Attempt", found.attempt),
            ("Manifest", f"s3://{found.bucket}/{found.key}"),
            ("Total size", format_size(found.total_bytes)),
            ("Segments", len(found.segments)),
            ("Created", found.created_at),
        ]
    )
    click.echo()
    echo_table(
        ("#", "KEY", "SIZE", "SHA256"),
        [(s.index, s.key, format_size(s.size), s.sha256) for s in found.segments],
    )


@exportctl.command("verify")
@click.option(
    "--job",
    "job_ids",
    required=True,
    multiple=True,
    metavar="ID",
    help="A job to verify; repeat for more jobs.",
)
@click.option(
    "--rehash",
    is_flag=True,
    help="Download every segment and hash it, instead of reading stored checksums.",
)
@output_option
@reports_errors
def verify(job_ids: tuple[str, ...], rehash: bool, output: str) -> None:
    """Check jobs' stored segments against manifests.

    Each segment is ok, mismatch or missing.

    Exits 10 when any segment is mismatched or missing, or a manifest cannot be read;
    the result is printed either way.
    """
    with using(platform) as p:
        results = [p.verify(job_id, rehash=rehash) for job_id in unique(job_ids)]
    emit(output, "VerificationList", results, _echo_verifications)
    failed = [v.job_id for v in results if not v.passed]
    if failed:
        warn(f"verification failed for {len(failed)} job(s): {', '.join(failed)}")
        raise SystemExit(VERIFY_FAILED_EXIT)


def _echo_verifications(results: list[Verification]) -> None:
    for i, result in enumerate(results):
        if i:
            click.echo()
        verdict = "PASSED" if result.passed else "FAILED"
        click.echo(
            f"{result.job_id}: {verdict} - {len(result.ok)} ok, {len(result.mismatched)} "
            f"mismatch, {len(result.missing)} missing ({result.mode}, "
            f"s3://{result.bucket}/{result.manifest_key})"
        )
        if result.error:
            click.echo(f"  manifest unreadable: {result.error}")
        bad = [c for c in result.checks if c.state != "ok"]
        if bad:
            echo_table(
                ("#", "STATE", "KEY", "EXPECTED", "ACTUAL", "DETAIL"),
                [
                    (c.index, c.state, c.key, c.expected_sha256, c.actual_sha256, c.detail)
                    for c in bad
                ],
            )


@exportctl.group("stats", context_settings=CONTEXT)
def stats() -> None:
    """Counts per minute and latency percentiles.

    Aggregates over the attempts that finished in a window.
    """


since_option = click.option(
    "--since", required=True, metavar="WHEN", help="Start: ISO-8601, or a duration ago (2h)."
)
until_option = click.option(
    "--until", metavar="WHEN", help="End: ISO-8601, or a duration ago; default now."
)


@stats.command("counts")
@since_option
@until_option
@output_option
@reports_errors
def stats_counts(since: str, until: str | None, output: str) -> None:
    """Finished attempts per minute and status.

    The table adds a total and the failure rate per minute.
    """
    start, end = window(since, until)
    with using(platform) as p:
        counts = p.status_counts(start, end)
    emit(output, "MinuteCounts", counts, _echo_counts)


def _echo_counts(counts: list[MinuteCount]) -> None:
    found = {c.status for c in counts}
    statuses = [s for s in STATUSES if s in found] + sorted(found - set(STATUSES))
    minutes: dict[datetime, dict[str, int]] = {}
    for c in counts:
        minutes.setdefault(c.minute, {})[c.status] = c.count
    rows = []
    for minute, per_status in minutes.items():
        total = sum(per_status.values())
        rate = f"{100 * per_status.get('failed', 0) / total:.1f}" if total else "-"
        rows.append((minute, *[per_status.get(s, 0) for s in statuses], total, rate))
    headers = ("MINUTE", *[s.upper() for s in statuses], "TOTAL", "FAILED%")
    echo_table(headers, rows, empty="No finished attempts in this window.")


@stats.command("latency")
@since_option
@until_option
@click.option("--per-minute", is_flag=True, help="One row per minute instead of one for all.")
@output_option
@reports_errors
def stats_latency(since: str, until: str | None, per_minute: bool, output: str) -> None:
    """p50/p95/p99 of attempt durations.

    Nearest-rank percentiles of the attempts that finished in the window.
    """
    start, end = window(since, until)
    with using(platform) as p:
        rows = p.latency(start, end, per_minute=per_minute)
    emit(output, "Latency", rows, _echo_latency)


def _echo_latency(rows: list[LatencyPercentiles]) -> None:
    echo_table(
        ("SINCE", "UNTIL", "COUNT", "P50", "P95", "P99"),
        [
            (r.minute or r.since, r.until, r.count, seconds(r.p50), seconds(r.p95), seconds(r.p99))
            for r in rows
        ],
        empty="No finished attempts in this window.",
    )


@exportctl.command("retry")
@click.option(
    "--job", "job_ids", multiple=True, metavar="ID", help="A job to retry; repeat for more jobs."
)
@click.option("--status", metavar="STATUS", help="Retry the newest jobs in this status.")
@click.option(
    "--limit",
    type=int,
    default=20,
    show_default=True,
    help="With --status: at most this many jobs.",
)
@click.option(
    "--concurrency",
    type=int,
    default=2,
    show_default=True,
    help="At most this many of the retried jobs run at once.",
)
@reason_option
@output_option
@reports_errors
def retry(
    job_ids: tuple[str, ...],
    status: str | None,
    limit: int,
    concurrency: int,
    reason: str,
    output: str,
) -> None:
    """Queue jobs again, with bounded concurrency.

    Name the jobs (--job ID, repeatable) or a status (--status failed --limit 20).
    """
    if bool(job_ids) == bool(status):
        raise InvalidInput("give either --job ID (repeatable) or --status STATUS, not both")
    check_status(status)
    check_at_least_one("--limit", limit)
    check_at_least_one("--concurrency", concurrency)
    with using(platform) as p:
        result = p.retry(
            job_ids=unique(job_ids),
            status=status,
            limit=limit,
            concurrency=concurrency,
            actor=current_actor(),
            reason=reason,
        )
    emit(output, "RetryResult", result, _echo_retry)


def _echo_retry(result: RetryResult) -> None:
    click.echo(
        f"Retry batch {result.batch}: {len(result.queued)} queued, {len(result.skipped)} "
        f"skipped (concurrency {result.concurrency})"
    )
    rows = [(job_id, "queued") for job_id in result.queued]
    rows += [(job_id, f"skipped: {why}") for job_id, why in result.skipped.items()]
    echo_table(("JOB", "RESULT"), rows, empty="No jobs to retry.")


@exportctl.command("update")
@job_option
@click.option(
    "--chunk-size", required=True, metavar="SIZE", help="New chunk size, such as 50MB or 64MiB."
)
@reason_option
@output_option
@reports_errors
def update(job_id: str, chunk_size: str, reason: str, output: str) -> None:
    """Change a job's chunk size for its next attempt."""
    size = parse_size(chunk_size)
    with using(platform) as p:
        change = p.set_chunk_size(job_id, size, actor=current_actor(), reason=reason)
    emit(output, "ChunkSizeChange", change, _echo_change)


def _echo_change(change: ChunkSizeChange) -> None:
    old, new = format_size(change.old), format_size(change.new)
    click.echo(f"{change.job_id}: chunk size {old} -> {new}")


@exportctl.group("pause", context_settings=CONTEXT)
def pause() -> None:
    """Pause new work (see `pause bulk`).

    `pause bulk` holds new bulk exports in the queue.
    """


@pause.command("bulk")
@reason_option
@output_option
@reports_errors
def pause_bulk(reason: str, output: str) -> None:
    """Pause new bulk exports (running ones finish)."""
    with using(platform) as p:
        flag = p.pause_bulk(actor=current_actor(), reason=reason)
    emit(output, "Flag", flag, echo_flag)


@exportctl.group("resume", context_settings=CONTEXT)
def resume() -> None:
    """Resume paused work (see `resume bulk`).

    `resume bulk` lets new bulk exports start again.
    """


@resume.command("bulk")
@reason_option
@output_option
@reports_errors
def resume_bulk(reason: str, output: str) -> None:
    """Resume new bulk exports."""
    with using(platform) as p:
        p.resume_bulk(actor=current_actor(), reason=reason)
    done = Done(action="bulk.resume", target=BULK_PAUSE_FLAG)
    emit(output, "Done", done, lambda _: click.echo("New bulk exports resumed."))


@exportctl.command("audit")
@click.option("--since", metavar="WHEN", help="Entries at or after WHEN (ISO-8601, or 2h = ago).")
@click.option(
    "--limit",
    type=int,
    default=100,
    show_default=True,
    help="At most this many of the newest entries.",
)
@output_option
@reports_errors
def audit(since: str | None, limit: int, output: str) -> None:
    """The audit trail: who changed what and why.

    Entries are printed oldest first; --limit keeps the newest.
    """
    start = parse_when(since) if since else None
    check_at_least_one("--limit", limit)
    with using(platform) as p:
        entries = p.audit_log(since=start, limit=limit)
    emit(output, "AuditLog", entries, echo_audit)


@exportctl.command("info")
@output_option
@reports_errors
def info(output: str) -> None:
    """The platform: buckets, target host, region, storage endpoint.

    Shows its name, export bucket, fallback buckets, target host and details. With
    --output json the storage endpoint and region are in ``storage``; its keys never are.
    """
    with using(platform) as p:
        found = p.info()
    emit(output, "PlatformInfo", found, _echo_info)


def _echo_info(found: PlatformInfo) -> None:
    echo_fields(
        [
            ("Platform", found.name),
            ("Export bucket", found.export_bucket),
            ("Buckets", ", ".join(found.buckets)),
            ("Fallback buckets", ", ".join(found.fallback_buckets)),
            ("Target host", found.target_host),
            ("Region", found.region),
            *[(str(k), v) for k, v in found.detail.items()],
        ]
    )


def main() -> None:
    """Run ``exportctl``."""
    exportctl(prog_name="exportctl")


if __name__ == "__main__":
    main()
