"""Postmortem review: what happened in an incident, rebuilt from its archived records alone.

Nothing is re-run and no platform is asked: every fact comes from the records'
``record.json`` (the parameters each run was given, and the results its notebook showed,
:mod:`exportnb.record.model`).

* :func:`incident_review` reads every record of one incident, oldest first (its
  *versions*), into an :class:`IncidentReview`: the records, the timeline with each
  mitigation and its operator, the recovery verdicts and the resolution
  (:mod:`exportnb.review.timeline`, which also defines the times to detect, mitigate and
  recover), the success rate across the whole incident against the baseline, the
  affected tenants and files, the corrective actions, and a Markdown summary for the
  postmortem document (:meth:`IncidentReview.markdown`).
* :func:`across_incidents` reviews every incident whose first record started in a window
  into a :class:`Portfolio`: counts, mean times to detect, mitigate and recover (MTTR),
  and the most common findings.

Where the other facts come from:

=====================  ============================================================
success rate           ``Detection.rolling`` and ``Recovery.minutes``, per minute;
                       where records overlap, the latest record's count wins (it saw
                       the minute complete); the baseline of a minute is that
                       record's ``Recovery.baseline_rate``
tenants and files      ``AuditSummary.tenants`` (and ``JobState.tenants``) and
                       ``AuditSummary.files``, in the order first seen
corrective actions     ``AuditSummary.corrective_actions``, without repeats
follow-ups             the latest ``Assessment``'s recommendations, but those applied
findings               one per code, as first found, most severe first
=====================  ============================================================

Results are read by their kind (``detection/v1`` for Detection), records from before kinds
by the kind of their results' class names (:func:`exportnb.review.timeline.results`).

Everything here is a frozen dataclass that :func:`exportnb.platform.codec.encode` turns into
JSON; ``frame()`` methods give DataFrames. Records are read through the archive's API
(:meth:`~exportnb.archive.store.Archive.record_ids`, :meth:`~exportnb.archive.store.Archive.show`).
The views are :mod:`exportnb.review.views`; the chart is :mod:`exportnb.review.charts`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from exportnb.archive import store as archives
from exportnb.core import codec
from exportnb.core.errors import InvalidInput, NotFound
from exportnb.core.findings import SEVERITIES, Finding
from exportnb.incident.steps.baseline import as_utc
from exportnb.record.model import Record, check_incident_id
from exportnb.review.timeline import (
    RECOVERY,
    Event,
    Mitigation,
    Times,
    Verdict,
    number,
    read_time,
    results,
    timeline_of,
    verdicts_of,
)
from exportnb.review.views import summary_markdown

if TYPE_CHECKING:
    import pandas as pd

REVIEW_SCHEMA = "exportnb.review/v1"
DETECTION, JOB_STATE, ASSESSMENT = "detection/v1", "job-state/v1", "assessment/v1"
AUDIT_SUMMARY = "audit-summary/v1"
"""The kinds of result a review reads, besides the timeline's."""
TOP_FINDINGS = 10
"""Findings a portfolio ranks."""

__all__ = [
    "Event",
    "FindingCount",
    "IncidentReview",
    "IncidentSummary",
    "Mitigation",
    "Portfolio",
    "RatePoint",
    "RecordVersion",
    "Times",
    "Verdict",
    "across_incidents",
    "incident_review",
    "last_days",
    "latest_incident",
    "portfolio_of",
    "review_of",
]


@dataclass(frozen=True)
class RecordVersion:
    """One record of the incident; ``version`` counts from 1, oldest first."""

    version: int
    record_id: str
    status: str
    started_at: datetime
    ended_at: datetime
    operator: str
    findings: dict[str, int]
    verdict: str | None
    error: str | None = None
    location: str = ""


@dataclass(frozen=True)
class RatePoint:
    """Finished attempts of one minute, as the latest record holding it counted them."""

    minute: datetime
    succeeded: int
    failed: int
    baseline: float | None
    record_id: str

    @property
    def rate(self) -> float | None:
        total = self.succeeded + self.failed
        return self.succeeded / total if total else None


