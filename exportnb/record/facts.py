"""What a record says about its incident, read from its results without executing anything.

:meth:`RecordFacts.of` reads the result bundles a record keeps (``record.json``'s
``results``: ``{"cell_index", "schema", "step", "kind", "type", "result"}``) for what the
archive index and the postmortem review search and show. Each kind of result has its
reader in :data:`READERS`; a bundle's kind is its ``kind``, or for records from before
kinds the kind of its ``type`` (:func:`~exportnb.record.model.kind_of`). The table names
results as their kinds do (JobState: ``job-state/v1``):

=================  ===========================================================================
fact               read from
=================  ===========================================================================
job IDs            the record's ``job_ids``; JobState ``job_ids`` and ``latest[*].id``;
                   ChecksumReport ``jobs[*].job_id``; ImpactSweep ``affected_jobs``;
                   FailureCapture; Declaration
tenants            JobState ``tenants`` and ``latest[*].tenant``; ChecksumReport
                   ``jobs[*].tenant``; ImpactSweep ``affected_tenants``; AuditSummary
                   ``tenants``; Recovery ``tenants_to_notify``
buckets            JobState ``latest[*].bucket``/``delivered_bucket`` and ``by_bucket``;
                   ChecksumReport ``jobs[*].bucket``; ImpactSweep ``affected_buckets``;
                   StorageHealth ``checks[*].bucket``; Declaration ``export_bucket``
files              AuditSummary ``files``; ImpactSweep ``files``
findings           every result's ``findings`` (:meth:`Record.findings`)
mitigations        the journal a record shows (a bundle whose result has ``entries``, journal
                   entries: :data:`JOURNAL_KINDS`): each ``result`` entry whose outcome is
                   ``succeeded``; and what the MitigationPlan (step ``mitigations``) lists
                   as ``applied`` that the journal does not show
=================  ===========================================================================

Results are JSON written by notebooks: a bundle of another shape, or a field of another
type, is passed over, never an error. A record without a journal bundle (older templates)
still has its plan's ``applied``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from exportnb.core import codec
from exportnb.core.errors import CommandError
from exportnb.core.findings import Finding
from exportnb.record.model import Record, kind_of

JOURNAL_KINDS = ("audit-trail/v1", "journal-report/v1")
"""The kinds of result that show an incident's journal."""
APPLIED = ("result", "succeeded")  # (kind, outcome) of a journal entry for an applied change


@dataclass(frozen=True)
class AppliedMitigation:
    """One mitigation a record shows as applied.

    ``source`` is ``journal`` (a journal entry: ``seq``, ``at``, ``operator`` and ``key`` as
    journaled) or ``plan`` (only the MitigationPlan says so: the operator is the record's,
    ``at`` is when the run ended, ``seq`` is None).
    """

    action: str
    operator: str
    at: datetime | None
    key: str
    params: dict[str, Any]
    seq: int | None
    source: str
    summary: str = ""


@dataclass(frozen=True)
class RecordFacts:
    """The job IDs, tenants, buckets, files, findings and mitigations of one record."""

    job_ids: list[str] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)
    buckets: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    mitigations: list[AppliedMitigation] = field(default_factory=list)

    @classmethod
    def of(cls, record: Record) -> RecordFacts:
        found = _Found()
        found.job_ids += [str(j) for j in record.job_ids]
        for bundle in record.results:
            result = bundle.get("result")
            if isinstance(result, dict):
                READERS.get(kind_of(bundle), _nothing)(result, found)
                if _is_journal(bundle, result):
                    found.journal += _applied_entries(result["entries"])
        return cls(
            _unique(found.job_ids),
            _unique(found.tenants),
            _unique(found.buckets),
            _unique(found.files),
            record.findings(),
            _mitigations(record, found),
        )


@dataclass
class _Found:
    job_ids: list[str] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)
    buckets: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    journal: list[AppliedMitigation] = field(default_factory=list)
    plan: list[tuple[str, str]] = field(default_factory=list)  # (action, key)


