"""Scoring a diagnosis: a run's record against the ground truth of its incident.

:func:`score` compares what a record says (its findings, read through
:class:`~exportnb.record.facts.RecordFacts`, and its result bundles, by ``kind`` or legacy
``type``) with :class:`~exportnb.sandbox.truth.Truth`, what the faults actually struck:

==================  ==========================================================================
cause recall        fault kinds that struck and that the record's findings name, of all that
                    struck (:data:`CAUSES` says which finding names which kind)
cause precision     of the kinds the findings name, those that struck
scope               per dimension (buckets, tenants, connectors): what the cause-naming
                    findings' evidence names, against what the faults struck (recall and
                    precision; naming a throttled bucket nothing wrote to is not wrong)
impact recall       damaged deliveries — (job, attempt) delivered with corrupt or missing
                    segments — that the record lists as failing verification, of all of them;
                    not judged when the record's checksum sweep was capped
invalid parameters  recommended values that would not have worked: a chunk size at or above
                    the smallest that timed out on the buckets concerned (or the timeout's
                    ``min_chunk`` the proxy recorded), a fallback bucket that does not exist
                    or is throttled
control mitigations actions recommended on a healthy control (``investigate`` changes nothing
                    and is not counted)
==================  ==========================================================================

:class:`Summary` puts the scores of a set of incidents together against :data:`TARGETS`
(cause recall and precision over the set, micro-averaged).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from exportnb.core.findings import (
    BUCKET_MISSING,
    CHECKSUM_MISMATCH,
    CHUNK_TIMEOUTS,
    FAILURES_CONCENTRATED,
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
from exportnb.incident.model import CHECKSUM_CHOICE
from exportnb.incident.steps.jobstate import TIMEOUT_CODES
from exportnb.incident.steps.storagehealth import THROTTLE_CODES, THROTTLE_STATUSES
from exportnb.record.facts import RecordFacts
from exportnb.record.model import Record, kind_of
from exportnb.sandbox.store import HEARTBEAT_LOST
from exportnb.sandbox.truth import Truth
from exportnb.sandbox.worker import CONNECT_TIMEOUT, parse_export_key

NOT_INJECTED = "storage-access"
"""A cause the sandbox never injects: naming it is always a false cause."""
THROTTLE_ERRORS = frozenset({*THROTTLE_CODES, *map(str, THROTTLE_STATUSES)})
"""Error codes of throttled requests, as the assessment reads failures concentrated on them."""


@dataclass(frozen=True)
class CauseCode:
    """A finding code that names a fault kind. A code that groups failures
    (FAILURES_CONCENTRATED) names it only when every error code of the failures it groups
    is one of ``error_codes``, as the assessment reads it."""

    kind: str
    code: str
    error_codes: frozenset[str] = frozenset()


CAUSES: tuple[CauseCode, ...] = (
    CauseCode("throttle", THROTTLING),
    CauseCode("throttle", FAILURES_CONCENTRATED, THROTTLE_ERRORS),
    CauseCode("timeout", CHUNK_TIMEOUTS),
    CauseCode("timeout", FAILURES_CONCENTRATED, frozenset(TIMEOUT_CODES)),
    CauseCode("corrupt", CHECKSUM_MISMATCH),
    CauseCode("missing", MISSING_SEGMENTS),
    CauseCode("stuck", STUCK_JOBS),
    CauseCode("stuck", FAILURES_CONCENTRATED, frozenset({HEARTBEAT_LOST})),
    CauseCode("network", NETWORK_LOSS),
    CauseCode("network", NETWORK_LATENCY),
    CauseCode("network", NETWORK_UNREACHABLE),
    CauseCode("network", FAILURES_CONCENTRATED, frozenset({CONNECT_TIMEOUT})),
    CauseCode(NOT_INJECTED, PERMISSION_DENIED),
    CauseCode(NOT_INJECTED, BUCKET_MISSING),
    CauseCode(NOT_INJECTED, STORAGE_UNREACHABLE),
)
"""Which finding codes name which fault kind: the one table the cause scores use. Codes
not listed (failure rate, latency, failures concentrated on a bucket for mixed reasons,
unknown reported jobs, ...) are symptoms or bookkeeping: they name no cause."""

SCOPES = ("buckets", "tenants", "connectors")
_DIMENSIONS = {"bucket": "buckets", "tenant": "tenants", "connector": "connectors"}
ASSESSMENT_KIND = "assessment/v1"
CHECKSUM_KIND = "checksum-report/v1"
NO_CHANGE = frozenset({"investigate"})
"""Recommended actions that change nothing, not counted as mitigations on a control."""


# What a record names --------------------------------------------------------------


def named_kinds(finding: Finding) -> set[str]:
    """The fault kinds a finding names (:data:`CAUSES`)."""
    return {c.kind for c in CAUSES if c.code == finding.code and _matches(c, finding)}


def _matches(cause: CauseCode, finding: Finding) -> bool:
    if not cause.error_codes:
        return True
    shared = _error_codes(finding.evidence)
    return bool(shared) and shared <= cause.error_codes


def _error_codes(evidence: dict[str, Any]) -> set[str]:
    if evidence.get("dimension") == "error_code":
        return {str(evidence.get("value"))}
    codes = evidence.get("error_codes")
    return {str(c) for c in codes} if isinstance(codes, list) else set()


def named_scope(findings: Iterable[Finding], dimension: str) -> frozenset[str]:
    """What the evidence of the cause-naming findings names in a dimension."""
    found: set[str] = set()
    for finding in findings:
        if not named_kinds(finding):
            continue
        evidence = finding.evidence
        found.update(_strings(evidence.get(dimension)))
        if _DIMENSIONS.get(str(evidence.get("dimension"))) == dimension:
            found.add(str(evidence.get("value")))
    return frozenset(found)


def _results(record: Record, kind: str) -> list[dict[str, Any]]:
    """The results of the record's bundles of ``kind`` (by ``kind``, else legacy ``type``)."""
    return [
        b["result"]
        for b in record.results
        if kind_of(b) == kind and isinstance(b.get("result"), dict)
    ]


