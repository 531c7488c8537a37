"""Build ``postmortem_review.ipynb``, the postmortem review notebook, from this readable source,
and execute it on an archive built from real runs.

    .venv/bin/python notebooks/build_review.py          # drill on a fresh sandbox, execute, write
    .venv/bin/python notebooks/build_review.py --check  # exit 1 if the cells are out of date

The notebook takes an incident ID and an archive URL (papermill parameters) and only calls
``exportnb.review.model`` and renders. Writing it executes it, with nbclient, on the archive a
*drill* leaves (:func:`drill`): on a sandbox of its own in a temporary ``EXPORTNB_HOME``
(the default scenario, the throttled primary bucket), the incident notebook runs for a
firing alert, the fallback bucket is applied through ``exportnb.mitigation.lifecycle`` (plan,
confirm, apply, journaled), and the incident notebook runs again for the resolved alert.
The cells whose output nbval compares (``notebooks/conftest.py`` makes the same drill) are
tagged ``nbval-check-output``: their text is the same from drill to drill once times, IDs
and durations are sanitized (``sanitize.cfg``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "postmortem_review.ipynb"
DRILL_INCIDENT = "INC-DRILL"
DRILL_OPERATOR = "drill-operator"
ALERT_LEAD = timedelta(minutes=5)
"""How long before the first run the drill's alert started firing."""
CHECKED = "nbval-check-output"

TITLE = """\
# Postmortem review

This notebook rebuilds an export incident from its archived records, for the postmortem:
every record of the incident, the timeline (the alert, the first record, each mitigation
with its operator, the recovery verdicts and the resolution), the success rate across the
whole incident against the baseline, the affected tenants and files, the corrective
actions, the times to detect, to mitigate and to recover, and a Markdown summary to paste
into the postmortem document. It ends with the incidents of the last `days` days: counts,
MTTR and the most common findings.

Nothing is re-run and no platform is asked: everything comes from the records'
`record.json`. Run it with papermill against any archive:

```sh
papermill notebooks/postmortem_review.ipynb review.ipynb -p incident_id INC-42 -p archive s3://acme-incidents/exportnb
```

With no `incident_id` it reviews the newest incident in the archive. On a fresh sandbox
(Binder, say), make one first: `exportnb demo`, a mitigation (`exportnb mitigate ...`) and
another `exportnb run --incident <the same ID>`."""

PARAMETERS = """\
incident_id = ""  # the incident to review, e.g. INC-42; empty: the newest in the archive
archive = ""  # a folder or s3://bucket/prefix; empty: $EXPORTNB_ARCHIVE, else the default
days = 30  # the cross-incident review covers the incidents of this many days
until = ""  # ISO-8601 end of that window; empty: now"""

SETUP = """\
from exportnb.notebook.display import show_chart
from exportnb.review.model import across_incidents, incident_review, last_days, latest_incident
from exportnb.review.charts import incident_rate_chart
from exportnb.review.views import show

review = incident_review(archive, incident_id or latest_incident(archive))
show("records", review)"""

# (kind, source, checked): "md" cells are Markdown, "code" cells are code; nbval compares
# the output of the checked ones.
CELLS: list[tuple[str, str, bool]] = [
    ("md", TITLE, False),
    ("parameters", PARAMETERS, False),
    (
        "md",
        """\
## The records

Every record of the incident, oldest first: each run of the incident notebook (an alert,
an update every 15 minutes, an engineer finalizing an investigation) is a version.""",
        False,
    ),
    ("code", SETUP, False),
    (
        "md",
        """\
## Timeline

When the failures began, the alert, each record, each mitigation applied and who applied
it (from the mitigation journal the records carry), each recovery verdict, and the
resolution: the first `recovered` verdict, or the alert resolving.""",
        False,
    ),
    ("code", 'show("timeline", review)', True),
    (
        "md",
        """\
## Success rate across the incident

The success rate per minute, from every record's detection and recovery data (where
records overlap, the latest one's count), against the baseline each record judged it by,
with the threshold and the incident's events marked.""",
        False,
    ),
    ("code", "show_chart(incident_rate_chart(review))", True),
    (
        "md",
        """\
## Affected tenants and files""",
        False,
    ),
    ("code", 'show("impact", review)', False),
    (
        "md",
        """\
## Corrective actions

The mitigations applied, the changes in the platform's audit log, and the follow-ups: what
the latest assessment recommends that was not applied.""",
        False,
    ),
    ("code", 'show("actions", review)', False),
    (
        "md",
        """\
## Times to detect, mitigate and recover

Each is counted from when the failures began: to the first signal (the alert, or the
first record), to the first mitigation applied, and to the resolution.""",
        False,
    ),
    ("code", 'show("times", review)', True),
    (
        "md",
        """\
## Summary for the postmortem document

Copy this Markdown into the postmortem.""",
        False,
    ),
    ("code", 'show("summary", review)', False),
    (
        "md",
        """\
## Across incidents

The incidents whose first record started in the last `days` days: how many, how many are
resolved, the mean times to detect, mitigate and recover (MTTR), and the most common
findings.""",
        False,
    ),
    (
        "code",
        """\
portfolio = across_incidents(archive, *last_days(days, until))
show("portfolio", portfolio)""",
        False,
    ),
]


