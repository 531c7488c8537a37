"""``exportnb run``, ``demo`` and ``investigate``: notebooks in, records out (``exportnb
archive`` reads them: :mod:`exportnb.cli.archive`).

Exit codes: 0 the notebook succeeded; 1 it failed (its record is archived); 2 invalid
input (nothing ran); 3 no such record; 4 the kernel or JupyterLab could not start;
5 the sandbox is not running; 6 the archive could not take or give a record.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from exportnb.core.console import handles_errors
from exportnb.platform.registry import local_environment
from exportnb.run import parameters, report, runner
from exportnb.run.lab import Lab

F = Callable[..., Any]


def _incident_options(func: F) -> F:
    """The options that say what to run: incident, jobs, alert, parameters, notebook."""
    options = [
        click.option(
            "--incident",
            "incident_id",
            metavar="ID",
            help="Incident ID (default INC-<UTC timestamp>).",
        ),
        click.option(
            "--job-id",
            "job_ids",
            multiple=True,
            metavar="ID",
            help="A failing or customer-reported job ID (repeatable).",
        ),
        click.option(
            "--alert",
            type=click.Path(dir_okay=False, allow_dash=True),
            help="A JSON file (Alertmanager webhook payload); '-' reads stdin.",
        ),
        click.option(
            "-p",
            "--parameter",
            "assignments",
            nargs=2,
            multiple=True,
            metavar="NAME VALUE",
            help="A notebook parameter; VALUE is JSON when it parses, else a string.",
        ),
        click.option(
            "--notebook",
            type=click.Path(dir_okay=False),
            help="The notebook to run (default: the incident template).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _given(
    notebook: str | None,
    incident_id: str | None,
    job_ids: tuple[str, ...],
    alert: str | None,
    assignments: tuple[tuple[str, str], ...],
) -> dict[str, Any]:
    """The arguments of runner.plan, from the options; InvalidInput before anything runs."""
    path = Path(notebook) if notebook else runner.default_template()
    known = parameters.declared(path)
    return {
        "notebook": path,
        "incident_id": incident_id,
        "job_ids": list(job_ids),
        "alert": parameters.read_alert("/dev/stdin" if alert == "-" else alert) if alert else None,
        "parameters": parameters.parse_assignments(assignments, known),
    }


@click.command()
@_incident_options
@click.option("--archive", metavar="URL", help="Archive: a folder or s3://bucket/prefix.")
@click.option("--cell-timeout", type=float, metavar="SECONDS", help="Fail a cell that runs longer.")
@click.option("--hide-input", is_flag=True, help="Hide code cells in the HTML.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON (no progress).")
@handles_errors
def run(
    archive: str | None, cell_timeout: float | None, hide_input: bool, as_json: bool, **given: Any
) -> None:
    """Run a notebook with validated parameters and archive its record, failed or not.

    Exit code 0 when the notebook succeeded, 1 when it failed (the record is archived
    all the same), 2 for invalid input (nothing ran), 6 when the archive refused it.
    """
    with runner.Kernel.start(runner.KERNEL) as kernel:  # boots while the input is checked
        record = runner.run(
            **_given(**given),
            archive=archive,
            cell_timeout=cell_timeout,
            progress=not as_json,
            hide_input=hide_input,
            kernel=kernel,
        )
    report.finish(record, as_json)


@click.command()
@_incident_options
@click.option("--no-browser", is_flag=True, help="Print the URL instead of opening a browser.")
@click.option("--port", type=int, help="JupyterLab's port (default: a free one).")
@handles_errors
def investigate(no_browser: bool, port: int | None, **given: Any) -> None:
    """Prepare the incident notebook in $EXPORTNB_HOME/work/<incident>/ and open JupyterLab.

    The notebook gets the parameters (papermill, prepare only; `mode` is "interactive"
    where the notebook declares it) and is not executed. An existing working copy is
    opened as it is. JupyterLab runs until Ctrl-C; its kernels
    see the sandbox's environment when a sandbox is running.
    """
    found = local_environment()
    env, defaults = found if found else ({}, {})
    defaults = {**defaults, "mode": "interactive"}  # where the notebook declares a mode
    target, made = runner.prepare(**_given(**given), defaults=defaults)
    click.echo(("Prepared " if made else "Resuming (already prepared) ") + str(target))
    lab = Lab.start(target, port=port, env=env)
    click.echo(f"JupyterLab: {lab.url}")
    click.echo(f"  log: {lab.log}   stop with Ctrl-C")
    if not no_browser:
        import webbrowser

        webbrowser.open(lab.url)
    try:
        lab.process.wait()
    except KeyboardInterrupt:
        lab.stop()
        click.echo("JupyterLab stopped.")