def recommendations(record: Record) -> list[dict[str, Any]]:
    """The assessment's recommendations: ``{"action", "params", ...}`` each."""
    found = []
    for result in _results(record, ASSESSMENT_KIND):
        for item in _items(result.get("recommendations")):
            if isinstance(item, dict) and isinstance(item.get("action"), str):
                params = item.get("params")
                found.append({**item, "params": params if isinstance(params, dict) else {}})
    return found


@dataclass(frozen=True)
class Listed:
    """The deliveries a record lists as damaged: by (job, attempt), by job alone where it
    does not say which attempt, and the ``s3://`` URIs of the segments."""

    deliveries: frozenset[tuple[str, int]] = frozenset()
    jobs: frozenset[str] = frozenset()
    uris: frozenset[str] = frozenset()
    capped: bool = False

    def lists(self, job_id: str, attempt: int) -> bool:
        """Whether the record lists this attempt of the job (or the job, attempt unsaid)."""
        return (job_id, attempt) in self.deliveries or job_id in self.jobs


def listed_damage(record: Record, findings: Sequence[Finding]) -> Listed:
    """What the record's checksum reports and delivery findings list as damaged."""
    pairs: set[tuple[str, int]] = set()
    jobs: set[str] = set()
    uris: set[str] = set()
    capped = False
    for report in _results(record, CHECKSUM_KIND):
        checked = _items(report.get("jobs"))
        capped = capped or bool(report.get("truncated") or report.get("capped"))
        capped = capped or len(checked) >= CHECKSUM_CHOICE[3]
        for job in checked:
            if isinstance(job, dict) and job.get("state") == "failed":
                bucket = str(job.get("bucket") or "")
                keys = [*_strings(job.get("mismatched")), *_strings(job.get("missing"))]
                keys += _strings(job.get("manifest_key"))
                uris.update(f"s3://{bucket}/{k}" for k in keys if not k.endswith(".json"))
                _add(pairs, jobs, str(job.get("job_id") or ""), keys)
    for finding in findings:
        if finding.code in (CHECKSUM_MISMATCH, MISSING_SEGMENTS):
            files = _strings(finding.evidence.get("files"))
            uris.update(files)
            for job_id in _strings(finding.evidence.get("job_ids")):
                _add(pairs, jobs, job_id, [u.split("/", 3)[-1] for u in files])
    return Listed(
        frozenset(pairs), frozenset(jobs - {j for j, _ in pairs}), frozenset(uris), capped
    )


