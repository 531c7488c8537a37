"""The timeline of an incident, read from its archived records: when the failures began,
the alert, each record, each mitigation applied and by whom, each recovery verdict, and
the resolution; and the times to detect, mitigate and recover (:class:`Times`).

Nothing is re-run: every fact comes from a record's ``record.json``, its parameters and the
results its notebook showed (:func:`results`, by kind: ``recovery/v1`` for Recovery; a
record from before kinds by the kind of its results' class names). Results are named below
by their classes.

===================  ==============================================================
failures began       the earliest ``Declaration.incident_start`` (the first failing
                     minute of the breach a run found) or alert ``startsAt``
alert                the ``alert`` parameter (an Alertmanager webhook or one alert):
                     its earliest ``startsAt``; a ``resolved`` one with its ``endsAt``
mitigations          the journal a record shows (``JOURNAL_KINDS``, step
                     ``mitigations``): each entry ``kind == "result"`` with ``outcome ==
                     "succeeded"``, its ``operator`` and ``at``; and what the
                     ``MitigationPlan`` lists as applied by policy without a journal
                     entry (:mod:`exportnb.record.facts` reads both, as the archive index does).
                     When no record shows a journal (records of older templates): the
                     flags the ``Recovery`` step saw set since the failures began
                     (fallback bucket, bulk pause), by ``set_by`` at ``set_at``, and the
                     chunk-size changes it lists
recovery verdicts    each ``Recovery`` result: its ``verdict`` at its ``now``
resolution           the first ``recovered`` verdict, or a resolved alert
===================  ==============================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from exportnb.incident.parameters import alert_summary
from exportnb.mitigation import registry
from exportnb.record.facts import JOURNAL_KINDS, RecordFacts
from exportnb.record.model import Record, kind_of

RECOVERY, DECLARATION = "recovery/v1", "declaration/v1"
"""The kinds of result the timeline reads, besides the journal's."""
EVENT_KINDS = ("start", "alert", "record", "mitigation", "verdict", "resolution")
"""Timeline events, in the order they sort within one instant."""
RECOVERED = "recovered"
BEGAN_FROM = {
    "declaration": "Failures began (the first failing minute the runs found)",
    "alert": "Failures began (the alert started firing)",
    "record": "Failures began (unknown: the first record started)",
}


@dataclass(frozen=True)
class Event:
    """One line of the timeline: when, what kind (:data:`EVENT_KINDS`), what, who."""

    at: datetime
    kind: str
    summary: str
    who: str = ""
    record_id: str = ""


@dataclass(frozen=True)
class Mitigation:
    """A mitigation applied, and where that is known from: ``journal`` (its journal entry),
    ``plan`` (the plan of an unattended run says policy applied it: ``at`` is when that run
    ended) or ``platform`` (a flag or chunk size a record without the journal saw)."""

    at: datetime
    operator: str
    action: str
    params: dict[str, Any]
    source: str
    key: str = ""
    record_id: str = ""

    @property
    def label(self) -> str:
        shown = {k: v for k, v in self.params.items() if not (k == "round" and v == 1)}
        return self.action + (f" ({params_text(shown)})" if shown else "")


@dataclass(frozen=True)
class Verdict:
    """A recovery verdict of one record, evaluated at ``at``."""

    at: datetime
    verdict: str
    reason: str
    success_rate: float | None
    baseline_rate: float | None
    record_id: str


@dataclass(frozen=True)
class Times:
    """When the incident began, was detected, mitigated and recovered, and how long each took.

    * ``started_at`` — the failures began: the earliest ``Declaration.incident_start`` of
      the records or the alert's ``startsAt``, whichever is earlier (the first record's
      start when the records have neither).
    * ``detected_at`` — the first signal that reached people: the alert's earliest
      ``startsAt``, or the first record's start, whichever is earlier.
    * ``mitigated_at`` — the first mitigation applied (:class:`Mitigation`).
    * ``recovered_at`` — the resolution: the first ``recovered`` verdict (at the time it
      was evaluated) or the ``endsAt`` of a resolved alert (the start of the record run
      for it when it has none), whichever is earlier.

    ``to_detect``, ``to_mitigate`` and ``to_recover`` are seconds from ``started_at`` to
    each of the others, so that they read as one line; None while that has not happened.
    """

    started_at: datetime | None
    detected_at: datetime | None
    mitigated_at: datetime | None
    recovered_at: datetime | None
    to_detect: float | None
    to_mitigate: float | None
    to_recover: float | None


@dataclass(frozen=True)
class Timeline:
    """What :func:`timeline_of` reads from one incident's records."""

    events: list[Event]
    mitigations: list[Mitigation]
    verdicts: list[Verdict]
    times: Times
    alert: str
    journal_ok: bool | None  # None when no record carries the journal


