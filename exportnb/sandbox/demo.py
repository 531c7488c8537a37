"""The demo: the incident template run against the sandbox, started first if none runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exportnb.record.model import Record
from exportnb.run import runner
from exportnb.sandbox import control


def demo(
    *, scenario: str = "default", on_phase: Callable[[str], None] | None = None, **options: Any
) -> tuple[Record, bool]:
    """Run the template against the sandbox, starting it if none runs (and leaving it running).

    Returns the record and whether the sandbox was started here. ``options`` go to
    :func:`exportnb.run.runner.run`.
    """
    found = control.local_environment()
    started = found is None
    if found is None:
        control.up(scenario, on_phase=on_phase)
        found = control.local_environment()
        assert found is not None
    env, defaults = found
    return runner.run(env=env, defaults=defaults, **options), started
