"""``exportnb run``, ``demo`` and ``investigate``: notebooks in, records out (``exportnb
archive`` reads them: :mod:`exportnb.cli.archive`).

Exit codes: 0 the notebook succeeded; 1 it failed (its record is archived); 2 invalid
input (nothing ran); 3 no such record; 4 the kernel or JupyterLab could not start;
5 the sandbox is not running; 6 the archive could not take or give a record.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from exportnb import contract
from exportnb.cli import echo_json, handles_errors
from exportnb.errors import PreconditionFailed
from exportnb.record import HTML, METADATA, NOTEBOOK, Record

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
    from exportnb import parameters, runner

    path = Path(notebook) if notebook else runner.default_template()
    known = parameters.declared(path)
    return {
        "notebook": path,
        "incident_id": incident_id,
        "job_ids": list(job_ids),
        "alert": parameters.read_alert("/dev/stdin" if alert == "-" else alert) if alert else None,
        "parameters": parameters.parse_assignments(assignments, known),
    }


def _summary(record: Record) -> dict[str, Any]:
    from exportnb import runner

    return {
        "record_id": record.record_id,
        "incident_id": record.incident_id,
        "status": record.status,
        "exit_code": runner.exit_code(record),
        "duration_seconds": record.duration_seconds,
        "findings": record.severity_counts(),
        "error": contract.encode(record.error),
        "location": record.location,
        "notebook": record.path(NOTEBOOK),
        "html": record.path(HTML),
        "record": record.path(METADATA),
    }


def _show_run(record: Record) -> None:
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


def _finish(record: Record, as_json: bool) -> None:
    from exportnb import runner

    if as_json:
        echo_json(_summary(record))
    else:
        _show_run(record)
    sys.exit(runner.exit_code(record))


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
    from exportnb import runner

    with runner.Kernel.start(runner.KERNEL) as kernel:  # boots while the input is checked
        record = runner.run(
            **_given(**given),
            archive=archive,
            cell_timeout=cell_timeout,
            progress=not as_json,
            hide_input=hide_input,
            kernel=kernel,
        )
    _finish(record, as_json)


@click.command()
@click.option(
    "--scenario",
    default="default",
    show_default=True,
    help="Scenario to start the sandbox with, if none is running.",
)
@click.option("--notebook", type=click.Path(dir_okay=False), help="Default: the template.")
@click.option("--archive", metavar="URL", help="Archive: a folder or s3://bucket/prefix.")
@click.option("--cell-timeout", type=float, metavar="SECONDS", help="Fail a cell that runs longer.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON (no progress).")
@handles_errors
def demo(
    scenario: str,
    notebook: str | None,
    archive: str | None,
    cell_timeout: float | None,
    as_json: bool,
) -> None:
    """Run the incident template against the sandbox and show where its record is.

    Starts the sandbox first if none is running, and leaves it running.
    """
    from exportnb import runner

    started = time.monotonic()

    def show(phase: str) -> None:
        if phase and not as_json:
            click.echo(f"  [{time.monotonic() - started:5.1f}s] sandbox: {phase}", err=True)

    record, fresh = runner.demo(
        scenario=scenario,
        on_phase=show,
        notebook=notebook,
        archive=archive,
        cell_timeout=cell_timeout,
        progress=not as_json,
    )
    if not as_json:
        click.echo(
            f"The sandbox {'was started and ' if fresh else ''}is still running; "
            "stop it with `exportnb sandbox down`.",
            err=True,
        )
        click.echo(f"Open {record.path(HTML)} in a browser to read the investigation.", err=True)
    _finish(record, as_json)


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
    from exportnb import runner

    found = runner.sandbox_defaults()
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


class Lab:
    """A JupyterLab server on loopback, with a token of its own, in a session of its own."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    @classmethod
    def start(
        cls,
        notebook: Path,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 90.0,
    ) -> Lab:
        port = port or _free_port()
        token = secrets.token_urlsafe(24)
        log = notebook.parent.parent / ".logs" / f"{notebook.parent.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            f"--port={port}",
            f"--ServerApp.root_dir={notebook.parent}",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port_retries=0",
        ]
        if os.geteuid() == 0:  # containers and CI often run as root; JupyterLab refuses it
            args.append("--allow-root")
        with log.open("ab") as out:
            process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {}), "JUPYTER_TOKEN": token},
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        lab = cls(process, f"{base}/lab/tree/{quote(notebook.name)}?token={token}", log)
        lab.wait_ready(f"{base}/api/status?token={token}", timeout)
        return lab

    def wait_ready(self, status_url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace").splitlines()[-10:]
                raise PreconditionFailed("JupyterLab exited:\n  " + "\n  ".join(tail))
            try:
                with urllib.request.urlopen(status_url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise PreconditionFailed(f"JupyterLab did not answer in {timeout:.0f}s; see {self.log}")

    def stop(self, timeout: float = 15.0) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
