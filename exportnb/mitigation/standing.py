"""What an incident changed and has not undone: the changes a revert would undo now.

Read from the incident's journal: the changes of every successful result of a
mitigation that is :attr:`~exportnb.mitigation.registry.Mitigation.revertible` (retries
aside: a retry is not undone), less those a ``revert`` entry names as undone already.
"""

from __future__ import annotations

from pathlib import Path

from exportnb.core import codec
from exportnb.mitigation import registry
from exportnb.mitigation.journal import Journal
from exportnb.mitigation.model import Change, Standing


def standing(journal: Journal) -> list[Standing]:
    """The changes of the incident that a revert undoes and no revert has undone yet."""
    entries = journal.entries()
    undone = {c for e in entries if e.kind == "revert" for c in e.detail.get("reverts", [])}
    found = []
    for e in entries:
        if e.kind != "result" or not _revertible(e.action):
            continue
        for change in codec.decode(list[Change], e.detail.get("changes", [])):
            change_id = f"{e.seq}:{change.kind}:{change.target}"
            if change.kind != "retry" and change_id not in undone:
                found.append(Standing(change_id, e.action, change))
    return found


def standing_changes(incident: str, *, home: Path | None = None) -> list[Standing]:
    """What a revert of ``incident`` would undo now (its changes not reverted yet)."""
    return standing(Journal(incident, home=home))


def _revertible(action: str) -> bool:
    mitigation = registry.find(action)
    return mitigation is not None and mitigation.revertible