def _add(pairs: set[tuple[str, int]], jobs: set[str], job_id: str, keys: list[str]) -> None:
    """The job's attempts its keys name, or the job alone if none does."""
    found = [k for key in keys if (k := parse_export_key(key)) and k.job_id == job_id]
    pairs.update((job_id, k.attempt) for k in found)
    if job_id and not found:
        jobs.add(job_id)


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    return [v for v in value if isinstance(v, str) and v] if isinstance(value, list) else []


# What would not have worked -------------------------------------------------------


def invalid_parameters(recommended: Sequence[dict[str, Any]], truth: Truth) -> list[str]:
    """Why each recommended value that would not have worked would not have."""
    checks: dict[str, Callable[[dict[str, Any], Truth], list[str]]] = {
        "chunk-size": _chunk_size,
        "fallback-bucket": _fallback_bucket,
    }
    found: list[str] = []
    for item in recommended:
        check = checks.get(item["action"])
        found += check(item["params"], truth) if check else []
    return found


def _chunk_size(params: dict[str, Any], truth: Truth) -> list[str]:
    size = params.get("chunk_size")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        return [f"chunk-size {size!r} is not a size"]
    jobs = _strings(params.get("job_ids"))
    buckets = {truth.timed_out_jobs[j] for j in jobs if j in truth.timed_out_jobs}
    found = []
    for bucket in sorted(buckets or truth.timed_out):
        bounds = [
            b for b in (truth.timeout_limits.get(bucket), truth.smallest_timeout([bucket])) if b
        ]
        if bounds and size >= min(bounds):
            found.append(
                f"chunk-size {format_size(size)} on {bucket}: uploads of "
                f"{format_size(min(bounds))} or more time out there"
            )
    return found


def _fallback_bucket(params: dict[str, Any], truth: Truth) -> list[str]:
    bucket = params.get("bucket")
    if not isinstance(bucket, str) or bucket not in truth.known_buckets:
        return [f"fallback-bucket {bucket!r}: no such bucket"]
    if bucket in truth.throttled:
        return [f"fallback-bucket {bucket}: it is throttled too"]
    return []


# Scores ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Overlap:
    """What a record names in one dimension against what the faults struck; ``tolerated``
    may be named without being struck (throttled buckets no export wrote to)."""

    named: frozenset[str]
    true: frozenset[str]
    tolerated: frozenset[str] = frozenset()

    @property
    def recall(self) -> float:
        return len(self.named & self.true) / len(self.true) if self.true else 1.0

    @property
    def precision(self) -> float:
        right = self.named & (self.true | self.tolerated)
        return len(right) / len(self.named) if self.named else 1.0


@dataclass(frozen=True)
class Score:
    """One record scored against its truth (see the module's table)."""

    scenario: str
    status: str
    true_causes: frozenset[str]
    named_causes: frozenset[str]
    scope: dict[str, Overlap]
    damaged: int
    damaged_listed: int
    sweep_capped: bool
    invalid: tuple[str, ...] = ()
    control_mitigations: tuple[str, ...] = ()
    missed_deliveries: tuple[str, ...] = field(default=(), repr=False)
    struck: dict[str, int] = field(default_factory=dict, repr=False)  # kind -> jobs struck

    @property
    def control(self) -> bool:
        return not self.true_causes

    @property
    def causes_right(self) -> frozenset[str]:
        return self.named_causes & self.true_causes

    @property
    def cause_recall(self) -> float:
        return len(self.causes_right) / len(self.true_causes) if self.true_causes else 1.0

    @property
    def cause_precision(self) -> float:
        return len(self.causes_right) / len(self.named_causes) if self.named_causes else 1.0

    @property
    def impact_recall(self) -> float | None:
        """Damaged deliveries listed, of all; None when none were damaged."""
        return self.damaged_listed / self.damaged if self.damaged else None

    def misses(self) -> list[str]:
        """The per-incident targets this score misses, each in a few words."""
        found = []
        if self.status != "succeeded":
            found.append(f"the notebook {self.status}")
        if self.cause_recall < 1.0:
            missed = [
                f"{kind} ({self.struck[kind]} jobs struck)" if kind in self.struck else kind
                for kind in sorted(self.true_causes - self.named_causes)
            ]
            found.append(f"missed cause(s) {', '.join(missed)}")
        if self.impact_recall is not None and self.impact_recall < 1.0 and not self.sweep_capped:
            found.append(f"listed {self.damaged_listed} of {self.damaged} damaged deliveries")
        found += [f"invalid {reason}" for reason in self.invalid]
        if self.control_mitigations:
            found.append(f"recommended {', '.join(self.control_mitigations)} on a healthy control")
        return found

    def verdict(self) -> str:
        """One line: the figures, and ``ok`` or what missed."""
        false = sorted(self.named_causes - self.true_causes)
        impact = "-" if self.damaged == 0 else f"{self.damaged_listed}/{self.damaged}"
        impact += " (capped)" if self.sweep_capped and self.damaged else ""
        scope = " ".join(f"{d[0]} {o.recall:.2f}/{o.precision:.2f}" for d, o in self.scope.items())
        figures = (
            f"{self.scenario}: causes {len(self.causes_right)}/{len(self.true_causes)}"
            f"{' false ' + ','.join(false) if false else ''}; scope {scope}; impact {impact}; "
            f"invalid {len(self.invalid)}"
            + (f"; control mitigations {len(self.control_mitigations)}" if self.control else "")
        )
        misses = self.misses()
        return f"{figures} -- {'; '.join(misses) if misses else 'ok'}"


