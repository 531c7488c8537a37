"""Mitigations: plan, confirm, apply, result -- journaled, applied once, one code path for the
notebook's mitigation panel, ``exportnb mitigate`` and automatic runs::

    p = plan(platform, "INC-7", "fallback-bucket", {"bucket": "exports-fallback", "ttl": "30m"})
    print(describe(p))                            # what changes, how widely, the runbook command
    outcome = apply(platform, p, confirmed=True)  # after the engineer said yes
    outcome.status                                # "applied", "already_applied", "failed", ...

The actions are the :class:`~exportnb.mitigation.registry.Mitigation` objects of
:mod:`exportnb.mitigation.registry`, looked up by name; this module treats every one the
same way and names none of them. Each says what it takes (its canonical parameters), what
it would change (its plan, from the platform) and how it is done (its apply).

* The **idempotency key** is the sha256 of the canonical JSON of incident, action and
  canonical parameters (:func:`idempotency_key`): ``50MB`` and ``50000000`` or two orders of
  the same job IDs make one key. A key with a successful result in the incident's journal
  is never applied again: :func:`apply` returns the recorded result with
  ``already_applied`` and journals a ``skip``. A failed result does not count: it can be
  tried again. ``round=2`` makes a new key, to do the same thing again on purpose.
* :func:`apply` holds the journal's lock from the check to the result, so that two
  processes (or a double click) apply a key once. Under the lock it plans again and
  refuses (PreconditionFailed, nothing changed) when the plan no longer holds.
* Policy (:mod:`exportnb.mitigation.policy`): ``mode="interactive"`` needs ``confirmed=True``;
  ``mode="auto"`` applies only what ``[policy] auto_apply`` names and shows the plan for
  the rest. :func:`auto_apply` does that for an assessment's recommendations.
* Every plan, apply, result, revert and skip is a journal entry (:mod:`exportnb.mitigation.journal`)
  and a note in the platform's audit log; each platform change carries
  ``reason="<incident> <action> <key[:12]>"``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from exportnb.core import codec
from exportnb.core.config import Settings
from exportnb.core.errors import ExportnbError, PreconditionFailed
from exportnb.core.findings import Finding
from exportnb.mitigation import registry
from exportnb.mitigation.journal import FAILED, SUCCEEDED, Journal, JournalEntry
from exportnb.mitigation.model import (
    ALREADY_APPLIED,
    APPLIED,
    FAILED_STATUS,
    STATUSES,
    By,
    Change,
    Context,
    Draft,
    Outcome,
    Plan,
    Progress,
    Result,
)
from exportnb.mitigation.policy import Decision, decide
from exportnb.mitigation.retries import RETRY_REPEAT_ERRORS, RetryJob, RetryWatch, watch_retry
from exportnb.mitigation.standing import standing, standing_changes
from exportnb.platform import Platform, current_actor

if TYPE_CHECKING:
    from pathlib import Path

    from exportnb.mitigation.assessment import Assessment

log = logging.getLogger(__name__)
__all__ = [
    "RETRY_REPEAT_ERRORS",
    "STATUSES",
    "Outcome",
    "Plan",
    "Result",
    "RetryJob",
    "RetryWatch",
    "apply",
    "auto_apply",
    "decline",
    "describe",
    "idempotency_key",
    "plan",
    "standing",
    "standing_changes",
    "watch_retry",
]
STEP = "mitigations"
SEVERITY = {
    APPLIED: "info",
    ALREADY_APPLIED: "info",
    "not_allowed": "info",
    "cancelled": "info",
    FAILED_STATUS: "warning",
    "refused": "warning",
}
NOTE_SUMMARY = ("error", "summary", "why", "target")
NOTE_LIMIT = 200
PLAN_DETAIL = ("summary", "changes", "jobs", "tenants", "buckets", "commands", "warnings", "undo")


# Keys and plans -------------------------------------------------------------------
def idempotency_key(incident: str, action: str, params: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of incident, action and canonical parameters."""
    body = {"incident": incident, "action": action, "params": codec.encode(dict(params))}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _Desk:
    """Where one operator acts: the platform, the incident's journal, the settings."""

    platform: Platform | None
    journal: Journal
    operator: str
    settings: Settings
    quiet: bool = False  # plans only: the same decision is in the journal already

    @classmethod
    def of(
        cls,
        platform: Platform | None,
        incident: str,
        operator: str | None,
        settings: Settings | None,
        home: Path | None,
        quiet: bool = False,
    ) -> _Desk:
        journal = Journal(incident, home=home)
        return cls(
            platform, journal, operator or current_actor(), settings or Settings.load(), quiet
        )

    def context(self, platform: Platform) -> Context:
        return Context(platform, self.settings, self.journal)

    def record(
        self, kind: str, plan: Plan, outcome: str, detail: Mapping[str, Any]
    ) -> JournalEntry:
        """Append to the journal, then the entry (its summary and sha256) to the audit log."""
        how: dict[str, Any] = {"operator": self.operator, "outcome": outcome, "detail": detail}
        entry = self.journal.append(
            kind, action=plan.action, key=plan.key, params=plan.params, **how
        )
        if self.platform is not None:
            incident = self.journal.incident
            note: dict[str, Any] = {
                "actor": self.operator,
                "action": f"mitigation.{kind}",
                "target": f"{incident}/{plan.action}",
                "detail": audit_note(entry),
                "reason": f"{incident} {plan.action} {plan.key[:12]}",
            }
            try:
                self.platform.note(**note)
            except ExportnbError as exc:
                log.warning("journal entry %s is not in the audit log: %s", entry.seq, exc)
        return entry

    def record_plan(self, plan: Plan, outcome: str, detail: Mapping[str, Any]) -> None:
        if not self.quiet:
            self.record("plan", plan, outcome, detail)


