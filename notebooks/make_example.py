"""Regenerate ``example_incident.ipynb``: the incident template executed on the default
scenario, as the archive keeps it (redacted), with the cells nbval compares tagged.

Run with a sandbox up on the default scenario::

    exportnb sandbox up --scenario default
    python notebooks/make_example.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import nbformat

from exportnb.platform.registry import local_environment
from exportnb.run.runner import run

HERE = Path(__file__).resolve().parent
CHECKED = ("show_parameters(", "show_chart(")
"""Cells whose output nbval compares: their text is the same from run to run once times
and IDs are sanitized. The others must run without error."""

PARAMETERS = {"comms_lead": "Dana Reyes", "operator": "example-operator"}


def checked(source: str) -> bool:
    """Whether every statement of a cell is one of the CHECKED calls (imports aside)."""
    lines = [line.strip() for line in source.splitlines()]
    calls = [line for line in lines if line and not line.startswith(("from ", "import "))]
    return bool(calls) and all(line.startswith(CHECKED) or line[0] in ")]" for line in calls)


def tag(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in nb.cells:
        tags = [t for t in cell.metadata.get("tags", []) if t != "nbval-check-output"]
        if cell.cell_type == "code" and checked(cell.source):
            tags.append("nbval-check-output")
        cell.metadata["tags"] = tags
    return nb


def main() -> int:
    if sys.argv[1:] == ["--retag"]:
        path = HERE / "example_incident.ipynb"
        nbformat.write(tag(nbformat.read(path, as_version=4)), path)
        return 0
    found = local_environment()
    if found is None:
        print("Error: start the sandbox first: exportnb sandbox up --scenario default")
        return 5
    env, defaults = found
    with tempfile.TemporaryDirectory() as archive:
        record = run(
            incident_id="INC-EXAMPLE",
            parameters=PARAMETERS,
            env=env,
            defaults=defaults,
            archive=archive,
        )
        if record.status != "succeeded":
            print(f"Error: the example run failed: {record.error}")
            return 1
        nb = nbformat.reads(Path(record.path("notebook.ipynb")).read_text(), as_version=4)
    nbformat.write(tag(nb), HERE / "example_incident.ipynb")
    print(json.dumps({"record": record.record_id, "notebook": "notebooks/example_incident.ipynb"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