def score(record: Record, truth: Truth, *, scenario: str = "") -> Score:
    """The record of a run scored against the truth of the incident it diagnosed."""
    findings = RecordFacts.of(record).findings
    named = {kind for f in findings for kind in named_kinds(f)}
    listed = listed_damage(record, findings)
    found = [d for d in truth.damaged if listed.lists(d.job_id, d.attempt)]
    recommended = recommendations(record)
    control = [r["action"] for r in recommended if truth.control and r["action"] not in NO_CHANGE]
    return Score(
        scenario=scenario or record.incident_id,
        status=record.status,
        true_causes=truth.kinds,
        named_causes=frozenset(named),
        scope={
            d: Overlap(
                named_scope(findings, d),
                truth.scope(d),
                truth.throttled if d == "buckets" else frozenset(),
            )
            for d in SCOPES
        },
        damaged=len(truth.damaged),
        damaged_listed=len(found),
        sweep_capped=listed.capped,
        invalid=tuple(invalid_parameters(recommended, truth)),
        control_mitigations=tuple(control),
        missed_deliveries=tuple(f"{d.job_id}#{d.attempt}" for d in truth.damaged if d not in found),
        struck={kind: len(jobs) for kind, jobs in truth.struck.items()},
    )


# A set of scores ------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A figure over a set of incidents and the value it must reach (``at_least``) or not
    exceed."""

    name: str
    value: float
    at_least: bool

    def met(self, figure: float | None) -> bool:
        if figure is None:
            return True
        return figure >= self.value if self.at_least else figure <= self.value

    def describe(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.value:g}"


TARGETS = (
    Target("cause recall", 1.0, True),
    Target("cause precision", 0.95, True),
    Target("impact recall (uncapped)", 1.0, True),
    Target("invalid parameters", 0, False),
    Target("control mitigations", 0, False),
)


@dataclass(frozen=True)
class Summary:
    """The scores of a set of incidents, put together against :data:`TARGETS`."""

    scores: tuple[Score, ...]

    @property
    def cause_recall(self) -> float:
        true = sum(len(s.true_causes) for s in self.scores)
        return sum(len(s.causes_right) for s in self.scores) / true if true else 1.0

    @property
    def cause_precision(self) -> float:
        named = sum(len(s.named_causes) for s in self.scores)
        return sum(len(s.causes_right) for s in self.scores) / named if named else 1.0

    @property
    def impact_recall(self) -> float | None:
        judged = [s for s in self.scores if s.damaged and not s.sweep_capped]
        damaged = sum(s.damaged for s in judged)
        return sum(s.damaged_listed for s in judged) / damaged if damaged else None

    @property
    def invalid_parameters(self) -> int:
        return sum(len(s.invalid) for s in self.scores)

    @property
    def control_mitigations(self) -> int:
        return sum(len(s.control_mitigations) for s in self.scores)

    def figures(self) -> list[tuple[Target, float | None]]:
        values = (
            self.cause_recall,
            self.cause_precision,
            self.impact_recall,
            self.invalid_parameters,
            self.control_mitigations,
        )
        return list(zip(TARGETS, values, strict=True))

    def misses(self) -> list[str]:
        """The targets the set misses, each with its figure."""
        return [
            f"{target.name} {value:.3g} (target {target.describe()})"
            for target, value in self.figures()
            if value is not None and not target.met(value)
        ]
