"""``exportnb finalize``: the incident notebook re-executed unattended into the archive."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nbformat
import pytest
from conftest import exportnb_cmd

from exportnb.core.errors import InvalidInput, NotFound
from exportnb.mitigation.journal import Journal
from exportnb.run import finalize

TRAIL_CELL = """\
from exportnb.notebook.display import show
from exportnb.mitigation.trail import trail

show("mitigations", trail(incident_id))
print("mode", mode, "window", window_minutes)"""


def tiny_notebook(folder: Path) -> Path:
    params = nbformat.v4.new_code_cell(
        'incident_id = "INC-unset"\nmode = "auto"\nwindow_minutes = 10\nnow = ""'
    )
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(TRAIL_CELL)])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = folder / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


def prepare(home: Path, notebook: Path, incident: str, **parameters: object) -> Path:
    nb = nbformat.read(notebook, as_version=4)
    nb.metadata["papermill"] = {"parameters": {"incident_id": incident, **parameters}}
    copy = home / "work" / incident / notebook.name
    copy.parent.mkdir(parents=True)
    nbformat.write(nb, copy)
    return copy


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXPORTNB_HOME": str(home), "EXPORTNB_OPERATOR": "finalizer"}
    return subprocess.run(
        exportnb_cmd("finalize", *args), env=env, capture_output=True, text=True, timeout=180
    )


def test_finalize_uses_the_working_copy_parameters_and_prints_the_notebook(home, tmp_path):
    notebook = tiny_notebook(tmp_path)
    prepare(
        home,
        notebook,
        "INC-fin-1",
        mode="interactive",
        window_minutes=25,
        now="2024-01-01T00:00:00Z",
    )
    Journal("INC-fin-1").append(
        "plan",
        action="pause-bulk",
        key="k" * 64,
        operator="dana",
        outcome="planned",
        detail={"summary": "Pause"},
    )
    done = cli(home, "INC-fin-1", "--notebook", str(notebook), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    executed = nbformat.read(out["notebook"], as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "mode auto window 25" in printed  # carried over; mode forced, "now" not carried
    record = json.loads(Path(out["record"]).read_text())
    assert record["parameters"]["mode"] == "auto" and "now" not in record["parameters"]
    assert record["operator"] == "finalizer"
    trails = [r for r in record["results"] if r.get("type") == "Trail"]
    assert trails[0]["result"]["entries"][0]["operator"] == "dana"


def test_finalize_falls_back_to_the_newest_record(home, tmp_path):
    notebook = tiny_notebook(tmp_path)
    first = cli(home, "INC-fin-2", "--notebook", str(notebook), "--json")
    assert first.returncode == 3 and "unknown incident INC-fin-2" in first.stderr
    from exportnb.run import runner

    runner.run(notebook, incident_id="INC-fin-2", parameters={"window_minutes": 40})
    again = cli(home, "INC-fin-2", "--notebook", str(notebook))
    assert again.returncode == 0, again.stderr
    assert "recovery:  not recorded" in again.stdout
    params = finalize.incident_parameters("INC-fin-2")
    assert params == {"window_minutes": 40}


@pytest.mark.parametrize("bad", ["../etc", "INC 1", ""])
def test_a_bad_incident_id_is_refused_before_anything_runs(home, bad):
    with pytest.raises(InvalidInput):
        finalize.incident_parameters(bad)
    done = cli(home, bad)
    assert done.returncode == 2 and done.stderr.startswith("Error: ")
    assert not (home / "archive").exists()


def test_unknown_incident(home):
    with pytest.raises(NotFound, match="unknown incident INC-none"):
        finalize.finalize("INC-none")
    done = cli(home, "INC-none")
    assert done.returncode == 3 and "Traceback" not in done.stderr