def build() -> nbformat.NotebookNode:
    """The notebook without outputs, with stable cell IDs and the nbval tags."""
    cells = []
    for index, (kind, source, checked) in enumerate(CELLS):
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        tags = ["parameters"] if kind == "parameters" else []
        cell.metadata["tags"] = [*tags, CHECKED] if checked else tags
        cell["id"] = f"cell-{index:02d}"
        cells.append(cell)
    notebook = new_notebook(cells=cells)
    notebook.metadata.update(
        {
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            },
            "language_info": {"name": "python"},
        }
    )
    nbformat.validate(notebook)
    return notebook


def sources(nb: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
    """What the builder decides about each cell: type, source and tags (not outputs)."""
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


# The drill ---------------------------------------------------------------------------------
def alert(status: str, starts_at: datetime, ends_at: datetime | None = None) -> dict[str, Any]:
    """An Alertmanager webhook of the runbook's failure-rate alert."""
    from exportnb.core.codec import format_time

    item = {
        "status": status,
        "labels": {"alertname": "ExportFailureRate", "severity": "page"},
        "annotations": {"summary": "Export job failure rate above 2% over 10 minutes"},
        "startsAt": format_time(starts_at),
        "endsAt": format_time(ends_at) if ends_at else "0001-01-01T00:00:00Z",
    }
    return {
        "version": "4",
        "status": status,
        "receiver": "exportnb",
        "alerts": [item],
        "commonLabels": item["labels"],
        "commonAnnotations": item["annotations"],
    }


def drill(
    archive: str, *, incident_id: str = DRILL_INCIDENT, operator: str = DRILL_OPERATOR
) -> list[Any]:
    """Run an incident on the sandbox of $EXPORTNB_HOME into ``archive``: the incident
    notebook for a firing alert, the fallback bucket applied (journaled), the notebook
    again for the resolved alert. Returns the two records. The incident must be new there
    (its journal empty), so that the mitigation is applied now."""
    from exportnb.core.errors import PreconditionFailed
    from exportnb.mitigation import lifecycle as mitigations
    from exportnb.mitigation.journal import read_journal
    from exportnb.platform.registry import local_environment
    from exportnb.run.runner import run
    from exportnb.sandbox.platform import SandboxPlatform

    found = local_environment()
    if found is None:
        raise PreconditionFailed("no sandbox runs: `exportnb sandbox up` first")
    if read_journal(incident_id):
        raise PreconditionFailed(f"{incident_id} has a journal already: drill in a new home")
    env, defaults = found
    began = datetime.now(UTC) - ALERT_LEAD
    given = {
        "parameters": {"comms_lead": "Dana Reyes"},
        "operator": operator,
        "env": env,
        "defaults": defaults,
        "archive": archive,
        "incident_id": incident_id,
    }
    first = run(alert=alert("firing", began), **given)
    platform = SandboxPlatform()
    planned = mitigations.plan(
        platform,
        incident_id,
        "fallback-bucket",
        {"bucket": env["EXPORT_FALLBACK_BUCKET"], "ttl": "30m"},
        operator=operator,
    )
    outcome = mitigations.apply(platform, planned, confirmed=True, operator=operator)
    if outcome.status != "applied":
        raise PreconditionFailed(f"the drill's mitigation was not applied: {outcome.message}")
    second = run(alert=alert("resolved", began, datetime.now(UTC)), **given)
    return [first, second]


@contextmanager
def sandbox(scenario: str = "default") -> Iterator[Path]:
    """A sandbox of its own in a temporary EXPORTNB_HOME (set for the duration)."""
    from exportnb.sandbox import control

    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="exportnb-review-") as folder:
        home = Path(folder)
        os.environ["EXPORTNB_HOME"] = str(home)
        os.environ.pop("AWS_ENDPOINT_URL", None)
        try:
            control.up(scenario, home=home)
            yield home
        finally:
            control.down(home=home)
            os.environ.clear()
            os.environ.update(saved)


def execute(nb: nbformat.NotebookNode, archive: str, timeout: float = 300) -> None:
    """Execute ``nb`` in place on a fresh kernel that reads ``archive`` ($EXPORTNB_ARCHIVE)."""
    from nbclient import NotebookClient

    saved = os.environ.get("EXPORTNB_ARCHIVE")
    os.environ["EXPORTNB_ARCHIVE"] = archive
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3").execute()
    finally:
        if saved is None:
            os.environ.pop("EXPORTNB_ARCHIVE", None)
        else:
            os.environ["EXPORTNB_ARCHIVE"] = saved


def main(argv: list[str]) -> int:
    if "--check" in argv:
        current = nbformat.read(NOTEBOOK, as_version=4) if NOTEBOOK.exists() else None
        if current is None or sources(current) != sources(build()):
            print(f"{NOTEBOOK} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    nb = build()
    with sandbox() as home:
        archive = str(home / "archive")
        failed = [r.record_id for r in drill(archive) if r.status != "succeeded"]
        if failed:
            print(f"Error: the drill's incident runs failed: {', '.join(failed)}")
            return 1
        execute(nb, archive)
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