@dataclass(frozen=True)
class IncidentReview:
    """Everything the records of one incident say, for a postmortem."""

    KIND: ClassVar[str] = "incident-review/v1"
    incident_id: str
    archive: str
    records: list[RecordVersion]
    timeline: list[Event]
    mitigations: list[Mitigation]
    verdicts: list[Verdict]
    rates: list[RatePoint]
    threshold: float | None  # the lowest acceptable success rate: 1 - the failure threshold
    tenants: list[str]
    files: list[str]
    corrective_actions: list[str]
    follow_ups: list[str]  # the latest assessment's recommendations not applied, with commands
    findings: list[Finding]
    times: Times
    alert: str
    journal_ok: bool | None  # None when no record carries the journal
    schema: str = REVIEW_SCHEMA

    @property
    def resolved(self) -> bool:
        return self.times.recovered_at is not None

    def frame(self) -> pd.DataFrame:
        """Success rate per minute across the incident: index ``minute`` (UTC); columns
        ``total``, ``succeeded``, ``failed``, ``rate`` (0..1), ``baseline``, ``record_id``."""
        import pandas as pd  # deferred: pandas is heavy

        columns = ["minute", "total", "succeeded", "failed", "rate", "baseline", "record_id"]
        rows = [
            (
                p.minute,
                p.succeeded + p.failed,
                p.succeeded,
                p.failed,
                p.rate,
                p.baseline,
                p.record_id,
            )
            for p in self.rates
        ]
        frame = pd.DataFrame(rows, columns=columns)
        frame["minute"] = pd.to_datetime(frame["minute"], utc=True)
        frame[["rate", "baseline"]] = frame[["rate", "baseline"]].astype(float)
        return frame.set_index("minute")

    def timeline_frame(self) -> pd.DataFrame:
        return _frame(self.timeline, Event)

    def records_frame(self) -> pd.DataFrame:
        return _frame(self.records, RecordVersion)

    def markdown(self) -> str:
        """A summary ready to paste into a postmortem document."""
        return summary_markdown(self)


def incident_review(archive: str | archives.Archive | None, incident_id: str) -> IncidentReview:
    """The review of ``incident_id`` from every record of it in ``archive`` (a URL, an
    :class:`~exportnb.archive.store.Archive`, or ``None``/``""`` for the default archive).

    InvalidInput for a malformed incident ID; NotFound when the archive has no record of it.
    """
    store = archives.open_archive(archive or None)
    records = _records(store, check_incident_id(incident_id))
    if not records:
        raise NotFound(f"no records of incident {incident_id} in {store.url}")
    return review_of(records, archive=store.url)


def latest_incident(archive: str | archives.Archive | None) -> str:
    """The incident of the newest record in the archive; NotFound when it holds none."""
    store = archives.open_archive(archive or None)
    ids = store.record_ids()
    if not ids:
        raise NotFound(
            f"the archive {store.url} holds no records yet: run an incident "
            "notebook first (`exportnb demo` on the sandbox)"
        )
    return ids[-1].split("/", 1)[0]


def review_of(records: Iterable[Record], *, archive: str = "") -> IncidentReview:
    """The review of one incident's records (in any order: they are sorted by start)."""
    ordered = sorted(records, key=lambda r: (r.started_at, r.record_id))
    if not ordered:
        raise InvalidInput("a review needs at least one record")
    incidents = sorted({r.incident_id for r in ordered})
    if len(incidents) > 1:
        raise InvalidInput(f"the records are of several incidents: {', '.join(incidents)}")
    line = timeline_of(ordered)
    last = ordered[-1]
    return IncidentReview(
        incident_id=last.incident_id,
        archive=archive,
        records=_versions(ordered),
        timeline=line.events,
        mitigations=line.mitigations,
        verdicts=line.verdicts,
        rates=_rates(ordered),
        threshold=_threshold(ordered),
        tenants=_union(ordered, (AUDIT_SUMMARY, "tenants"), (JOB_STATE, "tenants")),
        files=_union(ordered, (AUDIT_SUMMARY, "files")),
        corrective_actions=_union(ordered, (AUDIT_SUMMARY, "corrective_actions")),
        follow_ups=_follow_ups(ordered, {m.action for m in line.mitigations}),
        findings=_distinct_findings(ordered),
        times=line.times,
        alert=line.alert,
        journal_ok=line.journal_ok,
    )