def _strings(value: Any) -> list[str]:
    """The non-empty strings of a list (or of one string); nothing from anything else."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def _each(value: Any, name: str) -> list[str]:
    """``item[name]`` of each object of a list, where it is a non-empty string."""
    items = value if isinstance(value, list) else []
    return [
        i[name] for i in items if isinstance(i, dict) and isinstance(i.get(name), str) and i[name]
    ]


def _unique(values: Iterable[str]) -> list[str]:
    return sorted(set(values))


def _job_state(result: dict[str, Any], found: _Found) -> None:
    latest = result.get("latest")
    found.job_ids += _strings(result.get("job_ids")) + _each(latest, "id")
    found.tenants += _strings(result.get("tenants")) + _each(latest, "tenant")
    found.buckets += _each(latest, "bucket") + _each(latest, "delivered_bucket")
    by_bucket = result.get("by_bucket")
    found.buckets += [str(b) for b in by_bucket] if isinstance(by_bucket, dict) else []


def _checksums(result: dict[str, Any], found: _Found) -> None:
    jobs = result.get("jobs")
    found.job_ids += _each(jobs, "job_id")
    found.tenants += _each(jobs, "tenant")
    found.buckets += _each(jobs, "bucket")


def _impact(result: dict[str, Any], found: _Found) -> None:
    """The impact sweep's damaged deliveries: every one, not the checked sample's."""
    found.job_ids += _strings(result.get("affected_jobs"))
    found.tenants += _strings(result.get("affected_tenants"))
    found.buckets += _strings(result.get("affected_buckets"))
    found.files += _strings(result.get("files"))


def _audit(result: dict[str, Any], found: _Found) -> None:
    found.tenants += _strings(result.get("tenants"))
    found.files += _strings(result.get("files"))


def _capture(result: dict[str, Any], found: _Found) -> None:
    found.job_ids += _strings(result.get("failing_job_ids")) + _strings(result.get("reported_jobs"))


def _declaration(result: dict[str, Any], found: _Found) -> None:
    found.job_ids += _strings(result.get("reported_jobs"))
    found.buckets += _strings(result.get("export_bucket"))


def _storage(result: dict[str, Any], found: _Found) -> None:
    found.buckets += _each(result.get("checks"), "bucket")


def _recovery(result: dict[str, Any], found: _Found) -> None:
    found.tenants += _strings(result.get("tenants_to_notify"))


def _plan(result: dict[str, Any], found: _Found) -> None:
    outcomes = result.get("outcomes")
    items = outcomes if isinstance(outcomes, list) else []
    keys = {o.get("action"): str(o.get("key") or "") for o in items if isinstance(o, dict)}
    found.plan += [(a, keys.get(a, "")) for a in _strings(result.get("applied"))]
    found.plan += [(a, keys.get(a, "")) for a in _each(result.get("applied"), "action")]


def _nothing(result: dict[str, Any], found: _Found) -> None:
    return None


Reader = Callable[[dict[str, Any], _Found], None]
READERS: dict[str, Reader] = {
    "job-state/v1": _job_state,
    "checksum-report/v1": _checksums,
    "impact-sweep/v1": _impact,
    "audit-summary/v1": _audit,
    "failure-capture/v1": _capture,
    "declaration/v1": _declaration,
    "storage-health/v1": _storage,
    "recovery/v1": _recovery,
    "mitigation-plan/v1": _plan,
}
"""What each kind of result says of job IDs, tenants, buckets, files and the plan."""


def _is_journal(bundle: Mapping[str, Any], result: Mapping[str, Any]) -> bool:
    entries = result.get("entries")
    if not isinstance(entries, list):
        return False
    return kind_of(bundle) in JOURNAL_KINDS or any(
        isinstance(e, dict) and "kind" in e and "outcome" in e for e in entries
    )


def _applied_entries(entries: list[Any]) -> list[AppliedMitigation]:
    found = []
    for entry in entries:
        if not isinstance(entry, dict) or (entry.get("kind"), entry.get("outcome")) != APPLIED:
            continue
        params = entry.get("params")
        detail = entry.get("detail")
        summary = detail.get("summary", "") if isinstance(detail, dict) else ""
        found.append(
            AppliedMitigation(
                action=str(entry.get("action", "")),
                operator=str(entry.get("operator", "")),
                at=_time(entry.get("at")),
                key=str(entry.get("key", "")),
                params=dict(params) if isinstance(params, dict) else {},
                seq=entry["seq"] if isinstance(entry.get("seq"), int) else None,
                source="journal",
                summary=str(summary),
            )
        )
    return found


def _mitigations(record: Record, found: _Found) -> list[AppliedMitigation]:
    """The journal's, once each (by key), then the plan's that the journal does not show."""
    by_key: dict[str, AppliedMitigation] = {}
    for done in found.journal:
        by_key.setdefault(done.key or f"{done.action}#{done.seq}", done)
    actions, keys = {m.action for m in by_key.values()}, {m.key for m in by_key.values()}
    plan = [
        AppliedMitigation(action, record.operator, record.ended_at, key, {}, None, "plan")
        for action, key in dict.fromkeys(found.plan)
        if action not in actions and (not key or key not in keys)
    ]
    return [*by_key.values(), *plan]


def _time(value: Any) -> datetime | None:
    try:
        parsed: datetime = codec.decode(datetime, value)
    except CommandError:  # a journal entry's time that is not one: left out, not an error
        return None
    return parsed
