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
from collections.abc import Iterator
from pathlib import Path

import pytest

from exportnb.findings import RESULT_MIMETYPE


@pytest.fixture(scope="session", autouse=True)
def sandbox_environment() -> Iterator[None]:
    from exportnb.sandbox import control

    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="exportnb-nbval-") as home:
        os.environ["EXPORTNB_HOME"] = home
        os.environ.pop("AWS_ENDPOINT_URL", None)
        control.up("default", home=Path(home))
        try:
            os.environ.update(control.env_values(home=Path(home)))
            yield
        finally:
            control.down(home=Path(home))
            os.environ.clear()
            os.environ.update(saved)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        notebook = item.parent
        skip = getattr(notebook, "skip_compare", None)
        if skip is not None and RESULT_MIMETYPE not in skip:
            notebook.skip_compare = (*skip, RESULT_MIMETYPE)
