"""Recovery verification: the runbook's three checks before an incident is closed.

1. **Success rate back to baseline for 15 minutes.** Over the last ``window_minutes``
   minutes (ending with the minute holding ``now``) the success rate must be at least the
   baseline's expected rate for those minutes (the mean of their ``expected``; the
   baseline's ``overall`` when it has no point for them) minus ``tolerance``, from at
   least ``min_attempts`` attempts, and no minute may be *far below the band*: a minute is
   far below when its failures would happen with probability under ``DIP_P_VALUE`` if each
   attempt failed with probability ``1 - (low - tolerance)`` (a binomial tail, so that one
   failure in a quiet minute is not a dip, but three failures out of three are). Verdicts:
   ``recovered``; ``not_yet``; ``insufficient_data`` (no baseline, or too few attempts).
2. **Checksums verified for affected jobs; customers notified of re-exports.** A sample
   of the affected jobs is re-verified (:func:`exportnb.incident.steps.checksums.verify_jobs`):
   the first ``sample`` of them in the order given (the reported ones first), a fixed
   choice, and the result says how many of how many (``rechecked``, ``affected``). Tenants
   to notify are those of jobs whose checksums still fail, those the impact sweep found
   damaged (every one, sampled or not: :mod:`exportnb.incident.steps.impact`), and those of
   jobs re-exported since the incident started: jobs of ``job.retry`` audit entries (and
   the sampled jobs) that had already succeeded when they ran again.
3. **Fallback bucket disabled; configuration reverted.** The fallback flag
   (``export.fallback_bucket``, with its expiry), the bulk pause (``export.bulk_paused``)
   and every chunk-size change since the incident started (``job.update`` audit entries;
   a change is ``reverted`` when the job's chunk size is back to where it was before the
   first change). ``config_reverted`` holds when neither flag is set and every change is
   reverted.

Each check still open is a finding of this step (codes below, defined here because they
are about recovery only).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from exportnb.core.codec import format_time
from exportnb.core.errors import InvalidInput, NotFound
from exportnb.core.findings import Finding
from exportnb.core.quantities import format_size
from exportnb.incident.steps.baseline import (
    MINUTE,
    Baseline,
    BaselinePoint,
    MinuteRate,
    as_utc,
    binomial_tail,
    ceil_minute,
    minute_rates,
    rates_frame,
)
from exportnb.incident.steps.checksums import ChecksumReport, verify_jobs
from exportnb.incident.steps.impact import ImpactSweep
from exportnb.platform import Platform
from exportnb.platform.model import BULK_PAUSE_FLAG, FALLBACK_FLAG, AuditEntry, Flag

if TYPE_CHECKING:
    import pandas as pd

STEP = "recovery"
RECOVERY_NOT_CONFIRMED = "recovery_not_confirmed"
CHECKSUMS_UNVERIFIED = "checksums_unverified"
CONFIG_NOT_REVERTED = "config_not_reverted"
TENANTS_TO_NOTIFY = "tenants_to_notify"
DIP_P_VALUE = 0.001
"""A minute whose failures are less likely than this under the band is far below it."""
AUDIT_LIMIT = 5000
RE_EXPORT_SCAN_LIMIT = 500
"""Retried jobs looked at for re-exports."""
RECHECK_SAMPLE = 20
"""Affected jobs whose checksums recovery verification re-checks, the first ones given."""


@dataclass(frozen=True)
class ChunkChange:
    """A job's chunk size changed during the incident: from ``old`` to ``new``, and now
    ``current`` (``reverted`` when that is ``old`` again)."""

    job_id: str
    old: int
    new: int
    reverted: bool
    current: int = 0
    changed_at: datetime | None = None
    changed_by: str = ""


@dataclass(frozen=True)
class Recovery:
    KIND: ClassVar[str] = "recovery/v1"
    verdict: str  # recovered | not_yet | insufficient_data
    reason: str
    success_rate: float | None
    baseline_rate: float | None
    attempts: int
    checksums: ChecksumReport | None
    fallback: Flag | None
    bulk_paused: bool
    chunk_changes: list[ChunkChange]
    config_reverted: bool
    tenants_to_notify: list[str]
    findings: list[Finding] = field(default_factory=list)
    now: datetime | None = None
    window_minutes: int = 15
    tolerance: float = 0.01
    min_attempts: int = 20
    failed: int = 0
    minutes: list[MinuteRate] = field(default_factory=list)
    dips: list[datetime] = field(default_factory=list)
    re_exported: list[str] = field(default_factory=list)
    bulk_pause: Flag | None = None
    affected: int = 0  # affected jobs given
    rechecked: int = 0  # of them, re-checked: the sample

    @property
    def recovered(self) -> bool:
        return self.verdict == "recovered"

    def rates_frame(self) -> pd.DataFrame:
        """The rates frame of the recovery window."""
        return rates_frame(self.minutes)


class RecoveryOptions(TypedDict):
    """What :func:`verify_recovery` is told of an incident, besides the platform, the
    baseline and the affected jobs: when it is judged, over how long, since when."""

    now: datetime
    window_minutes: int
    incident_start: datetime


def verify_recovery(
    platform: Platform,
    *,
    now: datetime,
    baseline: Baseline,
    window_minutes: int = 15,
    affected_jobs: Sequence[str] = (),
    impact: ImpactSweep | None = None,
    incident_start: datetime | None = None,
    tolerance: float = 0.01,
    min_attempts: int = 20,
    sample: int = RECHECK_SAMPLE,
) -> Recovery:
    """Check the runbook's recovery verification at ``now``.

    ``affected_jobs`` are re-checked up to ``sample`` of them; ``impact`` (the impact
    sweep) names every tenant whose deliveries were damaged."""
    now = as_utc(now, "now")
    start = as_utc(incident_start, "incident_start") if incident_start is not None else None
    _check(window_minutes, tolerance, min_attempts, sample)
    affected = unique_ids([affected_jobs] if isinstance(affected_jobs, str) else affected_jobs)
    window_start = ceil_minute(now) - window_minutes * MINUTE
    minutes = minute_rates(platform, window_start, now)
    verdict = _rate_verdict(minutes, baseline, tolerance=tolerance, min_attempts=min_attempts)
    checksums = recheck(platform, affected[:sample])
    fallback, bulk = _flag(platform, FALLBACK_FLAG), _flag(platform, BULK_PAUSE_FLAG)
    audit = platform.audit_log(since=start, limit=AUDIT_LIMIT)
    changes = chunk_changes(audit)
    paused = bulk is not None and bool(bulk.value)
    reverted = fallback is None and not paused and all(c.reverted for c in changes)
    re_exported = re_exports(platform, [*retried_jobs(audit), *affected[:sample]])
    recovery = Recovery(
        verdict=verdict.verdict,
        reason=verdict.reason,
        success_rate=verdict.rate,
        baseline_rate=verdict.expected,
        attempts=verdict.attempts,
        checksums=checksums,
        fallback=fallback,
        bulk_paused=paused,
        chunk_changes=changes,
        config_reverted=reverted,
        tenants_to_notify=_tenants(checksums, re_exported, impact),
        now=now,
        window_minutes=window_minutes,
        tolerance=tolerance,
        min_attempts=min_attempts,
        failed=sum(m.failed for m in minutes),
        minutes=minutes,
        dips=verdict.dips,
        re_exported=[job_id for job_id, _ in re_exported],
        bulk_pause=bulk,
        affected=len(affected),
        rechecked=len(affected[:sample]),
    )
    return _with_findings(recovery)


def unique_ids(job_ids: Sequence[str]) -> list[str]:
    """The job IDs in order, each once."""
    return list(dict.fromkeys(job_ids))


def _check(window_minutes: int, tolerance: float, min_attempts: int, sample: int) -> None:
    if isinstance(window_minutes, bool) or not isinstance(window_minutes, int):
        raise InvalidInput(f"window_minutes must be a whole number, got {window_minutes!r}")
    if window_minutes < 1:
        raise InvalidInput("window_minutes must be at least 1")
    if not 0 <= tolerance < 1:
        raise InvalidInput(f"tolerance must be a share from 0 to 1 (0.01 is 1%), got {tolerance}")
    if min_attempts < 1:
        raise InvalidInput("min_attempts must be at least 1")
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise InvalidInput(f"sample must be a whole number of at least 1, not {sample!r}")


# 1. The success rate ---------------------------------------------------------------------
@dataclass(frozen=True)
class _RateVerdict:
    verdict: str
    reason: str
    rate: float | None
    expected: float | None
    attempts: int
    dips: list[datetime]


def _rate_verdict(
    minutes: list[MinuteRate], baseline: Baseline, *, tolerance: float, min_attempts: int
) -> _RateVerdict:
    total = sum(m.total for m in minutes)
    rate = sum(m.succeeded for m in minutes) / total if total else None
    points = {p.minute: p for p in baseline.points if p.expected is not None}
    window = [points[m.minute] for m in minutes if m.minute in points]
    expected = (
        sum(p.expected for p in window if p.expected is not None) / len(window)
        if window
        else baseline.overall
    )
    dips = [m.minute for m in minutes if far_below(m, points.get(m.minute), tolerance)]
    verdict, reason = _judge(rate, expected, total, dips, tolerance, min_attempts, len(minutes))
    return _RateVerdict(verdict, reason, rate, expected, total, dips)


def _judge(
    rate: float | None,
    expected: float | None,
    attempts: int,
    dips: list[datetime],
    tolerance: float,
    min_attempts: int,
    window: int,
) -> tuple[str, str]:
    if expected is None:
        return "insufficient_data", "no baseline: the platform has no history for these minutes"
    if rate is None or attempts < min_attempts:
        return "insufficient_data", (
            f"only {attempts} attempt(s) in the last {window} min; at least {min_attempts} "
            "are needed to judge the success rate"
        )
    floor = expected - tolerance
    if rate < floor:
        return "not_yet", (
            f"success rate {rate:.2%} over the last {window} min is below the baseline "
            f"{expected:.2%} less the {tolerance:.2%} tolerance ({floor:.2%})"
        )
    if dips:
        shown = ", ".join(m.strftime("%H:%M") for m in dips[:5])
        return "not_yet", f"{len(dips)} minute(s) far below the baseline band: {shown} UTC"
    return "recovered", (
        f"success rate {rate:.2%} over the last {window} min ({attempts} attempts) is back to "
        f"the baseline {expected:.2%} (tolerance {tolerance:.2%}), with no minute far below it"
    )


def far_below(minute: MinuteRate, point: BaselinePoint | None, tolerance: float) -> bool:
    """Whether the minute's failures are implausible under its baseline band."""
    if point is None or point.low is None or not minute.failed:
        return False
    fail_probability = min(1.0, max(1e-9, 1.0 - (point.low - tolerance)))
    return binomial_tail(minute.failed, minute.total, fail_probability) < DIP_P_VALUE