def audit_note(entry: JournalEntry) -> dict[str, Any]:
    """A journal entry as the platform's audit log holds it: all of it but the bulky
    ``detail``, which becomes a one-line ``summary``; ``sha256`` ties it to the journal."""
    detail = entry.detail
    summary = next((str(detail[k]) for k in NOTE_SUMMARY if detail.get(k)), "")
    note = {k: v for k, v in codec.encode(entry).items() if k not in ("detail", "schema")}
    return {**note, "summary": summary[:NOTE_LIMIT]}


def plan(
    platform: Platform,
    incident: str,
    action: str,
    params: Mapping[str, Any] | None = None,
    *,
    operator: str | None = None,
    settings: Settings | None = None,
    home: Path | None = None,
    journaled: bool = True,
) -> Plan:
    """What ``action`` would change now; journaled. InvalidInput/NotFound/PreconditionFailed
    (journaled as refused) when it cannot run; ``already_applied`` when its key has been.
    ``journaled=False`` only shows the plan (for a decision the journal holds already)."""
    desk = _Desk.of(platform, incident, operator, settings, home, quiet=not journaled)
    mitigation = registry.get(action)
    given = mitigation.params_for(desk.journal, params)
    canonical = mitigation.normalize(given, desk.settings)
    key = idempotency_key(incident, action, canonical)
    done = desk.journal.applied(key)
    if done is not None:
        found = _recorded_plan(incident, action, canonical, key, done, desk.operator)
        desk.record_plan(found, ALREADY_APPLIED, _plan_detail(found))
        return found
    try:
        draft = mitigation.plan(desk.context(platform), canonical)
    except ExportnbError as exc:
        refused = Draft(exc.message, [], [], [], [], [])
        refusal = _plan_of(incident, action, canonical, key, refused, desk.operator)
        desk.record_plan(refusal, "refused", failure(exc))
        raise
    found = _plan_of(incident, action, canonical, key, draft, desk.operator)
    desk.record_plan(found, "planned", _plan_detail(found))
    return found


def _plan_of(
    incident: str,
    action: str,
    params: dict[str, Any],
    key: str,
    draft: Draft,
    operator: str,
    **extra: Any,
) -> Plan:
    copied = {f.name: getattr(draft, f.name) for f in fields(draft)}
    return Plan(
        incident=incident,
        action=action,
        params=params,
        key=key,
        **copied,
        planned_at=datetime.now(UTC),
        planned_by=operator,
        **extra,
    )


def _recorded_plan(
    incident: str, action: str, params: dict[str, Any], key: str, done: JournalEntry, operator: str
) -> Plan:
    result = _result_of(done, already=True)
    when = codec.readable_time(done.at)
    draft = Draft(
        f"Already applied at {when} by {done.operator}: nothing to do.",
        result.changes,
        [],
        [],
        [],
        [],
    )
    return _plan_of(
        incident, action, params, key, draft, operator, already_applied=True, applied=result
    )


