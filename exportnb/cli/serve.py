"""``exportnb serve`` and ``exportnb worker``: the Alertmanager receiver and its consumers.

Exit codes: 0 stopped by a signal; 2 configuration (no credentials, a bad ``[serve]``
setting); 4 the address is taken; 6 the incident store or the queue cannot be opened.
"""

from __future__ import annotations

import logging
from types import ModuleType

import click

from exportnb.core.console import handles_errors


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    for chatty in ("huey", "papermill", "traitlets"):
        logging.getLogger(chatty).setLevel(logging.INFO if verbose else logging.WARNING)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=9788,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on.",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    metavar="N",
    help="Runs at once in the embedded consumer (default: [serve] workers, 2); "
    "0 leaves the queue to `exportnb worker` processes.",
)
@click.option(
    "--insecure-no-auth",
    "insecure",
    is_flag=True,
    help="Serve without authentication when no credentials are configured "
    "(for a trusted loopback only).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log more (queue activity, debug).")
@handles_errors
def serve(host: str, port: int, workers: int | None, insecure: bool, verbose: bool) -> None:
    """Receive Alertmanager webhooks and run the incident notebook on each alert group.

    POST /alerts/alertmanager answers 202 at once; runs are queued (durably) and executed
    by the workers, and each is archived as a record. GET /incidents lists the incidents,
    GET /incidents/ID shows one with its runs and records, GET /metrics is for Prometheus,
    GET /openapi.json describes it all, GET /healthz needs no credentials. Everything else
    needs the bearer token ($EXPORTNB_WEBHOOK_TOKEN or [serve] token_file) or basic auth
    ([serve] basic_user and basic_password_file, or $EXPORTNB_WEBHOOK_USER and
    $EXPORTNB_WEBHOOK_PASSWORD); with none configured, serve refuses to start unless
    --insecure-no-auth is given.
    See docs/alerts.md.
    """
    _logging(verbose)
    _server().serve(host=host, port=port, workers=workers, insecure=insecure)


@click.command()
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    metavar="N",
    help="Runs at once.",
)
@click.option("--parent", type=int, hidden=True, help="Stop when this process is gone.")
@click.option("-v", "--verbose", is_flag=True, help="Log more (queue activity, debug).")
@handles_errors
def worker(workers: int, parent: int | None, verbose: bool) -> None:
    """Execute queued runs (the consumer), and deliver records kept in the outbox.

    `exportnb serve` starts one itself; run more, on this machine or others, when
    [serve] queue is a redis:// URL. Each worker reads the same config.toml settings
    (queue, notebook, archive, cell_timeout) under its own $EXPORTNB_HOME. Stops on
    SIGTERM or SIGINT (SIGINT lets the runs in progress finish).
    """
    _logging(verbose)
    _server().work(workers=workers, parent=parent)


def _server() -> ModuleType:
    """The service, imported when a command needs it."""
    from exportnb.service import server  # deferred: starlette, uvicorn and huey are heavy

    return server