# 2. Checksums and re-exports -------------------------------------------------------------
def recheck(platform: Platform, job_ids: Sequence[str]) -> ChecksumReport | None:
    """The affected jobs' checksums, verified again (None when there are none)."""
    if not job_ids:
        return None
    return verify_jobs(platform, job_ids)


def retried_jobs(audit: list[AuditEntry]) -> list[str]:
    """The jobs queued again by ``job.retry`` entries, in order."""
    ids: list[str] = []
    for entry in audit:
        if entry.action == "job.retry" and isinstance(entry.new, dict):
            jobs = entry.new.get("jobs")
            ids += [j for j in jobs if isinstance(j, str)] if isinstance(jobs, list) else []
    return list(dict.fromkeys(ids))


def re_exports(platform: Platform, job_ids: Sequence[str]) -> list[tuple[str, str]]:
    """``(job_id, tenant)`` of the jobs that ran again after they had succeeded."""
    found: list[tuple[str, str]] = []
    for job_id in list(dict.fromkeys(job_ids))[:RE_EXPORT_SCAN_LIMIT]:
        try:
            detail = platform.get_job(job_id)
        except (NotFound, InvalidInput):
            continue
        job = detail.job
        if any(
            a.status == "succeeded" and (a.number < job.attempts or job.status != "succeeded")
            for a in detail.attempts
        ):
            found.append((job.id, job.tenant))
    return found


