"""What the exportctl/featurectl commands print: aligned tables, or contract documents.

Every command takes ``--output table|json``. Tables are for people and may change;
JSON is the versioned contract of :mod:`exportnb.platform.contract`. A command wrapped in
:func:`reports_errors` prints ``Error: …`` on stderr and exits with the error's exit
code, and with ``--output json`` it also prints the Error document on stdout, so that
a program driving the command can raise the same error again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from exportnb.core.console import cell, echo_fields, echo_table, fail
from exportnb.core.errors import ExportnbError
from exportnb.core.quantities import format_duration
from exportnb.platform import contract
from exportnb.platform.model import AuditEntry, Flag

F = TypeVar("F", bound=Callable[..., Any])

OUTPUT_FORMATS = ("table", "json")


def output_option(func: F) -> F:
    """The ``--output [table|json]`` option, passed to the command as ``output``."""
    return click.option(
        "--output",
        "-o",
        type=click.Choice(OUTPUT_FORMATS),
        default="table",
        show_default=True,
        help="Print a table for people, or the JSON contract document (exportnb.dev/v1).",
    )(func)


def reports_errors(func: F) -> F:
    """Turn exportnb errors into ``Error: …``, their exit code and, for JSON, a document."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ExportnbError as exc:
            if kwargs.get("output") == "json":
                echo_document(contract.error_document(exc))
            fail(exc.message, exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


def echo_document(doc: dict[str, Any]) -> None:
    click.echo(contract.dumps(doc))


def emit(output: str, kind: str, payload: Any, render: Callable[[Any], None]) -> None:
    """Print ``payload`` as a ``kind`` document, or as a table through ``render``."""
    if output == "json":
        echo_document(contract.document(kind, payload))
    else:
        render(payload)


# Objects both CLIs print ------------------------------------------------------
def echo_flag(flag: Flag) -> None:
    """One flag: key, value, who set it and when it expires."""
    echo_fields(
        [
            ("Flag", flag.key),
            ("Value", flag.value),
            ("Set by", flag.set_by),
            ("Set at", flag.set_at),
            ("Expires", _expiry(flag)),
        ]
    )


def echo_flags(flags: Sequence[Flag]) -> None:
    echo_table(
        ("KEY", "VALUE", "SET BY", "SET AT", "EXPIRES"),
        [(f.key, f.value, f.set_by, f.set_at, _expiry(f)) for f in flags],
        empty="No flags set.",
    )


def _expiry(flag: Flag) -> str:
    if flag.expires_at is None:
        return "never"
    left = (flag.expires_at - datetime.now(UTC)).total_seconds()
    remaining = f"in {format_duration(left)}" if left > 0 else "expired"
    return f"{cell(flag.expires_at)} ({remaining})"


def echo_audit(entries: Sequence[AuditEntry]) -> None:
    """Audit entries: when, who, what, old -> new, and why."""
    echo_table(
        ("ID", "WHEN", "WHO", "ACTION", "TARGET", "CHANGE", "REASON"),
        [
            (e.id, e.at, e.actor, e.action, e.target, f"{cell(e.old)} -> {cell(e.new)}", e.reason)
            for e in entries
        ],
        empty="No audit entries.",
    )
