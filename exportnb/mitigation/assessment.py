"""From findings to mitigations: which of the runbook's actions the evidence calls for, and why.

:func:`assess` takes the results of the diagnostics (anything with ``findings``, or findings
themselves), runs the rules below over the finding codes and their evidence, and returns
:class:`Recommendation` objects ordered by priority and de-duplicated. Each reason cites
the evidence (the findings' one-line summaries and the buckets, jobs, tenants or hosts they
name). The rules never look at scenario, tenant or bucket names: only at finding codes and
evidence, at what the diagnostics measured (:class:`Measured`: the failed jobs of the
window, the HeadBucket of each bucket, the attempt durations) and at the
:class:`AssessmentContext` (the operator's buckets) and the ``[limits]`` of the settings.

Every value a recommendation carries is chosen from that evidence, never copied from the
runbook's examples, and its reason shows the evidence and the arithmetic; the same
evidence is in the recommendation's ``evidence`` (recorded with it):

* ``chunk-size``: per bucket, below the smallest request size that timed out and no larger
  than the largest chunk size that succeeded there in the window (the runbook's 50MB where
  it meets both). Where nothing succeeded below the smallest size that timed out, no size is
  recommended: ``investigate`` says that no safe chunk size is known.
* ``retry``: the concurrency from the throttling evidence (the safe concurrency while S3
  throttles, the runbook's while exports are slow, ``[limits] max_retry_concurrency``
  otherwise); ``--status failed`` retries cover the window's failed jobs in batches of the
  runbook's 20, the reason saying how many remain after the first.
* ``fallback-bucket``: only a fallback bucket whose HeadBucket answered 200 in storage
  health; the TTL is the expected time to recover (the incident's duration so far, or the
  time to retry the failed backlog, the longer) rounded up to a quarter hour, at most
  ``[limits] max_flag_ttl``.
* ``escalate-network``: names the hop where the loss starts (``hop``, ``hop_host``).

Rules (evidence -> recommendations):

* THROTTLING, or FAILURES_CONCENTRATED on SlowDown/503 -> ``fallback-bucket`` (if one is
  configured, not impaired itself and healthy by HeadBucket; else the reason says so) and
  ``retry --status failed`` at the safe concurrency.
* CHUNK_TIMEOUTS, or FAILURES_CONCENTRATED on RequestTimeout -> ``chunk-size`` of those jobs
  to the safe size of their bucket, then ``retry`` of them; ``investigate`` for the jobs of
  a bucket where no safe size is known.
* CHECKSUM_MISMATCH, MISSING_SEGMENTS -> ``re-export`` of those jobs, ``notify-tenants``
  (the checksum step's sample and the impact sweep's every damaged delivery; where the
  sweep was partial or off, IMPACT_PARTIAL/IMPACT_UNSWEPT, the reasons say more may be).
* NETWORK_LOSS/LATENCY/UNREACHABLE -> ``escalate-network``.
* STUCK_JOBS -> ``retry`` of the jobs whose heartbeats are stale.
* PERMISSION_DENIED, BUCKET_MISSING, STORAGE_UNREACHABLE -> ``fallback-bucket`` (as above)
  and ``investigate``.
* load (THROTTLING, LATENCY_HIGH, throttled failures) with failures -> ``pause-bulk``.
* failures (FAILURE_RATE_HIGH, FAILURES_CONCENTRATED) and no cause above -> ``investigate``.

The input for chunk timeouts is the ``FAILURES_CONCENTRATED`` finding of the job-state step
with evidence ``dimension="error_code"``, ``value="RequestTimeout"``, ``chunk_sizes`` (bytes)
``job_ids`` and ``buckets``; a ``CHUNK_TIMEOUTS`` finding with ``job_ids`` works the same. The
sizes come from their ``chunk_outcomes`` (per bucket: the sizes that timed out and the chunk
sizes that succeeded, with counts) and ``window``
(:func:`exportnb.incident.steps.jobstate.chunk_outcomes`).
While anything is throttled, every retry uses ``context.safe_concurrency``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar

from exportnb.core.codec import format_time, readable_time
from exportnb.core.config import Settings
from exportnb.core.findings import (
    BUCKET_MISSING,
    CHECKSUM_MISMATCH,
    CHUNK_TIMEOUTS,
    FAILURE_RATE_HIGH,
    FAILURES_CONCENTRATED,
    LATENCY_HIGH,
    MISSING_SEGMENTS,
    NETWORK_LATENCY,
    NETWORK_LOSS,
    NETWORK_UNREACHABLE,
    PERMISSION_DENIED,
    STORAGE_UNREACHABLE,
    STUCK_JOBS,
    THROTTLING,
    Finding,
)
from exportnb.core.quantities import format_duration, format_size, parse_ttl
from exportnb.incident.model import AssessmentContext
from exportnb.incident.steps import storagehealth
from exportnb.incident.steps.detection import Detection
from exportnb.incident.steps.impact import IMPACT_PARTIAL, IMPACT_UNSWEPT
from exportnb.incident.steps.jobstate import JobState
from exportnb.incident.steps.network import onset_index
from exportnb.incident.steps.storagehealth import BucketCheck, StorageHealth
from exportnb.mitigation import registry

REEXPORT = "re-export"
"""Export the damaged deliveries again: a retry of their jobs."""
INVESTIGATE = "investigate"
"""No cause found: look at the failed jobs (Diagnostics 1) before acting."""
PRIORITY: dict[str, int] = {
    "pause-bulk": 10,
    "fallback-bucket": 20,
    "chunk-size": 30,
    "escalate-network": 40,
    "retry": 50,
    REEXPORT: 60,
    "notify-tenants": 70,
    INVESTIGATE: 80,
}
"""Lower runs first: reduce load, avoid the cause, then retry and repair, then talk."""
ACTIONS: tuple[str, ...] = tuple(PRIORITY)
THROTTLE_CODES = frozenset({"503", "429", *storagehealth.THROTTLE_CODES})
TIMEOUT_CODES = frozenset({"RequestTimeout"})
FALLBACK_TTL = "30m"
"""The runbook's example TTL: used only when neither the incident's duration nor the failed
backlog is known."""
RETRY_LIMIT = 20
"""The runbook's batch: ``--status failed`` retries go in batches of this many."""
TTL_STEP = 15 * 60
"""Fallback TTLs are rounded up to whole quarter hours."""
SHOWN_SIZES = 6
"""Timed-out sizes a reason lists per bucket (the evidence keeps them all)."""
NETWORK_CODES = (NETWORK_LOSS, NETWORK_LATENCY, NETWORK_UNREACHABLE)
STORAGE_CODES = (PERMISSION_DENIED, BUCKET_MISSING, STORAGE_UNREACHABLE)