def _tenants(
    checksums: ChecksumReport | None,
    re_exported: list[tuple[str, str]],
    impact: ImpactSweep | None = None,
) -> list[str]:
    failed = [j.tenant for j in checksums.jobs if j.state == "failed"] if checksums else []
    swept = list(impact.affected_tenants) if impact is not None else []
    return sorted({t for t in [*failed, *swept, *(tenant for _, tenant in re_exported)] if t})


# 3. Configuration ------------------------------------------------------------------------
def _flag(platform: Platform, key: str) -> Flag | None:
    try:
        return platform.get_flag(key)
    except NotFound:
        return None


def chunk_changes(audit: list[AuditEntry]) -> list[ChunkChange]:
    """One change per job whose chunk size was updated, in the order of the first update."""
    by_job: dict[str, list[tuple[AuditEntry, int, int]]] = {}
    for entry in audit:
        sizes = _sizes(entry)
        if sizes is not None:
            by_job.setdefault(entry.target, []).append((entry, *sizes))
    return [_change(job_id, updates) for job_id, updates in by_job.items()]


def _sizes(entry: AuditEntry) -> tuple[int, int] | None:
    if entry.action != "job.update":
        return None
    old, new = (_chunk(v) for v in (entry.old, entry.new))
    return (old, new) if old is not None and new is not None else None


