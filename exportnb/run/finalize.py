"""Finalize an incident: execute its notebook once more, unattended, into the archive.

During an interactive investigation the journal grows as the engineer applies
mitigations, but the notebook on screen shows the journal as it was when its cell last
ran, and widget output is not part of the record. :func:`finalize` closes that gap: it
runs the incident notebook again with papermill, non-interactively (``mode = "auto"``,
and the runner's kernels see ``EXPORTNB_MODE=auto``), with the incident's own
parameters, and archives the record. That record shows the whole journal as ordinary
cell output and the recovery verdict at the time of finalizing. Re-execution applies
nothing that was applied before: every mitigation is keyed in the journal, and an
unattended run applies only what ``[policy] auto_apply`` allows.

The incident's parameters are, in this order:

1. those of its working copy, ``$EXPORTNB_HOME/work/<incident>/<notebook>``, which
   ``exportnb investigate`` prepared (papermill keeps them in the notebook's metadata);
2. those of the incident's newest record in the archive;

and an incident with neither is unknown (:class:`~exportnb.core.errors.NotFound`). Parameters
that describe one moment or one person are not carried over: ``now`` (the run evaluates
at the time of finalizing), ``mode`` (always ``auto``) and ``operator`` (whoever
finalizes). A sandbox running under ``$EXPORTNB_HOME`` lends its environment, as it does
to ``exportnb investigate``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exportnb.archive.store import open_archive
from exportnb.core import config
from exportnb.core.errors import NotFound, StorageError
from exportnb.core.ids import check_incident_id
from exportnb.platform.registry import local_environment
from exportnb.run import parameters, runner

if TYPE_CHECKING:
    from exportnb.archive.store import Archive
    from exportnb.record.model import Record
    from exportnb.run.runner import Hooks

NOT_CARRIED = frozenset({"now", "mode", "operator", "incident_id"})


def working_copy(incident: str, *, home: Path | None = None) -> Path | None:
    """The notebook ``exportnb investigate`` prepared for ``incident``, if there is one."""
    folder = (home or config.home()) / "work" / check_incident_id(incident)
    found = sorted(folder.glob("*.ipynb")) if folder.is_dir() else []
    return found[0] if found else None


def incident_parameters(
    incident: str, *, home: Path | None = None, archive: str | Archive | None = None
) -> dict[str, Any]:
    """The parameters the incident's notebook runs with again (see the module docstring)."""
    incident = check_incident_id(incident)
    copy = working_copy(incident, home=home)
    if copy is not None:
        return _carried(_papermill_parameters(copy))
    record = latest_record(incident, archive)
    if record is None:
        raise NotFound(
            f"unknown incident {incident}: no working copy under "
            f"{(home or config.home()) / 'work'} and no record in the archive"
        )
    return _carried(record.parameters)


def latest_record(incident: str, archive: str | Archive | None = None) -> Record | None:
    """The incident's newest archived record, or None."""
    store = open_archive(archive)
    ids = store.record_ids(incident)
    return store.show(ids[-1]) if ids else None


def _papermill_parameters(notebook: Path) -> dict[str, Any]:
    try:
        doc = json.loads(notebook.read_text(encoding="utf-8"))
        found = doc.get("metadata", {}).get("papermill", {}).get("parameters", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise StorageError(f"cannot read the working copy {notebook}: {exc}") from exc
    return found if isinstance(found, dict) else {}


def _carried(parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in parameters.items() if k not in NOT_CARRIED}


def finalize(
    incident: str,
    *,
    notebook: str | Path | None = None,
    archive: str | Archive | None = None,
    home: Path | None = None,
    operator: str | None = None,
    progress: bool = False,
    hooks: Hooks | None = None,
) -> Record:
    """Execute the incident notebook unattended with the incident's parameters; archive it.

    ``notebook`` defaults to the incident template. Returns the record (failed or not,
    like :func:`exportnb.run.runner.run`); NotFound for an unknown incident.
    """
    given = incident_parameters(incident, home=home, archive=archive)
    path = Path(notebook) if notebook else runner.default_template()
    known = parameters.declared(path)
    given = {k: v for k, v in given.items() if k in known}
    if "mode" in known:
        given["mode"] = "auto"
    found = local_environment(home)
    env, defaults = found if found else ({}, {})
    return runner.run(
        path,
        incident_id=incident,
        parameters=given,
        defaults=defaults,
        env=env,
        archive=archive,
        operator=operator,
        progress=progress,
        hooks=hooks,
    )
