"""``exportnb sandbox``: the reference export platform, for demos, training and tests."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from exportnb.core.console import echo_json, handles_errors
from exportnb.core.errors import InvalidInput, NotFound
from exportnb.core.quantities import parse_size
from exportnb.record.model import HTML
from exportnb.run import report
from exportnb.sandbox import control
from exportnb.sandbox.demo import demo as run_demo
from exportnb.sandbox.generate import MAX_FAULTS, check, generate, save
from exportnb.sandbox.scenario import builtin_scenarios


@click.group()
def sandbox() -> None:
    """Run the sandbox: a small, real export platform with injectable faults."""


@sandbox.command()
@click.option(
    "--scenario",
    default="default",
    show_default=True,
    help="A built-in scenario name (see `exportnb sandbox scenarios`) or a .toml/.json file.",
)
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for readiness.")
@click.option(
    "--s3-endpoint",
    metavar="URL",
    help="Write to this S3 endpoint (MinIO, AWS...) with the environment's credentials, "
    "instead of starting moto server on loopback. Storage faults need the embedded one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the sandbox state as JSON.")
@handles_errors
def up(scenario: str, timeout: float, s3_endpoint: str | None, as_json: bool) -> None:
    """Start the sandbox in the background with a scenario, and wait until it is ready."""
    started = time.monotonic()

    def show(phase: str) -> None:
        if phase and not as_json:
            click.echo(f"  [{time.monotonic() - started:5.1f}s] {phase}", err=True)

    state = control.up(scenario, timeout=timeout, s3_endpoint=s3_endpoint, on_phase=show)
    if as_json:
        echo_json(asdict(state))
        return
    click.echo(f"Sandbox up (scenario {state.scenario}, pid {state.pid}).")
    click.echo(f"  S3 endpoint:  {state.s3_endpoint}")
    click.echo(f"  metrics:      {state.metrics_url}")
    click.echo(
        f"  target host:  {state.target_host}"
        + ("" if state.path_emulated else " (loopback; no path emulator)")
    )
    if state.reported_jobs:
        click.echo(f"  customer-reported jobs: {' '.join(state.reported_jobs)}")
    click.echo('Use it from a shell with:  eval "$(exportnb sandbox env)"')


@sandbox.command()
@handles_errors
def down() -> None:
    """Stop the sandbox."""
    click.echo("Sandbox stopped." if control.down() else "The sandbox was not running.")


@sandbox.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@handles_errors
def status(as_json: bool) -> None:
    """Show whether the sandbox runs, its endpoints, jobs by status, faults and flags.

    Exit code 0 when it runs, 5 when it does not.
    """
    report = control.status()
    if as_json:
        echo_json(asdict(report))
    elif not report.running:
        click.echo(f"Sandbox not running ({report.phase}).")
    else:
        _show_status(report)
    if not report.running:
        raise SystemExit(5)


def _show_status(report: control.Status) -> None:
    state = report.state
    assert state is not None
    click.echo(f"Sandbox running: scenario {state.scenario}, pid {state.pid}, {report.phase}")
    click.echo(f"  S3 endpoint: {state.s3_endpoint}   metrics: {state.metrics_url}")
    click.echo(f"  export bucket: {state.export_bucket}   fallback: {state.fallback_bucket}")
    click.echo("  jobs: " + ", ".join(f"{k} {v}" for k, v in sorted(report.jobs.items())))
    for fault in report.faults:
        params = ", ".join(f"{k}={v}" for k, v in fault["params"].items())
        click.echo(f"  fault #{fault['id']}: {fault['kind']} ({params})")
    for key, value in report.flags.items():
        click.echo(f"  flag {key} = {value!r}")


@sandbox.command()
@handles_errors
def env() -> None:
    """Print shell exports for the sandbox: use as  eval "$(exportnb sandbox env)".

    They set EXPORT_BUCKET, EXPORT_TARGET_HOST, AWS_ENDPOINT_URL, credentials for the
    local endpoint, and put the sandbox's own exportctl and featurectl on PATH.
    """
    click.echo(control.env_exports())


@sandbox.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handles_errors
def scenarios(as_json: bool) -> None:
    """List the built-in scenarios."""
    found = builtin_scenarios()
    if as_json:
        echo_json(found)
        return
    width = max(map(len, found))
    for name, description in found.items():
        click.echo(f"{name:<{width}}  {description}")


@sandbox.command("generate")
@click.option("--seed", required=True, metavar="N", help="Whole number >= 0; same seed, same file.")
@click.option(
    "--out", default="-", show_default=True, metavar="FILE|-", help="A .toml file, or - for stdout."
)
@click.option("--faults", metavar="0-3", help="How many faults (default: drawn, 0 to 3).")
@click.option("--control", is_flag=True, help="A healthy control: a world with no faults.")
@handles_errors
def generate_scenario(seed: str, out: str, faults: str | None, control: bool) -> None:
    """Generate a random scenario file (world and incident) from a seed, for game days.

    Start it with `exportnb sandbox up --scenario FILE`; docs/scenarios.md tells how to run
    and score it.
    """
    count = None if faults is None else _whole("--faults", faults, MAX_FAULTS)
    generated = generate(_whole("--seed", seed), faults=count, control=control)
    if out == "-":
        check(generated)
        sys.stdout.write(generated.text)
        return
    path = save(generated, Path(out))
    kinds = ", ".join(generated.kinds) or "none (a healthy control)"
    click.echo(f"Wrote scenario {generated.name} to {path} (faults: {kinds}).")


def _whole(option: str, text: str, most: int | None = None) -> int:
    """``text`` as a whole number of at least 0 (and at most ``most``), or InvalidInput."""
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if value < 0 or (most is not None and value > most):
        wanted = f"from 0 to {most}" if most is not None else "of at least 0"
        raise InvalidInput(f"{option} must be a whole number {wanted}, not {text!r}")
    return value


@sandbox.group()
def fault() -> None:
    """Inject, list and clear faults in the running sandbox."""


@fault.command("inject")
@click.argument(
    "kind", type=click.Choice(["throttle", "timeout", "corrupt", "missing", "stuck", "network"])
)
@click.option("--bucket", "buckets", multiple=True, help="Bucket(s) the fault applies to.")
@click.option("--tenant", "tenants", multiple=True, help="Tenant(s) the fault applies to.")
@click.option("--connector", "connectors", multiple=True, help="Connector(s) it applies to.")
@click.option("--min-chunk", help="timeout: chunks of at least this size time out (e.g. 128MB).")
@click.option("--hold", help="timeout: how long a request hangs before the error (e.g. 1s).")
@click.option("--rate", type=float, help="corrupt/missing/stuck: share of matching jobs hit.")
@click.option("--max-attempt", type=int, help="corrupt/missing/stuck: last attempt number hit.")
@click.option("--latency", help="network: added latency (e.g. 200ms).")
@click.option("--jitter", help="network: latency jitter (e.g. 50ms).")
@click.option("--loss", type=float, help="network: packet loss in percent.")
@click.option("--json", "as_json", is_flag=True, help="Print the fault as JSON.")
@handles_errors
def inject(kind: str, as_json: bool, **options: Any) -> None:
    """Inject a fault of KIND. See docs/scenarios.md for what each kind does."""
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}
    params = {k: v for k, v in params.items() if v not in (None, [])}
    made = control.inject(kind, params)
    if as_json:
        echo_json({"id": made.id, "kind": made.kind, "params": made.params})
    else:
        click.echo(f"Injected fault #{made.id}: {made.describe()}")


@fault.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handles_errors
def list_faults(as_json: bool) -> None:
    """List the active faults."""
    report = control.status()
    if as_json:
        echo_json(report.faults)
        return
    if not report.faults:
        click.echo("No active faults.")
    for item in report.faults:
        params = ", ".join(f"{k}={v}" for k, v in item["params"].items())
        click.echo(f"#{item['id']}  {item['kind']:<9} {params}")


@fault.command("clear")
@click.argument("fault_id", type=int, required=False)
@click.option("--all", "clear_all", is_flag=True, help="Clear every active fault.")
@handles_errors
def clear(fault_id: int | None, clear_all: bool) -> None:
    """Clear fault FAULT_ID, or --all of them."""
    if fault_id is None and not clear_all:
        raise click.UsageError("give a fault ID or --all")
    n = control.clear(None if clear_all else fault_id)
    if fault_id is not None and n == 0:
        raise NotFound(f"no active fault #{fault_id}")
    click.echo(f"Cleared {n} fault(s).")


@sandbox.command()
@click.option("--count", default=1, show_default=True, help="How many jobs.")
@click.option("--tenant", help="Tenant (default: the first).")
@click.option("--connector", help="Connector (default: the first).")
@click.option("--bucket", help="Destination bucket (default: $EXPORT_BUCKET).")
@click.option("--kind", default="adhoc", show_default=True, help="scheduled, adhoc or bulk.")
@click.option("--chunk-size", default="64MB", show_default=True, help="Chunk size.")
@click.option("--size", default="200MB", show_default=True, help="Export size.")
@click.option("--json", "as_json", is_flag=True, help="Print the job IDs as JSON.")
@handles_errors
def submit(chunk_size: str, size: str, as_json: bool, **options: Any) -> None:
    """Queue new export jobs (for game days and tests); the sandbox's worker runs them."""
    ids = control.submit(chunk_size=parse_size(chunk_size), size=parse_size(size), **options)
    if as_json:
        echo_json(ids)
    else:
        click.echo("\n".join(ids))


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
    started = time.monotonic()

    def show(phase: str) -> None:
        if phase and not as_json:
            click.echo(f"  [{time.monotonic() - started:5.1f}s] sandbox: {phase}", err=True)

    record, fresh = run_demo(
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
    report.finish(record, as_json)
