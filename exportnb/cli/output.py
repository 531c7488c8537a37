"""What the exportctl/featurectl commands print: aligned tables, or contract documents.

Every command takes ``--output table|json``. Tables are for people and may change;
JSON is the versioned contract of :mod:`exportnb.contract`. A command wrapped in
:func:`reports_errors` prints ``Error: …`` on stderr and exits with the error's exit
code, and with ``--output json`` it also prints the Error document on stdout, so that
a program driving the command can raise the same error again.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from exportnb import contract
from exportnb.cli import fail
from exportnb.errors import ExportnbError
from exportnb.platform.model import AuditEntry, Flag
from exportnb.quantities import format_duration

F = TypeVar("F", bound=Callable[..., Any])

OUTPUT_FORMATS = ("table", "json")
EMPTY = "-"


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


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows under headers, columns padded to the widest cell; the last column unpadded."""
    cells = [[str(h) for h in headers], *[[cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [v.ljust(w) for v, w in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def echo_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str = "(none)"
) -> None:
    """Print a table, or ``empty`` when there are no rows."""
    click.echo(render_table(headers, rows) if rows else empty)


def echo_fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """Print ``name: value`` lines with the values aligned."""
    width = max((len(name) for name, _ in pairs), default=0)
    for name, value in pairs:
        click.echo(f"{(name + ':').ljust(width + 1)} {cell(value)}")


def cell(value: Any) -> str:
    """One value as table text: ``-`` for nothing, times in UTC to the second."""
    if value is None or value == "":
        return EMPTY
    if isinstance(value, datetime):
        return contract.format_time(value.replace(microsecond=0))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(contract.encode(value), ensure_ascii=False, default=str)
    return str(value).replace("\n", " ")


def seconds(value: float | None) -> str:
    """A duration in seconds as ``1m30s``, or ``-``."""
    return EMPTY if value is None else format_duration(value)


def shorten(text: str | None, width: int = 60) -> str:
    """``text`` cut to ``width`` characters with an ellipsis."""
    if not text:
        return EMPTY
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def warn(message: str) -> None:
    """A note for people on stderr, which keeps stdout a clean document."""
    click.echo(message, err=True)


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