def _plan_detail(p: Plan) -> dict[str, Any]:
    return {name: getattr(p, name) for name in PLAN_DETAIL}


# Applying ----------------------------------------------------------------------------
def apply(
    platform: Platform,
    plan: Plan,
    *,
    operator: str | None = None,
    mode: str = "interactive",
    confirmed: bool = False,
    settings: Settings | None = None,
    home: Path | None = None,
) -> Outcome:
    """Apply a plan once. Interactive: only ``confirmed`` (else PreconditionFailed); auto:
    only what policy allows (else status ``not_allowed``, the plan shown instead)."""
    desk = _Desk.of(platform, plan.incident, operator, settings, home)
    decision = decide(plan.action, mode, confirmed=confirmed, settings=desk.settings)
    if not decision.allowed and decision.mode == "interactive":
        raise PreconditionFailed(
            f"{plan.action} for {plan.incident} is not confirmed: show "
            "the plan and confirm it first; nothing was changed"
        )
    with desk.journal.locked():
        done = desk.journal.applied(plan.key)
        if done is not None:
            desk.record("skip", plan, ALREADY_APPLIED, {"result_seq": done.seq})
            message = f"Already applied at {codec.readable_time(done.at)} by {done.operator}."
            return _outcome(plan, ALREADY_APPLIED, message, _result_of(done, already=True))
        if not decision.allowed:
            desk.record(
                "skip", plan, "not_allowed", {"mode": decision.mode, "why": decision.reason}
            )
            return _outcome(plan, "not_allowed", decision.reason)
        fresh = _still_holds(desk, platform, plan)
        return _carry_out(desk, platform, plan, fresh, decision)


def _still_holds(desk: _Desk, platform: Platform, plan: Plan) -> Draft:
    """Plan again under the lock, with what the engineer saw; refuses (journaled) when the
    plan no longer holds."""
    try:
        mitigation = registry.get(plan.action)
        canonical = mitigation.normalize(plan.params, desk.settings)
        if idempotency_key(plan.incident, plan.action, canonical) != plan.key:
            raise PreconditionFailed("the plan does not match its idempotency key; plan again")
        again = mitigation.replan_params(canonical, plan.jobs)
        return mitigation.plan(desk.context(platform), again)
    except ExportnbError as exc:
        desk.record("skip", plan, "refused", failure(exc))
        raise


def _carry_out(
    desk: _Desk, platform: Platform, plan: Plan, fresh: Draft, decision: Decision
) -> Outcome:
    intent = {
        "mode": decision.mode,
        "why": decision.reason,
        "summary": fresh.summary,
        "changes": fresh.changes,
    }
    desk.record("apply", plan, "applying", intent)
    progress, error = Progress(), None
    by = By(desk.operator, f"{plan.incident} {plan.action} {plan.key[:12]}")
    mitigation = registry.get(plan.action)
    try:
        mitigation.apply(desk.context(platform), fresh, plan.params, by, progress)
    except ExportnbError as exc:
        error = exc
    _record_undone(desk, plan, progress)
    detail = {
        "changes": progress.changes,
        "response": progress.response,
        **(failure(error) if error else {}),
    }
    entry = desk.record("result", plan, FAILED if error else SUCCEEDED, detail)
    if error is not None:
        return _outcome(plan, FAILED_STATUS, f"Failed: {error.message}", _result_of(entry))
    return _outcome(plan, APPLIED, f"Applied: {fresh.summary}", _result_of(entry))


def _record_undone(desk: _Desk, plan: Plan, progress: Progress) -> None:
    """A ``revert`` journal entry for each change an apply undid (or left), naming it."""
    for undo, how in progress.undone:
        detail = {
            "reverts": undo.changes,
            "kind": undo.kind,
            "target": undo.target,
            "from": undo.current,
            "to": undo.restore,
            "why": undo.left,
        }
        desk.record("revert", plan, how, detail)


def decline(
    plan: Plan,
    *,
    operator: str | None = None,
    platform: Platform | None = None,
    home: Path | None = None,
) -> Outcome:
    """The engineer said no: journal a ``skip`` (cancelled); nothing is changed."""
    desk = _Desk.of(platform, plan.incident, operator, None, home)
    desk.record("skip", plan, "cancelled", {})
    return _outcome(plan, "cancelled", "Cancelled: nothing was changed.")


