"""The terminal: ``Error: …`` and exit codes instead of tracebacks, JSON, aligned tables.

Every command of exportnb (and of the sandbox's exportctl and featurectl) prints through
these: :func:`handles_errors` turns an :class:`~exportnb.core.errors.ExportnbError` into
``Error: <message>`` on stderr and the error's exit code; tables are for people and may
change, ``--json`` output is for programs.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click

from exportnb.core import codec
from exportnb.core.errors import ExportnbError
from exportnb.core.quantities import format_duration

F = TypeVar("F", bound=Callable[..., Any])

EMPTY = "-"


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
        return codec.format_time(value.replace(microsecond=0))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(codec.encode(value), ensure_ascii=False, default=str)
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
