"""nbval for the example notebooks: they run against a real sandbox on the default scenario.

The sandbox starts once per session in a temporary EXPORTNB_HOME; the kernels nbval starts
inherit its environment (EXPORT_BUCKET, AWS_ENDPOINT_URL, the sandbox's commands on PATH).
Cells tagged ``nbval-check-output`` are compared after the sanitizers in ``sanitize.cfg``
(times, IDs and durations); every other cell must run without error. The machine-readable
payloads (the result mimetype, the review mimetype) are left out of the comparison:
tests/test_incident_scenarios.py and tests/test_review.py check them.

``postmortem_review.ipynb`` reviews an archive built from real runs: just before its kernel
starts (after the example notebook ran on the untouched sandbox), the drill of
``build_review.py`` runs on the session's sandbox — the incident notebook for a firing
alert, the fallback bucket applied through the mitigations library, the notebook again for
the resolved alert — into an archive that the kernel finds through $EXPORTNB_ARCHIVE.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from exportnb.core.findings import RESULT_MIMETYPE
from exportnb.review.views import REVIEW_MIMETYPE

REVIEW_NOTEBOOK = "postmortem_review.ipynb"
SKIPPED = (RESULT_MIMETYPE, REVIEW_MIMETYPE)

_saved: dict[str, str] = {}
_home: tempfile.TemporaryDirectory[str] | None = None
_drill: dict[str, str] = {}  # "archive", or "error" when the drill failed


def pytest_sessionstart(session: pytest.Session) -> None:
    """Start the sandbox before nbval starts any kernel."""
    from exportnb.sandbox import control

    global _home
    _saved.update(os.environ)
    _home = tempfile.TemporaryDirectory(prefix="exportnb-nbval-")
    home = Path(_home.name)
    os.environ["EXPORTNB_HOME"] = str(home)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.pop("EXPORTNB_ARCHIVE", None)
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
        if skip is not None:
            notebook.skip_compare = (*skip, *(m for m in SKIPPED if m not in skip))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the review notebook's kernel starts (its first cell's setup), drill once."""
    if item.path.name != REVIEW_NOTEBOOK or _home is None:
        return
    if not _drill:
        _drill.update(_drilled(Path(_home.name)))
    if "error" in _drill:
        pytest.fail(_drill["error"], pytrace=False)


def _drilled(home: Path) -> dict[str, str]:
    from build_review import drill

    from exportnb.core.errors import ExportnbError

    archive = str(home / "review-archive")
    try:
        records = drill(archive)
    except ExportnbError as exc:
        return {"error": f"the drill failed: {exc.message}"}
    failed = [f"{r.record_id}: {r.error.describe()}" for r in records if r.error is not None]
    if failed:
        return {"error": "the drill's incident runs failed: " + "; ".join(failed)}
    os.environ["EXPORTNB_ARCHIVE"] = archive
    return {"archive": archive}
