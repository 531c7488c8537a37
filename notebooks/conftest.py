"""nbval for the example notebooks: they run against a real sandbox on the default scenario.

The sandbox starts once per session in a temporary EXPORTNB_HOME; the kernels nbval starts
inherit its environment (EXPORT_BUCKET, AWS_ENDPOINT_URL, the sandbox's commands on PATH).
Cells tagged ``nbval-check-output`` are compared after the sanitizers in ``sanitize.cfg``
(times and IDs); every other cell must run without error. The machine-readable result
payload is left out of the comparison: tests/test_incident_scenarios.py checks it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from exportnb.findings import RESULT_MIMETYPE

_saved: dict[str, str] = {}
_home: tempfile.TemporaryDirectory[str] | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    """Start the sandbox before nbval starts any kernel (kernels start at collection)."""
    from exportnb.sandbox import control

    global _home
    _saved.update(os.environ)
    _home = tempfile.TemporaryDirectory(prefix="exportnb-nbval-")
    home = Path(_home.name)
    os.environ["EXPORTNB_HOME"] = str(home)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    control.up("default", home=home)
    os.environ.update(control.env_values(home=home))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from exportnb.sandbox import control

    if _home is not None:
        control.down(home=Path(_home.name))
        _home.cleanup()
    os.environ.clear()
    os.environ.update(_saved)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        notebook = item.parent
        skip = getattr(notebook, "skip_compare", None)
        if skip is not None and RESULT_MIMETYPE not in skip:
            notebook.skip_compare = (*skip, RESULT_MIMETYPE)
