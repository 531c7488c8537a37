"""A finished run on the terminal: what ``exportnb run`` and ``exportnb demo`` print."""

from __future__ import annotations

import sys
from typing import Any

import click

from exportnb.core import codec
from exportnb.core.console import echo_json
from exportnb.record.model import HTML, METADATA, NOTEBOOK, Record
from exportnb.run import runner


def summary(record: Record) -> dict[str, Any]:
    """A finished run as the ``--json`` output of ``exportnb run`` and ``demo`` gives it."""
    return {
        "record_id": record.record_id,
        "incident_id": record.incident_id,
        "status": record.status,
        "exit_code": runner.exit_code(record),
        "duration_seconds": record.duration_seconds,
        "findings": record.severity_counts(),
        "error": codec.encode(record.error),
        "location": record.location,
        "notebook": record.path(NOTEBOOK),
        "html": record.path(HTML),
        "record": record.path(METADATA),
    }


def show(record: Record) -> None:
    """A finished run for people: status, duration, findings and where its files are."""
    counts = ", ".join(f"{n} {severity}" for severity, n in record.severity_counts().items())
    status = record.status
    if record.error:
        status += f" at {record.error.describe()}"
    click.echo(f"Record {record.record_id}")
    click.echo(f"  status:    {status}")
    click.echo(f"  duration:  {record.duration_seconds:.1f}s")
    click.echo(f"  findings:  {counts}")
    click.echo(f"  notebook:  {record.path(NOTEBOOK)}")
    click.echo(f"  html:      {record.path(HTML)}")


def finish(record: Record, as_json: bool) -> None:
    """Print the run, then exit with its code (0 succeeded, 1 the notebook failed)."""
    if as_json:
        echo_json(summary(record))
    else:
        show(record)
    sys.exit(runner.exit_code(record))
