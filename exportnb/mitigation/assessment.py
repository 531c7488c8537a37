"""From findings to mitigations: which of the runbook's actions the evidence calls for, and why.

:func:`assess` takes the results of the diagnostics (anything with ``findings``, or findings
themselves), runs the rules below over the finding codes and their evidence, and returns
:class:`Recommendation` objects ordered by priority and de-duplicated. Each reason cites
the evidence (the findings' one-line summaries and the buckets, jobs, tenants or hosts they
name). The rules never look at scenario, tenant or bucket names: only at finding codes and
evidence, and at the :class:`AssessmentContext` (the operator's buckets and limits).

Rules (evidence -> recommendations):

* THROTTLING, or FAILURES_CONCENTRATED on SlowDown/503 -> ``fallback-bucket`` (if one is
  configured and not impaired itself; else the reason says so) and ``retry --status failed``
  at the safe concurrency.
* CHUNK_TIMEOUTS, or FAILURES_CONCENTRATED on RequestTimeout with every chunk size above
  ``context.chunk_size`` -> ``chunk-size`` of those jobs, then ``retry`` of them.
* CHECKSUM_MISMATCH, MISSING_SEGMENTS -> ``re-export`` of those jobs, ``notify-tenants``.
* NETWORK_LOSS/LATENCY/UNREACHABLE -> ``escalate-network``.
* STUCK_JOBS -> ``retry`` of the jobs whose heartbeats are stale.
* PERMISSION_DENIED, BUCKET_MISSING, STORAGE_UNREACHABLE -> ``fallback-bucket`` (as above)
  and ``investigate``.
* load (THROTTLING, LATENCY_HIGH, throttled failures) with failures -> ``pause-bulk``.
* failures (FAILURE_RATE_HIGH, FAILURES_CONCENTRATED) and no cause above -> ``investigate``.

The input for chunk timeouts is the ``FAILURES_CONCENTRATED`` finding of the job-state step
with evidence ``dimension="error_code"``, ``value="RequestTimeout"``, ``chunk_sizes`` (bytes)
``job_ids`` and ``buckets``; a ``CHUNK_TIMEOUTS`` finding with ``job_ids`` works the same.
While anything is throttled, every retry uses ``context.safe_concurrency``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

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
from exportnb.core.quantities import format_size
from exportnb.incident.model import AssessmentContext
from exportnb.incident.steps import storagehealth
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
RETRY_LIMIT = 20
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


def assess(*results: Any, context: AssessmentContext) -> Assessment:
    """Recommendations for the findings of ``results`` (result objects, findings, or lists)."""
    found = collect_findings(results)
    causes = [p for rule in CAUSE_RULES for p in rule(found, context)]
    extra = [p for rule in (_load_rule, _investigate_rule) for p in rule(found, context, causes)]
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
    return Recommendation(action, reason, params, codes, command(action, params), PRIORITY[action])


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
Rule = Callable[[list[Finding], AssessmentContext], list[Proposal]]


def _fallback(
    impaired: list[str], findings: list[Finding], context: AssessmentContext, what: str
) -> tuple[list[Proposal], str]:
    """A fallback-bucket proposal, or none and a sentence saying why not."""
    fallback = context.fallback_bucket
    if fallback is None:
        return [], f"No fallback bucket is configured: exports cannot be redirected from {what}."
    if fallback in impaired:
        return [], f"The fallback bucket {fallback} is impaired too: redirecting would not help."
    reason = (
        f"Redirect new exports from {what} to the fallback bucket {fallback} for "
        f"{FALLBACK_TTL}: {cite(findings)}."
    )
    params = {"bucket": fallback, "ttl": FALLBACK_TTL}
    return [Proposal("fallback-bucket", params, reason, _codes(findings))], ""


def throttling_rule(found: list[Finding], context: AssessmentContext) -> list[Proposal]:
    findings = _throttled(found)
    if not findings:
        return []
    buckets = listed(findings, "buckets")
    what = ", ".join(buckets) or "the throttled buckets"
    proposals, note = _fallback(buckets, findings, context, what)
    regions = listed(findings, "regions")
    where = f" (region {', '.join(regions)})" if regions else ""
    retry = {"status": "failed", "limit": RETRY_LIMIT, "concurrency": context.safe_concurrency}
    reason = (
        f"Retry failed jobs at the safe concurrency of {context.safe_concurrency}, since S3 "
        f"throttles {what}{where}: {cite(findings)}. {note}"
    ).strip()
    return [*proposals, Proposal("retry", retry, reason, _codes(findings))]


def _large_timeouts(found: list[Finding], context: AssessmentContext) -> list[Finding]:
    timeouts = [f for f in found if concentrated_on(f, TIMEOUT_CODES)]
    large = [f for f in timeouts if _all_large(f.evidence.get("chunk_sizes"), context.chunk_size)]
    return of(found, CHUNK_TIMEOUTS) + large


def _all_large(sizes: Any, limit: int) -> bool:
    values = list(sizes.keys() if isinstance(sizes, dict) else sizes or [])
    try:
        return bool(values) and all(int(v) > limit for v in values)
    except (TypeError, ValueError):
        return False


def chunk_timeout_rule(found: list[Finding], context: AssessmentContext) -> list[Proposal]:
    findings = _large_timeouts(found, context)
    if not findings:
        return []
    job_ids = listed(findings, "job_ids")
    sizes = sorted({int(s) for f in findings for s in f.evidence.get("chunk_sizes") or []})
    shown = ", ".join(format_size(s) for s in sizes) or "large chunks"
    size = format_size(context.chunk_size)
    change = (
        f"Reduce the chunk size of {len(job_ids) or 'the'} job(s) to {size}: uploads of "
        f"{shown} time out ({cite(findings)})."
    )
    retry = (
        f"Retry the jobs whose chunk size was reduced to {size}, after the change: "
        f"{cite(findings)}."
    )
    codes = _codes(findings)
    concurrency = _retry_concurrency(found, context)
    return [
        Proposal(
            "chunk-size", {"job_ids": job_ids, "chunk_size": context.chunk_size}, change, codes
        ),
        Proposal("retry", {"job_ids": job_ids, "concurrency": concurrency}, retry, codes),
    ]


def delivery_rule(found: list[Finding], context: AssessmentContext) -> list[Proposal]:
    findings = of(found, CHECKSUM_MISMATCH, MISSING_SEGMENTS)
    if not findings:
        return []
    job_ids, tenants = listed(findings, "job_ids"), listed(findings, "tenants")
    files = listed(findings, "files") or listed(findings, "keys")
    export = (
        f"Re-export {', '.join(job_ids)}: their delivered files do not match their manifests "
        f"({cite(findings)})."
    )
    notify = (
        f"Tell tenant(s) {', '.join(tenants) or '(unknown)'} that {len(files)} file(s) were "
        f"incomplete or corrupt and are being re-exported: {', '.join(files[:10])}"
        f"{' ...' if len(files) > 10 else ''}."
    )
    codes = _codes(findings)
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


def network_rule(found: list[Finding], context: AssessmentContext) -> list[Proposal]:
    findings = of(found, *NETWORK_CODES)
    if not findings:
        return []
    hosts = listed(findings, "host")
    reason = (
        f"Escalate to the network team with the path measurement to {', '.join(hosts)}: "
        f"{cite(findings)}."
    )
    return [Proposal("escalate-network", {"hosts": hosts}, reason, _codes(findings))]


def stuck_rule(found: list[Finding], context: AssessmentContext) -> list[Proposal]:
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
    reason = (
        f"Retry the stuck job(s) {', '.join(job_ids)}: they are running with stale "
        f"heartbeats ({cite(findings)}).{note}"
    )
    params = {"job_ids": job_ids, "concurrency": _retry_concurrency(found, context)}
    return [Proposal("retry", params, reason, _codes(findings))]


def storage_rule(found: list[Finding], context: AssessmentContext) -> list[Proposal]:
    findings = of(found, *STORAGE_CODES)
    if not findings:
        return []
    buckets = listed(findings, "buckets")
    what = ", ".join(buckets) or "the export buckets"
    proposals, note = _fallback(buckets, findings, context, what)
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
