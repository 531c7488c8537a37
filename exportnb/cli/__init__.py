"""The ``exportnb`` command. Each command is a thin call into a library function."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from exportnb import __version__
from exportnb.errors import ExportnbError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> None:
    """Print ``Error: message`` on stderr and exit with ``code``."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def handles_errors(func: F) -> F:
    """Turn exportnb errors into ``Error: ...`` and their exit codes; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ExportnbError as exc:
            fail(exc.message, exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="exportnb")
def main() -> None:
    """exportnb: investigate failed data exports with runbook notebooks."""


def _register() -> None:
    from exportnb.cli import finalize, mitigate, run, serve
    from exportnb.cli.sandbox import sandbox

    main.add_command(sandbox)
    for command in (run.run, run.demo, run.investigate):
        main.add_command(command)
    from exportnb.cli.archive import archive_group

    main.add_command(archive_group)
    main.add_command(mitigate.mitigate)
    main.add_command(mitigate.journal)
    main.add_command(finalize.finalize)
    main.add_command(serve.serve)
    main.add_command(serve.worker)


_register()