def timeline_of(records: list[Record]) -> Timeline:
    """The timeline of one incident's records, given oldest first."""
    alerts = [a for r in records for a in alerts_of(r)]
    verdicts = [v for r in records for v in verdicts_of(r)]
    began = _began(records, alerts)
    mitigations = _mitigations(records, began[0])
    times = _times(records, alerts, verdicts, mitigations, began[0])
    events = _events(records, alerts, verdicts, mitigations, times, began)
    summary = alerts[0].summary if alerts else "no alert: opened by hand"
    return Timeline(events, mitigations, verdicts, times, summary, _journal_ok(records))


# Reading results ----------------------------------------------------------------------
def results(record: Record, kind: str) -> list[dict[str, Any]]:
    """The recorded results of one kind (``"recovery/v1"``, ``"audit-trail/v1"``...)."""
    return [
        b["result"]
        for b in record.results
        if kind_of(b) == kind and isinstance(b.get("result"), dict)
    ]


def read_time(value: Any) -> datetime | None:
    """An ISO-8601 time from a record, in UTC; None when absent, unreadable or zero."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class AlertSeen:
    """The alert one record was run for."""

    status: str
    starts_at: datetime | None
    ends_at: datetime | None
    summary: str
    record: Record

    @property
    def name(self) -> str:
        """The summary without its leading status: ``ExportFailureRate: ... (since ...)``."""
        first, _, rest = self.summary.partition(" ")
        return rest if first == self.status and rest else self.summary

    @property
    def resolved_at(self) -> datetime | None:
        if self.status != "resolved":
            return None
        return self.ends_at or self.record.started_at


def alerts_of(record: Record) -> list[AlertSeen]:
    """The alert a record was run for (none when it was opened by hand)."""
    alert = record.parameters.get("alert")
    if not isinstance(alert, dict) or not alert:
        return []
    raw = alert.get("alerts", [alert])
    items = [a for a in raw if isinstance(a, Mapping)] if isinstance(raw, list) else []
    starts = [t for a in items if (t := read_time(a.get("startsAt")))]
    ends = [t for a in items if (t := read_time(a.get("endsAt")))]
    status = str(alert.get("status") or (items[0].get("status") if items else "") or "firing")
    return [
        AlertSeen(
            status, min(starts, default=None), max(ends, default=None), alert_summary(alert), record
        )
    ]


def verdicts_of(record: Record) -> list[Verdict]:
    return [
        Verdict(
            read_time(r.get("now")) or record.started_at,
            str(r.get("verdict", "")),
            str(r.get("reason", "")),
            number(r.get("success_rate")),
            number(r.get("baseline_rate")),
            record.record_id,
        )
        for r in results(record, RECOVERY)
    ]


def _began(records: list[Record], alerts: list[AlertSeen]) -> tuple[datetime, str]:
    """When the failures began, and how that is known."""
    found = [
        (t, BEGAN_FROM["declaration"])
        for r in records
        for d in results(r, DECLARATION)
        if (t := read_time(d.get("incident_start")))
    ]
    found += [(a.starts_at, BEGAN_FROM["alert"]) for a in alerts if a.starts_at]
    return min(found, default=(records[0].started_at, BEGAN_FROM["record"]))


# Mitigations -----------------------------------------------------------------------------
def _mitigations(records: list[Record], began: datetime) -> list[Mitigation]:
    """Applied mitigations, oldest first: what the records show as applied
    (:class:`~exportnb.record.facts.RecordFacts`: the journal, else the plan's ``applied``), each
    once; for records from before the journal was recorded, what the platform showed."""
    shown = [r for r in records if any(results(r, kind) for kind in JOURNAL_KINDS)]
    found = _applied(records)
    if not shown:
        seen = {(m.action, m.at) for m in found}
        found += [m for m in _seen_on_platform(records, began) if (m.action, m.at) not in seen]
    return sorted(found, key=lambda m: m.at)


def _applied(records: list[Record]) -> list[Mitigation]:
    """Each mitigation once, though every later record shows it again (by key; a plan's
    ``applied`` without a key by action), as the first record that shows it has it."""
    found: dict[str, Mitigation] = {}
    for record in records:
        for done in RecordFacts.of(record).mitigations:
            if done.at is None:
                continue
            name = done.key or f"{done.source}:{done.action}:{done.seq}"
            found.setdefault(
                name,
                Mitigation(
                    done.at,
                    done.operator,
                    done.action,
                    dict(done.params),
                    done.source,
                    done.key,
                    record.record_id,
                ),
            )
    return list(found.values())


def _seen_on_platform(records: list[Record], began: datetime) -> list[Mitigation]:
    found: dict[tuple[str, str, datetime], Mitigation] = {}
    for record in records:
        for recovery in results(record, RECOVERY):
            for seen in _flags_set(recovery, began) + _chunk_changes(recovery, began):
                key = (seen.action, params_text(dict(sorted(seen.params.items()))), seen.at)
                found.setdefault(key, replace(seen, record_id=record.record_id))
    return list(found.values())


def _flags_set(recovery: Mapping[str, Any], began: datetime) -> list[Mitigation]:
    found = []
    for flag in (recovery.get("fallback"), recovery.get("bulk_pause")):
        if not isinstance(flag, dict):
            continue
        at, action = read_time(flag.get("set_at")), registry.setting(str(flag.get("key")))
        if action is not None and at is not None and at >= began:
            params = action.params_from_flag(flag.get("value"))
            found.append(
                Mitigation(at, str(flag.get("set_by", "")), action.name, params, "platform")
            )
    return found


def _chunk_changes(recovery: Mapping[str, Any], began: datetime) -> list[Mitigation]:
    found = []
    for change in recovery.get("chunk_changes") or []:
        at = read_time(change.get("changed_at")) if isinstance(change, dict) else None
        if at is not None and at >= began:
            params = {"job_ids": [change.get("job_id")], "chunk_size": change.get("new")}
            found.append(
                Mitigation(at, str(change.get("changed_by", "")), "chunk-size", params, "platform")
            )
    return found


def _journal_ok(records: list[Record]) -> bool | None:
    flags = [
        bool(r.get("chain_ok"))
        for rec in records
        for kind in JOURNAL_KINDS
        for r in results(rec, kind)
    ]
    return all(flags) if flags else None


def params_text(params: Mapping[str, Any]) -> str:
    """``bucket=exports-fallback, ttl=1800``; long lists are cut after three items."""

    def shown(value: Any) -> str:
        if isinstance(value, list):
            return ", ".join(map(str, value[:3])) + (" …" if len(value) > 3 else "")
        return str(value)

    return ", ".join(f"{k}={shown(v)}" for k, v in params.items())


# Times and events ---------------------------------------------------------------------------
def _times(
    records: list[Record],
    alerts: list[AlertSeen],
    verdicts: list[Verdict],
    mitigations: list[Mitigation],
    began: datetime,
) -> Times:
    detected = min([a.starts_at for a in alerts if a.starts_at] + [records[0].started_at])
    mitigated = mitigations[0].at if mitigations else None
    resolved = [v.at for v in verdicts if v.verdict == RECOVERED]
    resolved += [t for a in alerts if (t := a.resolved_at)]
    recovered = min(resolved, default=None)

    def since(when: datetime | None) -> float | None:
        return None if when is None else (when - began).total_seconds()

    return Times(
        began, detected, mitigated, recovered, since(detected), since(mitigated), since(recovered)
    )


def _events(
    records: list[Record],
    alerts: list[AlertSeen],
    verdicts: list[Verdict],
    mitigations: list[Mitigation],
    times: Times,
    began: tuple[datetime, str],
) -> list[Event]:
    events = [Event(began[0], "start", began[1])]
    firing = [a for a in alerts if a.starts_at]
    if firing:
        first = min(firing, key=lambda a: a.starts_at or began[0])
        events.append(
            Event(
                first.starts_at or began[0],
                "alert",
                f"Alert fired: {first.name}",
                record_id=first.record.record_id,
            )
        )
    for n, r in enumerate(records, start=1):
        what = "First record" if n == 1 else f"Record v{n}"
        events.append(Event(r.started_at, "record", f"{what}: {r.status}", r.operator, r.record_id))
    events += [
        Event(m.at, "mitigation", f"Mitigation applied: {m.label}", m.operator, m.record_id)
        for m in mitigations
    ]
    events += [
        Event(
            v.at,
            "verdict",
            f"Recovery verdict: {v.verdict.replace('_', ' ')}",
            record_id=v.record_id,
        )
        for v in verdicts
    ]
    if times.recovered_at is not None:
        events.append(_resolution(times.recovered_at, alerts, verdicts))
    return sorted(events, key=lambda e: (e.at, EVENT_KINDS.index(e.kind)))


def _resolution(at: datetime, alerts: list[AlertSeen], verdicts: list[Verdict]) -> Event:
    verdict = next((v for v in verdicts if v.verdict == RECOVERED and v.at == at), None)
    if verdict is not None:
        return Event(
            at,
            "resolution",
            f"Resolved: success rate back to baseline ({verdict.reason})",
            record_id=verdict.record_id,
        )
    alert = next(a for a in alerts if a.resolved_at == at)
    return Event(
        at,
        "resolution",
        f"Resolved: the alert resolved ({alert.name})",
        record_id=alert.record.record_id,
    )
