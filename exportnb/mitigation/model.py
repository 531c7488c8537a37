"""The words of mitigations: what an action changes, its plan, its result and its outcome.

Every module of :mod:`exportnb.mitigation` speaks these; none of them knows any action.

* :class:`Change` -- one thing an action changes on the platform, from old to new.
* :class:`Draft` -- what an action's planner found: the summary, the changes, the jobs,
  tenants and buckets they reach, the runbook commands, warnings (and, for an action that
  undoes others, the :class:`Undo` of each target).
* :class:`Progress` -- what an applier has done so far; kept when it fails half-way.
* :class:`Standing` -- a change of the incident that no revert has undone yet.
* :class:`Context` and :class:`By` -- where an action is planned or applied (platform,
  settings, the incident's journal) and who acts, for what reason.
* :class:`Plan`, :class:`Result` and :class:`Outcome` -- what the lifecycle hands back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from exportnb.core.config import Settings
from exportnb.core.findings import Finding
from exportnb.mitigation.journal import Journal
from exportnb.platform import Platform

APPLIED, FAILED_STATUS, ALREADY_APPLIED = "applied", "failed", "already_applied"
STATUSES = (APPLIED, FAILED_STATUS, ALREADY_APPLIED, "not_allowed", "cancelled", "refused")
"""How an apply (or the decision not to apply) can end."""


@dataclass(frozen=True)
class Change:
    """One thing an action changes: ``kind`` flag|bulk_pause|chunk_size|retry, from old to new."""

    kind: str
    target: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Undo:
    """How a revert undoes this incident's changes of one target (``left``: why not)."""

    changes: list[str]  # IDs of the changes undone: "<result seq>:<kind>:<target>"
    kind: str
    target: str
    current: Any
    restore: Any
    left: str = ""


@dataclass(frozen=True)
class Draft:
    """What a planner found on the platform."""

    summary: str
    changes: list[Change]
    jobs: list[str]
    tenants: list[str]
    buckets: list[str]
    commands: list[str]
    warnings: list[str] = field(default_factory=list)
    undo: list[Undo] = field(default_factory=list)


@dataclass
class Progress:
    """What an applier has done so far (kept when it fails half-way)."""

    changes: list[Change] = field(default_factory=list)
    undone: list[tuple[Undo, str]] = field(default_factory=list)  # (undo, restored|left)
    response: Any = None


@dataclass(frozen=True)
class Standing:
    """A change this incident made and has not undone: ``id`` is ``<seq>:<kind>:<target>``."""

    id: str
    action: str
    change: Change


@dataclass(frozen=True)
class Context:
    """Where an action is planned and applied: the platform, the settings, the incident's
    journal (an action that undoes others reads what the incident changed there)."""

    platform: Platform
    settings: Settings
    journal: Journal


@dataclass(frozen=True)
class By:
    """Who changes the platform and why: every platform call of an apply carries both."""

    actor: str
    reason: str


@dataclass(frozen=True)
class Result:
    """What an apply did: the changes made, the platform's answer, or the error."""

    ok: bool
    at: datetime
    operator: str
    changes: list[Change]
    response: Any  # the platform's answer, as JSON (RetryResult, Flag, ChunkSizeChange...)
    error: str | None = None
    error_type: str | None = None
    exit_code: int = 0
    already_applied: bool = False
    seq: int = 0  # the journal entry that holds this result


@dataclass(frozen=True)
class Plan:
    """What an action would change and how widely, before anything is changed."""

    incident: str
    action: str
    params: dict[str, Any]
    key: str
    summary: str
    changes: list[Change]
    jobs: list[str]
    tenants: list[str]
    buckets: list[str]
    commands: list[str]
    warnings: list[str]
    planned_at: datetime
    planned_by: str
    already_applied: bool = False
    applied: Result | None = None  # the recorded result, when already applied
    undo: list[Undo] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def command(self) -> str:
        """The equivalent runbook command(s), one per line."""
        return "\n".join(self.commands)

    @property
    def reach(self) -> dict[str, int]:
        return {"jobs": len(self.jobs), "tenants": len(self.tenants), "buckets": len(self.buckets)}


@dataclass(frozen=True)
class Outcome:
    """How one apply (or the decision not to apply) ended; ``status`` is one of STATUSES."""

    action: str
    key: str
    status: str
    message: str
    plan: Plan | None = None
    result: Result | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in (APPLIED, ALREADY_APPLIED)

    @property
    def already_applied(self) -> bool:
        return self.status == ALREADY_APPLIED

    @property
    def retried(self) -> list[str]:
        """The jobs a retry queued again (for :func:`~exportnb.mitigation.retries.watch_retry`)."""
        return [c.target for c in self.result.changes if c.kind == "retry"] if self.result else []

    @property
    def attempts_before(self) -> dict[str, int]:
        changes = self.result.changes if self.result else []
        return {
            c.target: int(c.old.get("attempts", 0))
            for c in changes
            if c.kind == "retry" and isinstance(c.old, dict)
        }