def _chunk(value: Any) -> int | None:
    size = value.get("chunk_size") if isinstance(value, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _change(job_id: str, updates: list[tuple[AuditEntry, int, int]]) -> ChunkChange:
    first, original, _ = updates[0]
    current = updates[-1][2]
    changed = [new for _, _, new in updates if new != original] or [current]
    return ChunkChange(
        job_id, original, changed[-1], current == original, current, first.at, first.actor
    )


# Findings ----------------------------------------------------------------------------------
def _with_findings(r: Recovery) -> Recovery:
    found = [_rate_finding(r), _checksum_finding(r), *_config_findings(r), _notify_finding(r)]
    return replace(r, findings=[f for f in found if f is not None])


def _rate_finding(r: Recovery) -> Finding | None:
    if r.verdict == "recovered":
        return None
    return Finding(
        RECOVERY_NOT_CONFIRMED,
        "warning" if r.verdict == "not_yet" else "info",
        f"Recovery not confirmed ({r.verdict.replace('_', ' ')}): {r.reason}",
        STEP,
        {
            "verdict": r.verdict,
            "success_rate": r.success_rate,
            "baseline_rate": r.baseline_rate,
            "tolerance": r.tolerance,
            "attempts": r.attempts,
            "failed": r.failed,
            "window_minutes": r.window_minutes,
            "dips": [format_time(m) for m in r.dips],
        },
    )


def _checksum_finding(r: Recovery) -> Finding | None:
    report = r.checksums
    pending = [j for j in report.jobs if j.state in ("failed", "error")] if report else []
    if not pending:
        return None
    return Finding(
        CHECKSUMS_UNVERIFIED,
        "warning",
        f"{len(pending)} affected job(s) still fail checksum verification: "
        + ", ".join(j.job_id for j in pending[:5])
        + f" ({sample_text(r)})",
        STEP,
        {
            "job_ids": [j.job_id for j in pending],
            "states": {j.job_id: j.state for j in pending},
            "tenants": sorted({j.tenant for j in pending if j.tenant}),
            "rechecked": r.rechecked,
            "affected": r.affected,
        },
    )


def sample_text(r: Recovery) -> str:
    """How many affected jobs were re-checked, of how many: ``a sample of 20 of 143``."""
    if r.rechecked < r.affected:
        return f"a sample of {r.rechecked} of {r.affected} affected jobs re-checked"
    return f"all {r.affected} affected job(s) re-checked"


def _config_findings(r: Recovery) -> list[Finding | None]:
    fallback, pause = r.fallback, r.bulk_pause if r.bulk_paused else None
    open_changes = [c for c in r.chunk_changes if not c.reverted]
    return [
        _flag_finding(fallback, "the fallback bucket is still on") if fallback else None,
        _flag_finding(pause, "bulk exports are still paused") if pause else None,
        Finding(
            CONFIG_NOT_REVERTED,
            "warning",
            f"{len(open_changes)} chunk-size change(s) not reverted: "
            + ", ".join(
                f"{c.job_id} ({format_size(c.old)} → {format_size(c.current)})"
                for c in open_changes[:5]
            ),
            STEP,
            {
                "item": "chunk_size",
                "job_ids": [c.job_id for c in open_changes],
                "changes": {c.job_id: {"old": c.old, "current": c.current} for c in open_changes},
            },
        )
        if open_changes
        else None,
    ]


def _flag_finding(flag: Flag, what: str) -> Finding:
    expiry = f", expires {_clock(flag.expires_at)}" if flag.expires_at else ", no expiry"
    value = flag.value if isinstance(flag.value, str) else json.dumps(flag.value)
    return Finding(
        CONFIG_NOT_REVERTED,
        "warning",
        f"Configuration not reverted: {what} ({flag.key} = {value}, set by {flag.set_by}{expiry})",
        STEP,
        {
            "item": flag.key,
            "value": flag.value,
            "set_by": flag.set_by,
            "set_at": format_time(flag.set_at),
            "expires_at": format_time(flag.expires_at) if flag.expires_at else None,
        },
    )


def _clock(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _notify_finding(r: Recovery) -> Finding | None:
    if not r.tenants_to_notify:
        return None
    return Finding(
        TENANTS_TO_NOTIFY,
        "info",
        f"Notify {len(r.tenants_to_notify)} tenant(s) of re-exports or damaged deliveries: "
        + ", ".join(r.tenants_to_notify),
        STEP,
        {
            "tenants": r.tenants_to_notify,
            "re_exported": r.re_exported,
            "checksum_failed": r.checksums.failed_job_ids if r.checksums else [],
        },
    )
