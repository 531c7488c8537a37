"""What a diagnostic finds, and how results travel into the notebook and the record.

Every runbook step returns a result object (a frozen dataclass) with its ``findings``.
A :class:`Finding` is one fact the data shows, with a stable ``code`` that the
assessment rules key on (never a scenario name), a severity, one line for people and
the evidence behind it.

Results are recorded in the executed notebook as output of the versioned vendor
mimetype :data:`RESULT_MIMETYPE`, as ``{"schema": 1, "step": ..., "result": {...}}``,
so the archive can read them back without executing anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from exportnb.core import codec

RESULT_MIMETYPE = "application/vnd.exportnb.result.v1+json"
RESULT_SCHEMA = 1

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")

STEPS: tuple[str, ...] = (
    "detection",
    "immediate_actions",
    "job_state",
    "storage_health",
    "checksums",
    "network_path",
    "assessment",
    "mitigations",
    "recovery",
    "communication",
)

# Finding codes. Rules in ``exportnb.mitigation.assessment`` key on these.
FAILURE_RATE_HIGH = "failure_rate_high"
LATENCY_HIGH = "latency_high"
STUCK_JOBS = "stuck_jobs"
REPORTED_JOBS_UNKNOWN = "reported_jobs_unknown"
FAILURES_CONCENTRATED = "failures_concentrated"
THROTTLING = "throttling"
CHUNK_TIMEOUTS = "chunk_timeouts"
PERMISSION_DENIED = "permission_denied"
BUCKET_MISSING = "bucket_missing"
STORAGE_UNREACHABLE = "storage_unreachable"
CHECKSUM_MISMATCH = "checksum_mismatch"
MISSING_SEGMENTS = "missing_segments"
NETWORK_LOSS = "network_loss"
NETWORK_LATENCY = "network_latency"
NETWORK_UNREACHABLE = "network_unreachable"


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    summary: str
    step: str
    evidence: dict[str, Any] = field(default_factory=dict)


def record_bundle(step: str, result: Any) -> dict[str, Any]:
    """The JSON payload stored under :data:`RESULT_MIMETYPE` for one step's result."""
    return {
        "schema": RESULT_SCHEMA,
        "step": step,
        "type": type(result).__name__,
        "result": codec.encode(result),
    }


def findings_of(*results: Any) -> list[Finding]:
    """Every finding of the given results, most severe first."""
    found = [f for r in results if r is not None for f in getattr(r, "findings", [])]
    return sorted(found, key=lambda f: SEVERITIES.index(f.severity))