def _records(store: archives.Archive, incident: str) -> list[Record]:
    return [store.show(record_id) for record_id in store.record_ids(incident)]


def _versions(records: list[Record]) -> list[RecordVersion]:
    return [
        RecordVersion(
            n,
            r.record_id,
            r.status,
            r.started_at,
            r.ended_at,
            r.operator,
            r.severity_counts(),
            next((v.verdict for v in verdicts_of(r)), None),
            r.error.describe() if r.error else None,
            r.location,
        )
        for n, r in enumerate(records, start=1)
    ]


def _rates(records: list[Record]) -> list[RatePoint]:
    """One point per minute; a later record's count replaces an earlier one's."""
    points: dict[datetime, RatePoint] = {}
    for record in records:
        baseline = next((v.baseline_rate for v in verdicts_of(record)), None)
        series = [p for d in results(record, DETECTION) for p in d.get("rolling") or []]
        series += [p for r in results(record, RECOVERY) for p in r.get("minutes") or []]
        for point in series:
            minute = read_time(point.get("minute")) if isinstance(point, dict) else None
            if minute is not None:
                points[minute] = RatePoint(
                    minute,
                    int(point.get("succeeded") or 0),
                    int(point.get("failed") or 0),
                    baseline,
                    record.record_id,
                )
    return [points[m] for m in sorted(points)]


def _threshold(records: list[Record]) -> float | None:
    found = [
        t
        for r in records
        for d in results(r, DETECTION)
        if (t := number(d.get("threshold"))) is not None
    ]
    return 1.0 - found[-1] if found else None