def auto_apply(
    platform: Platform,
    incident: str,
    assessment: Assessment,
    *,
    operator: str | None = None,
    settings: Settings | None = None,
    home: Path | None = None,
) -> list[Outcome]:
    """For an automatic run: apply the recommended mitigations that ``[policy] auto_apply``
    allows, each once; plans only for the others. Recommendations that are not mitigations
    (re-export, notify-tenants, ...) are left to people and not listed."""
    settings = settings or Settings.load()
    how: dict[str, Any] = {"operator": operator, "settings": settings, "home": home}
    journal = Journal(incident, home=home)
    outcomes = []
    for rec in assessment.recommendations:
        mitigation = registry.find(rec.action)
        if mitigation is None or mitigation.undoes:
            continue  # not a mitigation (re-export, notify-tenants...), or a revert
        try:
            decision = decide(rec.action, "auto", settings=settings)
            if not decision.allowed and _declined_before(journal, rec.action, rec.params, settings):
                found = plan(platform, incident, rec.action, rec.params, journaled=False, **how)
                outcomes.append(_outcome(found, "not_allowed", decision.reason))
                continue
            found = plan(platform, incident, rec.action, rec.params, **how)
            outcomes.append(apply(platform, found, mode="auto", **how))
        except ExportnbError as exc:
            finding = _finding("refused", rec.action, exc.message)
            outcomes.append(Outcome(rec.action, "", "refused", exc.message, findings=[finding]))
    return outcomes


def _declined_before(
    journal: Journal, action: str, params: Mapping[str, Any], settings: Settings
) -> bool:
    """Policy refused this very action (same key) before: the journal says so once."""
    try:
        canonical = registry.get(action).normalize(params, settings)
        key = idempotency_key(journal.incident, action, canonical)
    except ExportnbError:
        return False
    return any(e.key == key and e.outcome == "not_allowed" for e in journal.entries())


# Results -----------------------------------------------------------------------------
def _result_of(entry: JournalEntry, *, already: bool = False) -> Result:
    detail = entry.detail
    changes = codec.decode(list[Change], detail.get("changes", []))
    return Result(
        entry.ok,
        entry.at,
        entry.operator,
        changes,
        detail.get("response"),
        detail.get("error"),
        detail.get("error_type"),
        int(detail.get("exit_code", 0)),
        already_applied=already,
        seq=entry.seq,
    )


def _outcome(plan: Plan, status: str, message: str, result: Result | None = None) -> Outcome:
    findings = [_finding(status, plan.action, message)]
    return Outcome(plan.action, plan.key, status, message, plan, result, findings)


def failure(exc: ExportnbError) -> dict[str, Any]:
    """An error as a journal entry's detail holds it."""
    return {"error": exc.message, "error_type": type(exc).__name__, "exit_code": exc.exit_code}


def _finding(status: str, action: str, message: str) -> Finding:
    evidence = {"action": action, "status": status}
    return Finding(f"mitigation_{status}", SEVERITY[status], f"{action}: {message}", STEP, evidence)


# Showing a plan -----------------------------------------------------------------------
def describe(plan: Plan) -> str:
    """A plan as text for people: the same words in the panel and at the CLI prompt."""
    reach = ", ".join(f"{n} {what}" for what, n in plan.reach.items())
    lines = [f"{plan.action} for {plan.incident} (key {plan.key[:12]})", f"  {plan.summary}"]
    if not plan.already_applied:
        lines.append(f"  Touches: {reach}")
    lines += [f"  Change: {_change_words(c)}" for c in plan.changes[:20]]
    if len(plan.changes) > 20:
        lines.append(f"  ... and {len(plan.changes) - 20} more change(s)")
    lines += [f"  Runbook: {command}" for command in plan.commands]
    lines += [f"  Warning: {warning}" for warning in plan.warnings]
    return "\n".join(lines)


def _change_words(change: Change) -> str:
    def shown(value: Any) -> str:
        if isinstance(value, dict):
            return str(value.get("value", value.get("status")))
        return "(unset)" if value is None else str(value)

    return f"{change.kind} {change.target}: {shown(change.old)} -> {shown(change.new)}"