@dataclass(frozen=True)
class Recommendation:
    """One mitigation: the action, why (citing the evidence), its parameters and command."""

    action: str
    reason: str
    params: dict[str, Any]
    finding_codes: list[str]
    command: str
    priority: int
    evidence: dict[str, Any] = field(default_factory=dict)  # what the values were chosen from


@dataclass(frozen=True)
class Assessment:
    """Recommended mitigations, first things first."""

    KIND: ClassVar[str] = "assessment/v1"
    recommendations: list[Recommendation]
    findings: list[Finding] = field(default_factory=list)
    considered: list[str] = field(default_factory=list)  # finding codes the rules saw

    @property
    def actions(self) -> list[str]:
        return [r.action for r in self.recommendations]

    def of_action(self, action: str) -> list[Recommendation]:
        return [r for r in self.recommendations if r.action == action]

    def frame(self) -> Any:
        import pandas as pd  # deferred: pandas is heavy

        rows = [(r.priority, r.action, r.command, r.reason) for r in self.recommendations]
        return pd.DataFrame(rows, columns=["priority", "action", "command", "reason"])


@dataclass(frozen=True)
class Measured:
    """What the diagnostics measured besides their findings, and the limits to act within:
    the evidence the recommended values are chosen from."""

    failed_jobs: int | None = None  # failed jobs of the job-state window (None: no job state)
    failed_capped: bool = False  # job state stopped at its scan limit: at least that many
    since: datetime | None = None  # the window job state covers: the incident so far
    until: datetime | None = None
    checks: dict[str, BucketCheck] = field(default_factory=dict)  # HeadBucket, by bucket
    attempt_p50: float | None = None  # seconds: detection's p50 attempt duration
    max_concurrency: int = Settings.max_retry_concurrency
    max_ttl: float = Settings.max_flag_ttl

    @property
    def window(self) -> dict[str, str]:
        if self.since is None or self.until is None:
            return {}
        return {"since": format_time(self.since), "until": format_time(self.until)}


def measured(results: Iterable[Any], settings: Settings) -> Measured:
    """What the job state, storage health and detection among ``results`` measured."""
    found: dict[str, Any] = {
        "max_concurrency": settings.max_retry_concurrency,
        "max_ttl": settings.max_flag_ttl,
        "checks": {},
    }
    for result in _flat(results):
        if isinstance(result, JobState):
            found |= {"failed_jobs": result.total_failed, "failed_capped": result.truncated}
            found |= {"since": result.since, "until": result.until}
        elif isinstance(result, StorageHealth):
            for check in result.checks:
                found["checks"].setdefault(check.bucket, check)
        elif isinstance(result, Detection) and result.latency.count:
            found["attempt_p50"] = result.latency.p50
    return Measured(**found)


def _flat(results: Iterable[Any]) -> list[Any]:
    flat: list[Any] = []
    for result in results:
        flat += _flat(result) if isinstance(result, (list, tuple)) else [result]
    return flat


@dataclass(frozen=True)
class Situation(AssessmentContext):
    """The context with what was measured: what each rule decides on."""

    measured: Measured = field(default_factory=Measured)


