"""``exportnb mitigate ACTION`` and ``exportnb journal``: the mitigation panel's flow at a shell.

Each ``mitigate`` command plans the action (what changes, how widely, the runbook
command), asks for a confirmation (``--yes`` answers it), applies it once and prints the
result; all of it lands in the incident's journal. It is a thin call into
:mod:`exportnb.mitigation.lifecycle`, the code path the notebook's panel and automatic runs use.

Exit codes: 0 applied, or applied before (nothing done again); 1 cancelled at the prompt;
2 invalid input; 3 a job or bucket not found; 4 a precondition failed (nothing changed:
already paused, nothing to revert, not allowed by policy, a broken journal); 5 the sandbox
is not running; 6 the platform failed while applying (the failed result is journaled and
the action may be tried again).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from exportnb.core import codec
from exportnb.core.console import echo_json, echo_table, handles_errors, shorten
from exportnb.core.errors import PreconditionFailed

F = Callable[..., Any]
CANCELLED_EXIT = 1


def _common(func: F) -> F:
    """The options every mitigation takes: incident, confirmation, output."""
    options = [
        click.option(
            "--incident",
            "incident",
            required=True,
            metavar="ID",
            help="The incident this mitigation belongs to (its journal).",
        ),
        click.option("--yes", "-y", is_flag=True, help="Apply without asking (confirmed)."),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="Print the outcome (plan, result) as JSON on stdout.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


round_option = click.option(
    "--round",
    "round_",
    type=int,
    default=1,
    show_default=True,
    help="Do the same thing again on purpose: a new round is a new idempotency key.",
)
jobs_option = click.option(
    "--job", "job_ids", multiple=True, metavar="ID", help="A job ID; repeat for more jobs."
)


@click.group("mitigate", context_settings={"help_option_names": ["-h", "--help"]})
def mitigate() -> None:
    """Plan, confirm and apply a mitigation of an incident; every step is journaled.

    Applying the same action with the same arguments again for one incident does
    nothing (it was applied); `exportnb journal INCIDENT` shows what was done.
    """


@mitigate.command("pause-bulk")
@round_option
@_common
@handles_errors
def pause_bulk(incident: str, yes: bool, as_json: bool, round_: int) -> None:
    """Pause new bulk exports (exportctl pause bulk); running ones finish."""
    _mitigate("pause-bulk", incident, {"round": round_}, yes=yes, as_json=as_json)


@mitigate.command("resume-bulk")
@round_option
@_common
@handles_errors
def resume_bulk(incident: str, yes: bool, as_json: bool, round_: int) -> None:
    """Resume new bulk exports (exportctl resume bulk)."""
    _mitigate("resume-bulk", incident, {"round": round_}, yes=yes, as_json=as_json)


@mitigate.command("retry")
@jobs_option
@click.option("--status", metavar="STATUS", help="Retry the newest jobs in this status (failed).")
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
    help="At most this many retried jobs run at once (capped by config).",
)
@round_option
@_common
@handles_errors
def retry(
    incident: str,
    yes: bool,
    as_json: bool,
    job_ids: tuple[str, ...],
    status: str | None,
    limit: int,
    concurrency: int,
    round_: int,
) -> None:
    """Queue failed jobs again with bounded concurrency (exportctl retry).

    Name the jobs (--job ID, repeatable) or a status (default: --status failed --limit 20).
    """
    params: dict[str, Any] = {"concurrency": concurrency, "round": round_}
    params |= {"job_ids": list(job_ids)} if job_ids else {"status": status, "limit": limit}
    _mitigate("retry", incident, params, yes=yes, as_json=as_json)


@mitigate.command("fallback-bucket")
@click.option("--bucket", required=True, help="The bucket new exports and retries go to.")
@click.option(
    "--ttl",
    default="30m",
    show_default=True,
    help="How long the redirect lasts (required > 0, at most [limits] max_flag_ttl).",
)
@round_option
@_common
@handles_errors
def fallback_bucket(
    incident: str, yes: bool, as_json: bool, bucket: str, ttl: str, round_: int
) -> None:
    """Redirect exports to a fallback bucket for a TTL (featurectl set export.fallback_bucket)."""
    params = {"bucket": bucket, "ttl": ttl, "round": round_}
    _mitigate("fallback-bucket", incident, params, yes=yes, as_json=as_json)


@mitigate.command("chunk-size")
@jobs_option
@click.option(
    "--chunk-size",
    "chunk_size",
    default="50MB",
    show_default=True,
    help="The new chunk size, such as 50MB or 64MiB.",
)
@click.option("--force", is_flag=True, help="Allow raising a chunk size (the runbook reduces).")
@round_option
@_common
@handles_errors
def chunk_size(
    incident: str,
    yes: bool,
    as_json: bool,
    job_ids: tuple[str, ...],
    chunk_size: str,
    force: bool,
    round_: int,
) -> None:
    """Reduce the chunk size of jobs for their next attempt (exportctl update --chunk-size)."""
    params = {"job_ids": list(job_ids), "chunk_size": chunk_size, "force": force, "round": round_}
    _mitigate("chunk-size", incident, params, yes=yes, as_json=as_json)


@mitigate.command("revert")
@_common
@handles_errors
def revert(incident: str, yes: bool, as_json: bool) -> None:
    """Undo what this incident changed: fallback flag, bulk pause, chunk sizes.

    Changes made since by other people or incidents are left as they are.
    """
    _mitigate("revert", incident, {}, yes=yes, as_json=as_json)


def _mitigate(
    action: str, incident: str, params: dict[str, Any], *, yes: bool, as_json: bool
) -> None:
    """Plan, confirm, apply; print the outcome; exit with its code."""
    from exportnb.mitigation import lifecycle as mitigations
    from exportnb.platform import get_platform

    platform = get_platform()
    try:
        plan = mitigations.plan(platform, incident, action, params)
        click.echo(mitigations.describe(plan), err=as_json)
        if not plan.already_applied and not yes and not _confirmed(action):
            outcome = mitigations.decline(plan, platform=platform)
        else:
            outcome = mitigations.apply(platform, plan, confirmed=True)
    finally:
        platform.close()
    _finish(outcome, as_json)


def _confirmed(action: str) -> bool:
    try:
        return click.confirm(f"Apply {action}?", default=False, err=True)
    except click.Abort:
        return False


def _finish(outcome: Any, as_json: bool) -> None:
    if as_json:
        echo_json(codec.encode(outcome))
    else:
        click.echo(outcome.message)
    if outcome.status in ("applied", "already_applied"):
        return
    if outcome.status == "cancelled":
        sys.exit(CANCELLED_EXIT)
    if outcome.status == "failed" and outcome.result is not None:
        click.echo(f"Error: {outcome.result.error}", err=True)
        sys.exit(outcome.result.exit_code or 6)
    click.echo(f"Error: {outcome.message}", err=True)
    sys.exit(PreconditionFailed.exit_code)


@click.command("journal")
@click.argument("incident")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@handles_errors
def journal(incident: str, as_json: bool) -> None:
    """Print an incident's mitigation journal, its hash chain verified.

    Exit code 4 when the chain is broken (the journal was edited).
    """
    from exportnb.mitigation.journal import read_journal

    entries = read_journal(incident)
    if as_json:
        echo_json(codec.encode(entries))
        return
    echo_table(
        ("SEQ", "AT", "OPERATOR", "KIND", "ACTION", "OUTCOME", "KEY", "DETAIL"),
        [
            (e.seq, e.at, e.operator, e.kind, e.action, e.outcome, e.key[:12], _detail(e.detail))
            for e in entries
        ],
        empty=f"No journal entries for {incident}.",
    )
    if entries:
        click.echo(f"{len(entries)} entries, hash chain verified (last {entries[-1].sha256[:16]})")


def _detail(detail: dict[str, Any]) -> str:
    text = detail.get("error") or detail.get("summary") or detail.get("why") or ""
    if not text and "reverts" in detail:
        text = f"{detail.get('kind')} {detail.get('target')}"
    return shorten(str(text), 70)
