"""The ``exportnb`` command. Each command is a thin call into a library function.

===========================  ==========================================================
command                      module
===========================  ==========================================================
run, investigate             :mod:`exportnb.cli.run`
archive …                    :mod:`exportnb.cli.archive`
mitigate, journal            :mod:`exportnb.cli.mitigate`
finalize                     :mod:`exportnb.cli.finalize`
serve, worker                :mod:`exportnb.cli.serve`
sandbox …, demo              :mod:`exportnb.sandbox.cli`, through the ``exportnb.commands``
                             entry-point group (nothing outside the sandbox imports it)
===========================  ==========================================================

Errors print ``Error: …`` with the error's exit code (:mod:`exportnb.core.console`).
"""

from __future__ import annotations

from importlib.metadata import entry_points

import click

from exportnb import __version__
from exportnb.cli import archive, finalize, mitigate, run, serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="exportnb")
def main() -> None:
    """exportnb: investigate failed data exports with runbook notebooks."""


for command in (
    run.run,
    run.investigate,
    archive.archive_group,
    mitigate.mitigate,
    mitigate.journal,
    finalize.finalize,
    serve.serve,
    serve.worker,
):
    main.add_command(command)
for entry in entry_points(group="exportnb.commands"):
    main.add_command(entry.load(), entry.name)