def assess(
    *results: Any, context: AssessmentContext, settings: Settings | None = None
) -> Assessment:
    """Recommendations for the findings of ``results`` (result objects, findings, or lists),
    with values chosen from what the results measured, within ``settings``' ``[limits]``
    (by default those of ``config.toml``)."""
    found = collect_findings(results)
    base = {f.name: getattr(context, f.name) for f in fields(AssessmentContext)}
    situation = Situation(**base, measured=measured(results, settings or Settings.load()))
    causes = [p for rule in CAUSE_RULES for p in rule(found, situation)]
    extra = [p for rule in (_load_rule, _investigate_rule) for p in rule(found, situation, causes)]
    codes = list(dict.fromkeys(f.code for f in found))
    return Assessment(merge([*causes, *extra]), [], codes)


def collect_findings(results: Iterable[Any]) -> list[Finding]:
    """Every finding of the results, each once, in order."""
    found: list[Finding] = []
    for result in results:
        if result is None:
            continue
        if isinstance(result, Finding):
            items: Iterable[Any] = [result]
        elif isinstance(result, (list, tuple)):
            items = collect_findings(result)
        else:
            items = getattr(result, "findings", None) or []
        found.extend(f for f in items if isinstance(f, Finding) and f not in found)
    return found


# Proposals, merged into recommendations -----------------------------------------
@dataclass(frozen=True)
class Proposal:
    """What one rule proposes; proposals of one action and the same settings merge."""

    action: str
    params: dict[str, Any]
    reason: str
    codes: tuple[str, ...]
    evidence: dict[str, Any] = field(default_factory=dict)


def merge(proposals: list[Proposal]) -> list[Recommendation]:
    """One recommendation per action and settings; list parameters are united, in order."""
    groups: dict[tuple[Any, ...], list[Proposal]] = {}
    for p in proposals:
        settings = tuple(sorted((k, v) for k, v in p.params.items() if not isinstance(v, list)))
        groups.setdefault((p.action, settings), []).append(p)
    return sorted((_merged(group) for group in groups.values()), key=lambda r: r.priority)


def _merged(group: list[Proposal]) -> Recommendation:
    params: dict[str, Any] = {}
    for p in group:
        for key, value in p.params.items():
            params[key] = _union(params.get(key, []), value) if isinstance(value, list) else value
    action = group[0].action
    reason = " ".join(dict.fromkeys(p.reason for p in group))
    codes = list(dict.fromkeys(c for p in group for c in p.codes))
    evidence: dict[str, Any] = {}
    for p in group:
        evidence = _merged_evidence(evidence, p.evidence)
    return Recommendation(
        action, reason, params, codes, command(action, params), PRIORITY[action], evidence
    )