def _union(records: list[Record], *sources: tuple[str, str]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        for kind, name in sources:
            for result in results(record, kind):
                values = result.get(name)
                if isinstance(values, list):
                    seen.update(dict.fromkeys(str(v) for v in values if v is not None))
    return list(seen)


def _follow_ups(records: list[Record], applied: set[str]) -> list[str]:
    """The recommendations of the latest record with an assessment, but those applied."""
    assessed = [r for r in records if results(r, ASSESSMENT)]
    found = []
    for assessment in results(assessed[-1], ASSESSMENT) if assessed else []:
        for rec in assessment.get("recommendations") or []:
            action, command = rec.get("action"), rec.get("command") or ""
            if action in applied:
                continue
            found.append(f"{action}: {command}" if command else str(action))
    return found


def _distinct_findings(records: list[Record]) -> list[Finding]:
    """One finding per code, as first found, most severe first."""
    found: dict[str, Finding] = {}
    for record in records:
        for finding in record.findings():
            found.setdefault(finding.code, finding)
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(found.values(), key=lambda f: rank.get(f.severity, len(rank)))


def _frame(items: list[Any], cls: type) -> pd.DataFrame:
    import pandas as pd  # deferred: pandas is heavy

    columns = [f.name for f in dataclasses.fields(cls)]
    return pd.DataFrame([codec.encode(i) for i in items], columns=columns)


# Across incidents ---------------------------------------------------------------------------
@dataclass(frozen=True)
class IncidentSummary:
    """One incident of a portfolio: one row of :meth:`Portfolio.frame`; times as in Times."""

    incident_id: str
    started_at: datetime | None
    first_record_at: datetime
    records: int
    resolved: bool
    verdict: str | None  # the latest record's recovery verdict
    mitigations: int
    to_detect: float | None
    to_mitigate: float | None
    to_recover: float | None
    findings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FindingCount:
    """A finding code and the number of incidents whose records found it."""

    code: str
    severity: str
    incidents: int
    example: str


@dataclass(frozen=True)
class Portfolio:
    """The incidents whose first record started in ``[since, until)``.

    ``mttd``, ``mttm`` and ``mttr`` are the means (seconds) of :class:`Times`'
    ``to_detect``, ``to_mitigate`` and ``to_recover`` over the incidents that got there."""

    KIND: ClassVar[str] = "portfolio/v1"
    since: datetime
    until: datetime
    archive: str
    incidents: list[IncidentSummary]
    records: int
    resolved: int
    open: int
    mttd: float | None
    mttm: float | None
    mttr: float | None
    findings: list[FindingCount]
    schema: str = REVIEW_SCHEMA

    def frame(self) -> pd.DataFrame:
        return _frame(self.incidents, IncidentSummary)

    def findings_frame(self) -> pd.DataFrame:
        return _frame(self.findings, FindingCount)


def last_days(days: float, until: datetime | str | None = None) -> tuple[datetime, datetime]:
    """``(since, until)``: the ``days`` before ``until`` (an ISO-8601 time; default now)."""
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not days > 0:
        raise InvalidInput(f"days must be a positive number, got {days!r}")
    end = read_time(until) if isinstance(until, str) and until else until or datetime.now(UTC)
    if not isinstance(end, datetime):
        raise InvalidInput(f"until {until!r} is not an ISO-8601 time")
    end = as_utc(end, "until")
    return end - timedelta(days=days), end


def across_incidents(
    archive: str | archives.Archive | None, since: datetime, until: datetime
) -> Portfolio:
    """Every incident whose first record started in ``[since, until)``, reviewed.

    Which incidents is decided from the record IDs (they carry the start time); only the
    records of those incidents are read."""
    since, until = as_utc(since, "since"), as_utc(until, "until")
    if until <= since:
        raise InvalidInput(f"until ({until.isoformat()}) must be after since ({since.isoformat()})")
    store = archives.open_archive(archive or None)
    firsts: dict[str, datetime] = {}
    for record_id in store.record_ids():
        incident, at = record_id.split("/", 1)[0], _id_time(record_id)
        firsts[incident] = min(at, firsts.get(incident, at))
    chosen = [i for i, at in firsts.items() if since <= at < until]
    reviews = [review_of(_records(store, i), archive=store.url) for i in chosen]
    return portfolio_of(reviews, since=since, until=until, archive=store.url)


def portfolio_of(
    reviews: list[IncidentReview], *, since: datetime, until: datetime, archive: str = ""
) -> Portfolio:
    """Counts, mean times and the most common findings of these reviews."""
    rows = sorted((_summary(r) for r in reviews), key=lambda s: s.first_record_at)
    resolved = sum(1 for s in rows if s.resolved)
    return Portfolio(
        since,
        until,
        archive,
        rows,
        sum(s.records for s in rows),
        resolved,
        len(rows) - resolved,
        _mean(s.to_detect for s in rows),
        _mean(s.to_mitigate for s in rows),
        _mean(s.to_recover for s in rows),
        _common_findings(reviews),
    )


def _summary(review: IncidentReview) -> IncidentSummary:
    t = review.times
    return IncidentSummary(
        review.incident_id,
        t.started_at,
        review.records[0].started_at,
        len(review.records),
        review.resolved,
        review.records[-1].verdict,
        len(review.mitigations),
        t.to_detect,
        t.to_mitigate,
        t.to_recover,
        [f.code for f in review.findings],
    )


def _common_findings(reviews: list[IncidentReview]) -> list[FindingCount]:
    counts: dict[str, int] = {}
    first: dict[str, Finding] = {}
    for review in reviews:
        for finding in review.findings:
            counts[finding.code] = counts.get(finding.code, 0) + 1
            first.setdefault(finding.code, finding)
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    ranked = sorted(counts, key=lambda c: (-counts[c], rank.get(first[c].severity, 9), c))
    ranked = ranked[:TOP_FINDINGS]
    return [FindingCount(c, first[c].severity, counts[c], first[c].summary) for c in ranked]


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _id_time(record_id: str) -> datetime:
    """The start time a record ID carries (``INC-7/20240501T120000Z-3fa9c2d1``)."""
    stamp = record_id.split("/", 1)[1].split("-", 1)[0]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
