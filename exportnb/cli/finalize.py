"""``exportnb finalize INCIDENT``: the incident notebook once more, unattended, into the archive.

Exit codes as ``exportnb run``: 0 the notebook succeeded; 1 it failed (its record is
archived all the same); 2 invalid input; 3 unknown incident (no working copy, no record);
4 the kernel could not start; 6 the archive could not take the record.
"""

from __future__ import annotations

from typing import Any

import click

from exportnb.core.console import echo_json, handles_errors
from exportnb.record.model import NOTEBOOK
from exportnb.review.timeline import verdicts_of
from exportnb.run import report, runner
from exportnb.run.finalize import finalize as finalize_incident


@click.command()
@click.argument("incident")
@click.option("--notebook", type=click.Path(dir_okay=False), help="Default: the template.")
@click.option("--archive", metavar="URL", help="Archive: a folder or s3://bucket/prefix.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the executed notebook's path and the outcome."
)
@handles_errors
def finalize(incident: str, notebook: str | None, archive: str | None, as_json: bool) -> None:
    """Re-execute INCIDENT's notebook non-interactively with its parameters and archive it.

    The record then shows the incident's whole mitigation journal and the recovery
    verdict now. Nothing already applied is applied again. The parameters come from
    the incident's working copy (exportnb investigate), else its newest record.
    """
    import sys

    record = finalize_incident(incident, notebook=notebook, archive=archive, progress=not as_json)
    if as_json:
        summary: dict[str, Any] = report.summary(record)
        echo_json({"notebook": record.path(NOTEBOOK), "verdict": _verdict(record), **summary})
    else:
        report.show(record)
        click.echo(f"  recovery:  {_verdict(record) or 'not recorded'}")
    sys.exit(runner.exit_code(record))


def _verdict(record: Any) -> str | None:
    """The recovery verdict the finalized run recorded."""
    found = verdicts_of(record)
    return found[-1].verdict if found and found[-1].verdict else None