def _merged_evidence(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Evidence of two proposals: lists united, tables merged, else the first value kept."""
    merged = dict(first)
    for key, value in second.items():
        known = merged.get(key)
        if isinstance(known, list) and isinstance(value, list):
            merged[key] = _union(known, value)
        elif isinstance(known, dict) and isinstance(value, dict):
            merged[key] = {**value, **known}
        else:
            merged.setdefault(key, value)
    return merged


def _union(first: list[Any], second: list[Any]) -> list[Any]:
    return list(dict.fromkeys([*first, *second]))


def command(action: str, params: dict[str, Any]) -> str:
    """The runbook command line that carries out a recommendation ("" where there is none).

    A mitigation's command is its registered :class:`~exportnb.mitigation.registry.Mitigation`'s;
    a re-export is a retry of the damaged deliveries' jobs; to investigate is to list the
    failed jobs (Diagnostics 1).
    """
    if action == REEXPORT:
        action = "retry"
    if action == INVESTIGATE:
        return f"exportctl list --status failed --limit {RETRY_LIMIT}"
    found = registry.find(action)
    return found.command(params) if found else ""


# Evidence ------------------------------------------------------------------------
def of(found: list[Finding], *codes: str) -> list[Finding]:
    return [f for f in found if f.code in codes]


def concentrated_on(finding: Finding, codes: frozenset[str]) -> bool:
    """A FAILURES_CONCENTRATED finding whose failures share one of these error codes."""
    evidence = finding.evidence
    if finding.code != FAILURES_CONCENTRATED:
        return False
    if evidence.get("dimension") == "error_code":
        return str(evidence.get("value")) in codes
    shared = evidence.get("error_codes") or []
    return bool(shared) and all(str(c) in codes for c in shared)


def listed(findings: list[Finding], key: str) -> list[Any]:
    """The values of evidence ``key`` (a list or one value) across findings, each once."""
    values: list[Any] = []
    for f in findings:
        value = f.evidence.get(key)
        items = value if isinstance(value, (list, tuple)) else [] if value is None else [value]
        values.extend(v for v in items if v not in values)
    if key == "buckets":
        values += [
            f.evidence["value"]
            for f in findings
            if f.evidence.get("dimension") == "bucket" and f.evidence["value"] not in values
        ]
    return values


def cite(findings: list[Finding]) -> str:
    return "; ".join(f"{f.summary} [{f.step}]" for f in findings)


def _throttled(found: list[Finding]) -> list[Finding]:
    return of(found, THROTTLING) + [f for f in found if concentrated_on(f, THROTTLE_CODES)]


def _retry_concurrency(found: list[Finding], context: AssessmentContext) -> int:
    return context.safe_concurrency if _throttled(found) else context.retry_concurrency


def _codes(findings: list[Finding]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.code for f in findings))


# Rules -----------------------------------------------------------------------------
Rule = Callable[[list[Finding], Situation], list[Proposal]]


@dataclass(frozen=True)
class Choice:
    """A value a rule chose, the sentence that shows why, and the evidence it came from."""

    value: Any
    why: str
    evidence: dict[str, Any] = field(default_factory=dict)


def retry_concurrency(found: list[Finding], context: Situation) -> Choice:
    """How many retried jobs may run at once, from the throttling evidence: the safe
    concurrency while S3 throttles (the fallback redirect may not be in effect yet), the
    runbook's while exports are slow, the policy's maximum when nothing throttles."""
    cap = context.measured.max_concurrency
    throttled, slow = _throttled(found), of(found, LATENCY_HIGH)
    if throttled:
        value = min(context.safe_concurrency, cap)
        regions = listed(throttled, "regions")
        where = f" (region {', '.join(regions)})" if regions else ""
        why = (
            f"{value} at a time, the safe concurrency, while S3 throttles "
            f"{', '.join(listed(throttled, 'buckets')) or 'exports'}{where} and the fallback "
            "redirect may not be in effect"
        )
        basis = "throttled"
    elif slow:
        value = min(context.retry_concurrency, cap)
        why = f"{value} at a time: nothing throttles, but exports are slow ({cite(slow)})"
        basis = "slow"
    else:
        value = cap
        why = (
            f"up to {value} at a time, the policy's maximum ([limits] max_retry_concurrency): "
            "nothing throttles and exports are not slow"
        )
        basis = "unthrottled"
    evidence = {"concurrency": {"value": value, "basis": basis, "max": cap}}
    return Choice(value, why, evidence)


def retry_batch(context: Situation) -> Choice:
    """The ``--limit`` of a ``--status failed`` retry: the window's failed jobs, in batches of
    the runbook's 20; the sentence says how many remain after this batch."""
    m = context.measured
    if m.failed_jobs is None:
        why = (
            f"how many jobs failed is not known (no job state): a first batch of the "
            f"runbook's {RETRY_LIMIT}"
        )
        return Choice(RETRY_LIMIT, why, {"retry_batch": {"batch": RETRY_LIMIT}})
    total, batch = m.failed_jobs, min(RETRY_LIMIT, m.failed_jobs)
    remaining = total - batch
    least = "at least " if m.failed_capped else ""
    when = f" between {_when(m.since)} and {_when(m.until)}" if m.window else ""
    why = f"{least}{total} job(s) failed{when}: this batch retries the newest {batch}"
    if remaining:
        why += f"; {least}{remaining} remain for later batches of up to {RETRY_LIMIT}"
    evidence = {
        "failed_jobs": total,
        "at_least": m.failed_capped,
        "batch": batch,
        "remaining": remaining,
        "window": m.window,
    }
    return Choice(batch, why, {"retry_batch": evidence})


def _when(value: datetime | None) -> str:
    return readable_time(value) if value is not None else "?"


def fallback_ttl(found: list[Finding], context: Situation) -> Choice:
    """How long to redirect: the expected time to recover, the longer of the incident's
    duration so far (it may last as long again) and the time to retry the failed backlog at
    the retry concurrency and the p50 attempt duration; rounded up to a quarter hour, at
    most ``[limits] max_flag_ttl``. The runbook's 30m when neither is known."""
    m = context.measured
    concurrency = retry_concurrency(found, context).value
    elapsed, drain = _elapsed(m), _drain(m, concurrency)
    terms = [t for t in (elapsed, drain) if t is not None]
    evidence: dict[str, Any] = {
        "elapsed_s": elapsed[0] if elapsed else None,
        "drain_s": drain[0] if drain else None,
        "failed_jobs": m.failed_jobs,
        "concurrency": concurrency,
        "attempt_p50_s": m.attempt_p50,
        "step_s": TTL_STEP,
        "max_s": m.max_ttl,
    }
    if not terms:
        wanted = parse_ttl(FALLBACK_TTL)
        ttl = min(wanted, m.max_ttl)
        why = (
            f"the runbook's {FALLBACK_TTL}, as neither the incident's duration nor the failed "
            f"backlog is known{_capped(ttl, wanted, m.max_ttl)}"
        )
        return Choice(format_duration(ttl), why, {"ttl": {**evidence, "seconds": ttl}})
    expected = max(seconds for seconds, _ in terms)
    rounded = max(TTL_STEP, math.ceil(expected / TTL_STEP) * TTL_STEP)
    ttl = min(rounded, m.max_ttl)
    why = (
        f"{'; '.join(text for _, text in terms)}: the longer, {_duration(expected)}, rounded "
        f"up to a quarter hour, is {format_duration(rounded)}{_capped(ttl, rounded, m.max_ttl)}"
    )
    evidence |= {"expected_s": expected, "rounded_s": rounded, "seconds": ttl}
    return Choice(format_duration(ttl), why, {"ttl": evidence})


def _elapsed(m: Measured) -> tuple[float, str] | None:
    """The incident's duration so far (the window job state covers), and how it reads."""
    if m.since is None or m.until is None:
        return None
    seconds = max(0.0, (m.until - m.since).total_seconds())
    return seconds, (
        f"the incident has lasted {_duration(seconds)} so far ({_when(m.since)} to "
        f"{_when(m.until)}) and may last as long again"
    )


def _drain(m: Measured, concurrency: int) -> tuple[float, str] | None:
    """How long retrying the failed backlog takes, and the arithmetic."""
    if not m.failed_jobs or not m.attempt_p50:
        return None
    rounds = math.ceil(m.failed_jobs / concurrency)
    seconds = rounds * m.attempt_p50
    return seconds, (
        f"retrying the {m.failed_jobs} failed jobs {concurrency} at a time takes {rounds} "
        f"round(s) x the p50 attempt duration of {m.attempt_p50:.3g}s = {_duration(seconds)}"
    )


def _duration(seconds: float) -> str:
    return format_duration(seconds) if seconds > 0 else "0s"


def _capped(ttl: float, wanted: float, limit: float) -> str:
    if ttl < wanted:
        return f", capped at the maximum of {format_duration(limit)} ([limits] max_flag_ttl)"
    return f", within the maximum of {format_duration(limit)} ([limits] max_flag_ttl)"


def fallback_health(context: Situation) -> tuple[BucketCheck | None, str]:
    """The fallback bucket's HeadBucket, and why it may not be redirected to ("" if it may)."""
    fallback = context.fallback_bucket
    check = context.measured.checks.get(fallback) if fallback else None
    if fallback is None:
        return None, "No fallback bucket is configured"
    if check is None:
        return None, (
            f"The fallback bucket {fallback} was not checked with HeadBucket: check it "
            f"(aws s3api head-bucket --bucket {fallback}) before redirecting exports to it"
        )
    if not check.ok:
        answer = " ".join(str(v) for v in (check.status, check.code) if v) or "no answer"
        return check, (
            f"The fallback bucket {fallback} is not healthy: HeadBucket answered {answer} "
            f"({check.verdict}), so redirecting there would not help"
        )
    return check, ""


def _fallback(
    impaired: list[str],
    findings: list[Finding],
    found: list[Finding],
    context: Situation,
    what: str,
) -> tuple[list[Proposal], str]:
    """A fallback-bucket proposal, or none and a sentence saying why not."""
    fallback = context.fallback_bucket
    if fallback is None:
        return [], f"No fallback bucket is configured: exports cannot be redirected from {what}."
    if fallback in impaired:
        return [], f"The fallback bucket {fallback} is impaired too: redirecting would not help."
    check, unhealthy = fallback_health(context)
    if check is None or unhealthy:
        return [], f"{unhealthy}."
    ttl = fallback_ttl(found, context)
    reason = (
        f"Redirect new exports from {what} to the fallback bucket {fallback} for {ttl.value}: "
        f"{cite(findings)}. HeadBucket on {fallback} answered {check.status or 200} in "
        f"{check.latency_ms:.0f} ms. TTL {ttl.value}: {ttl.why}."
    )
    params = {"bucket": fallback, "ttl": ttl.value}
    health = {
        "fallback_check": {
            "bucket": fallback,
            "verdict": check.verdict,
            "status": check.status,
            "latency_ms": check.latency_ms,
        }
    }
    evidence = {**health, **ttl.evidence}
    return [Proposal("fallback-bucket", params, reason, _codes(findings), evidence)], ""


def throttling_rule(found: list[Finding], context: Situation) -> list[Proposal]:
    findings = _throttled(found)
    if not findings:
        return []
    buckets = listed(findings, "buckets")
    what = ", ".join(buckets) or "the throttled buckets"
    proposals, note = _fallback(buckets, findings, found, context, what)
    batch = retry_batch(context)
    if batch.value == 0:
        return proposals  # nothing failed in the window: nothing to retry
    concurrency = retry_concurrency(found, context)
    retry = {"status": "failed", "limit": batch.value, "concurrency": concurrency.value}
    reason = (
        f"Retry failed jobs, {concurrency.why}: {cite(findings)}. Batch: {batch.why}. {note}"
    ).strip()
    evidence = {**concurrency.evidence, **batch.evidence}
    return [*proposals, Proposal("retry", retry, reason, _codes(findings), evidence)]


def _timeouts(found: list[Finding]) -> list[Finding]:
    """CHUNK_TIMEOUTS, and failures concentrated on request timeouts."""
    return of(found, CHUNK_TIMEOUTS) + [f for f in found if concentrated_on(f, TIMEOUT_CODES)]


@dataclass(frozen=True)
class BucketChunks:
    """What the chunk sizes did on one bucket in the window, and the safe size it gives."""

    bucket: str
    timed_out: dict[int, int]  # request size -> timed-out jobs
    succeeded: dict[int, int]  # chunk size -> jobs that uploaded at least one full chunk
    job_ids: list[str]  # the timed-out jobs

    @property
    def smallest_timeout(self) -> int | None:
        return min(self.timed_out) if self.timed_out else None

    @property
    def largest_success(self) -> int | None:
        """The largest chunk size that succeeded below the smallest that timed out."""
        limit = self.smallest_timeout
        below = [s for s in self.succeeded if limit is None or s < limit]
        return max(below) if below else None

    def safe_size(self, runbook: int) -> int | None:
        """The runbook's size where it is below every timed-out size and no larger than the
        largest that succeeded; else that largest success; None when nothing succeeded below
        the smallest size that timed out."""
        largest, limit = self.largest_success, self.smallest_timeout
        if largest is None:
            return None
        return runbook if runbook <= largest and (limit is None or runbook < limit) else largest

    def record(self, runbook: int) -> dict[str, Any]:
        return {
            "timed_out": {str(k): v for k, v in sorted(self.timed_out.items())},
            "succeeded": {str(k): v for k, v in sorted(self.succeeded.items())},
            "smallest_timed_out": self.smallest_timeout,
            "largest_succeeded": self.largest_success,
            "largest_succeeded_jobs": self.succeeded.get(self.largest_success or 0, 0),
            "chosen": self.safe_size(runbook),
        }


def bucket_chunks(findings: list[Finding]) -> list[BucketChunks]:
    """The ``chunk_outcomes`` of the findings, one per bucket (the first finding's wins)."""
    found: dict[str, BucketChunks] = {}
    for f in findings:
        for item in f.evidence.get("chunk_outcomes") or []:
            if not isinstance(item, dict) or str(item.get("bucket")) in found:
                continue
            found[str(item.get("bucket"))] = BucketChunks(
                str(item.get("bucket")),
                _sizes(item.get("timed_out")),
                _sizes(item.get("succeeded")),
                [str(j) for j in item.get("job_ids") or []],
            )
    return [found[b] for b in sorted(found)]


def _sizes(counts: Any) -> dict[int, int]:
    try:
        return {int(k): int(v) for k, v in (counts or {}).items()}
    except (AttributeError, TypeError, ValueError):
        return {}


def _shown_sizes(counts: dict[int, int]) -> str:
    """``32MiB (5 jobs), 64MiB (7 jobs)``, the smallest first, at most SHOWN_SIZES of them."""
    items = sorted(counts.items())
    shown = ", ".join(
        format_size(k) + (f" ({v} job{'s' if v != 1 else ''})" if v else "")
        for k, v in items[:SHOWN_SIZES]
    )
    more = len(items) - SHOWN_SIZES
    return shown + (f" and {more} larger size(s)" if more > 0 else "")


def _window_text(findings: list[Finding]) -> tuple[str, dict[str, Any]]:
    """``between <since> and <until>`` of the findings' ``window``, and the window."""
    for f in findings:
        window = f.evidence.get("window")
        if isinstance(window, dict) and window.get("since") and window.get("until"):
            since, until = _readable(window["since"]), _readable(window["until"])
            return f"between {since} and {until}", dict(window)
    return "in the window", {}


def _readable(value: Any) -> str:
    try:
        return readable_time(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return str(value)


def _size_reason(chunks: BucketChunks, size: int, runbook: int, when: str) -> str:
    largest, limit = chunks.largest_success or 0, chunks.smallest_timeout or 0
    return (
        f"Reduce the chunk size of {len(chunks.job_ids)} job(s) on {chunks.bucket} to "
        f"{format_size(size)}: {when} uploads of {_shown_sizes(chunks.timed_out)} timed out "
        f"there, and the largest chunk size that succeeded there below "
        f"{format_size(limit)} was {format_size(largest)} "
        f"({chunks.succeeded[largest]} jobs); {_runbook_note(runbook, size, limit, largest)}."
    )


def _runbook_note(runbook: int, size: int, limit: int, largest: int) -> str:
    """Why the runbook's example size is, or is not, the one recommended."""
    shown = f"the runbook's {format_size(runbook)}"
    if size == runbook:
        return f"{shown} is below {format_size(limit)} and no larger than {format_size(largest)}"
    misses = [f"not below {format_size(limit)}"] if runbook >= limit else []
    misses += [f"is larger than {format_size(largest)}"] if runbook > largest else []
    return f"{shown} is {' and '.join(misses)}"


def _unknown_reason(chunks: BucketChunks, when: str) -> str:
    limit = chunks.smallest_timeout
    above = sorted(s for s in chunks.succeeded if limit is not None and s >= limit)
    seen = f" (only {', '.join(format_size(s) for s in above)}, not below it)" if above else ""
    timed = _shown_sizes(chunks.timed_out) or "unknown sizes"
    return (
        f"No safe chunk size is known for {chunks.bucket}: {when} uploads of {timed} timed "
        f"out there and no smaller chunk size is known to have succeeded there{seen}, so no "
        "size is "
        "recommended: a guessed one could time out too. Find out why uploads time out "
        "(the storage endpoint, the network path) before changing chunk sizes."
    )


def chunk_timeout_rule(found: list[Finding], context: Situation) -> list[Proposal]:
    """Per bucket, the safe chunk size for the timed-out jobs and their retry; where none
    is known, ``investigate`` saying so."""
    findings = _timeouts(found)
    if not findings:
        return []
    chunks = [c for c in bucket_chunks(findings) if c.timed_out] or [_without_outcomes(findings)]
    when, window = _window_text(findings)
    codes, runbook = _codes(findings), context.chunk_size
    concurrency = retry_concurrency(found, context)
    proposals: list[Proposal] = []
    for bucket in chunks:
        size = bucket.safe_size(runbook)
        evidence = {
            "chunk_sizes": {bucket.bucket: bucket.record(runbook)},
            "window": window,
            "runbook_chunk_size": runbook,
        }
        cited = f" Findings: {cite(findings)}."
        if size is None:
            params: dict[str, Any] = {"buckets": [bucket.bucket], "job_ids": bucket.job_ids}
            reason = _unknown_reason(bucket, when) + cited
            proposals.append(Proposal(INVESTIGATE, params, reason, codes, evidence))
            continue
        change = {"job_ids": bucket.job_ids, "chunk_size": size}
        reason = _size_reason(bucket, size, runbook, when) + cited
        proposals.append(Proposal("chunk-size", change, reason, codes, evidence))
        retry = (
            f"Retry the jobs on {bucket.bucket} whose chunk size was reduced to "
            f"{format_size(size)}, after the change, {concurrency.why}."
        )
        params = {"job_ids": bucket.job_ids, "concurrency": concurrency.value}
        proposals.append(Proposal("retry", params, retry, codes, dict(concurrency.evidence)))
    return proposals


def _without_outcomes(findings: list[Finding]) -> BucketChunks:
    """Findings without ``chunk_outcomes`` (an older job state): the sizes that timed out
    are known, none that succeeded."""
    sizes = {int(s): 0 for f in findings for s in f.evidence.get("chunk_sizes") or []}
    buckets = ", ".join(listed(findings, "buckets")) or "the buckets concerned"
    return BucketChunks(buckets, sizes, {}, [str(j) for j in listed(findings, "job_ids")])


def delivery_rule(found: list[Finding], context: AssessmentContext) -> list[Proposal]:
    findings = of(found, CHECKSUM_MISMATCH, MISSING_SEGMENTS)
    if not findings:
        return []
    job_ids, tenants = listed(findings, "job_ids"), listed(findings, "tenants")
    files = listed(findings, "files") or listed(findings, "keys")
    unknown = of(found, IMPACT_PARTIAL, IMPACT_UNSWEPT)  # the impact may be larger
    more = f" The impact may be larger: {cite(unknown)}." if unknown else ""
    export = (
        f"Re-export {_first_of(job_ids)}: their delivered files do not match their "
        f"manifests ({cite(findings)}).{more}"
    )
    notify = (
        f"Tell tenant(s) {', '.join(tenants) or '(unknown)'} that {len(files)} file(s) were "
        f"incomplete or corrupt and are being re-exported: {', '.join(files[:10])}"
        f"{' ...' if len(files) > 10 else ''}.{more}"
    )
    codes = _codes(findings + unknown)
    concurrency = _retry_concurrency(found, context)
    return [
        Proposal(REEXPORT, {"job_ids": job_ids, "concurrency": concurrency}, export, codes),
        Proposal(
            "notify-tenants",
            {"tenants": tenants, "job_ids": job_ids, "files": files},
            notify,
            codes,
        ),
    ]


def _first_of(job_ids: list[str], shown: int = 20) -> str:
    """The first ``shown`` job IDs, and how many more (every one is in the parameters)."""
    more = f" and {len(job_ids) - shown} more" if len(job_ids) > shown else ""
    return ", ".join(job_ids[:shown]) + more


def loss_onset(findings: list[Finding]) -> dict[str, Any] | None:
    """The hop where the loss starts (``index``, ``host``, ``loss_pct``, ``threshold_pct``),
    from the findings' ``loss_onset``, else from their ``hops``; None if none is known."""
    for f in findings:
        threshold = float(f.evidence.get("threshold_pct") or 1.0)
        onset = f.evidence.get("loss_onset")
        hops = [h for h in f.evidence.get("hops") or [] if isinstance(h, dict)]
        if onset is None and hops and "loss_onset" not in f.evidence:
            position = onset_index([float(h.get("loss_pct") or 0.0) for h in hops], threshold)
            onset = hops[position] if position is not None else None
        if isinstance(onset, dict) and onset.get("index") is not None:
            return {**onset, "threshold_pct": threshold, "method": f.evidence.get("method")}
    return None


def _onset_text(onset: dict[str, Any] | None, hosts: list[str]) -> str:
    if onset is None:
        return "no hop loses more than the threshold all the way to the destination"
    where = (
        f"the loss starts at hop {onset['index']} ({onset['host']}, {onset.get('loss_pct')}% "
        f"lost) and stays above {onset['threshold_pct']:g}% from there to "
        f"{', '.join(hosts) or 'the destination'}"
    )
    if onset.get("method") == "tcp":
        where += " (a TCP probe sees only the destination: mtr -r names the hops before it)"
    return where


def network_rule(found: list[Finding], context: Situation) -> list[Proposal]:
    findings = of(found, *NETWORK_CODES)
    if not findings:
        return []
    hosts = listed(findings, "host")
    onset = loss_onset(findings)
    reason = (
        f"Escalate to the network team with the path measurement to {', '.join(hosts)}: "
        f"{_onset_text(onset, hosts)}; {cite(findings)}."
    )
    params: dict[str, Any] = {"hosts": hosts}
    if onset is not None:
        params |= {"hop": onset["index"], "hop_host": onset["host"]}
    evidence = {"loss_onset": onset}
    return [Proposal("escalate-network", params, reason, _codes(findings), evidence)]


def stuck_rule(found: list[Finding], context: Situation) -> list[Proposal]:
    findings = of(found, STUCK_JOBS)
    stuck = listed(findings, "job_ids")
    reasons: dict[str, Any] = {}
    for f in findings:
        reasons.update(f.evidence.get("reasons") or {})
    job_ids = [j for j in stuck if reasons.get(j, "stale_heartbeat") == "stale_heartbeat"]
    if not job_ids:
        return []
    live = [j for j in stuck if j not in job_ids]
    note = f" Left to run, with live heartbeats: {', '.join(live)}." if live else ""
    concurrency = retry_concurrency(found, context)
    reason = (
        f"Retry the stuck job(s) {', '.join(job_ids)}, {concurrency.why}: they are running "
        f"with stale heartbeats ({cite(findings)}).{note}"
    )
    params = {"job_ids": job_ids, "concurrency": concurrency.value}
    return [Proposal("retry", params, reason, _codes(findings), dict(concurrency.evidence))]


def storage_rule(found: list[Finding], context: Situation) -> list[Proposal]:
    findings = of(found, *STORAGE_CODES)
    if not findings:
        return []
    buckets = listed(findings, "buckets")
    what = ", ".join(buckets) or "the export buckets"
    proposals, note = _fallback(buckets, findings, found, context, what)
    reason = (
        f"Find out why storage refuses or cannot be reached for {what} (permissions, bucket, "
        f"endpoint): {cite(findings)}. {note}"
    ).strip()
    return [*proposals, Proposal(INVESTIGATE, {"buckets": buckets}, reason, _codes(findings))]


CAUSE_RULES: tuple[Rule, ...] = (
    throttling_rule,
    chunk_timeout_rule,
    delivery_rule,
    network_rule,
    stuck_rule,
    storage_rule,
)

_FAILURES = (FAILURE_RATE_HIGH, FAILURES_CONCENTRATED, CHUNK_TIMEOUTS)


def _load_rule(
    found: list[Finding], context: AssessmentContext, causes: list[Proposal]
) -> list[Proposal]:
    load = _throttled(found) + of(found, LATENCY_HIGH)
    failures = of(found, *_FAILURES)
    if not load or not failures:
        return []
    cited = load + [f for f in failures if f not in load]
    reason = f"Pause new bulk exports to reduce load while exports fail: {cite(cited)}."
    return [Proposal("pause-bulk", {}, reason, _codes(cited))]


def _investigate_rule(
    found: list[Finding], context: AssessmentContext, causes: list[Proposal]
) -> list[Proposal]:
    failures = of(found, FAILURE_RATE_HIGH, FAILURES_CONCENTRATED)
    if causes or not failures:
        return []
    reason = (
        "No cause is identified by the diagnostics; look at the failed jobs' errors and "
        f"logs: {cite(failures)}."
    )
    return [Proposal(INVESTIGATE, {}, reason, _codes(failures))]
