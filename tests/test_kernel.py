"""The kernel a run executes on: started ahead of the run (a real ipykernel), warmed, stopped
at once; bad input stops it, and a kernel that cannot start is reported by the run."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner

from exportnb.cli import main
from exportnb.core.errors import InvalidInput, PreconditionFailed
from exportnb.incident import probes
from exportnb.run import runner
from exportnb.run.kernel import WARM, Kernel

NOTEBOOKS = Path(__file__).parent / "notebooks"
SUCCEEDS = NOTEBOOKS / "succeeds.ipynb"
LOOKS_AROUND = """\
import json, os, sys
print(json.dumps({"warm": sorted(m for m in %r if m in sys.modules),
                  "named": sorted(m for m in ("pandas", "matplotlib") if m in globals()),
                  "mode": os.environ.get("EXPORTNB_MODE"), "cwd": os.getcwd(),
                  "probes": os.environ.get("EXPORTNB_PROBES"), "pid": os.getpid(),
                  "probing": os.path.isdir(os.environ.get("EXPORTNB_PROBES", ""))}))
"""


pytestmark = pytest.mark.usefixtures("home")  # a fresh $EXPORTNB_HOME (conftest)


def notebook(tmp_path: Path) -> Path:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(LOOKS_AROUND % (WARM,))],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    path = tmp_path / "looks_around.ipynb"
    nbformat.write(nb, path)
    return path


def printed(record) -> dict:
    nb = nbformat.read(record.path("notebook.ipynb"), as_version=4)
    return json.loads("".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])))


def running(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_a_kernel_started_ahead_runs_the_notebook_warm_unattended_in_its_folder(tmp_path):
    kernel = Kernel.start(runner.KERNEL, {"EXPORTNB_MODE": "interactive"})
    work = kernel.work
    record = runner.run(notebook(tmp_path), kernel=kernel)
    assert record.status == "succeeded"
    seen = printed(record)
    assert seen["warm"] == sorted(WARM) and seen["named"] == []  # imported, not named
    assert seen["mode"] == "auto"  # whatever the caller's environment says
    assert Path(seen["cwd"]) == work and seen["probes"] == str(work / "probes")
    assert not running(seen["pid"]) and not work.exists()  # stopped, folder removed


def test_bad_input_stops_a_kernel_started_ahead(tmp_path):
    kernel = Kernel.start(runner.KERNEL)
    pid = kernel.manager.provisioner.pid
    with pytest.raises(InvalidInput):
        runner.run(SUCCEEDS, parameters={"nope": 1}, kernel=kernel)
    assert not running(pid) and not kernel.work.exists()


def test_a_kernel_that_cannot_start_is_reported_by_the_run_after_the_input_is_checked():
    kernel = Kernel.start("no-such-kernel")
    assert kernel.manager is None and kernel.failure is not None  # not raised yet
    with pytest.raises(InvalidInput):
        runner.run(SUCCEEDS, parameters={"nope": 1}, kernel=kernel)
    kernel = Kernel.start("no-such-kernel")
    with pytest.raises(PreconditionFailed, match="kernel did not start"):
        runner.run(SUCCEEDS, kernel=kernel)


def test_a_cold_kernel_imports_nothing_ahead(tmp_path):
    record = runner.run(notebook(tmp_path), kernel=Kernel.start(runner.KERNEL, warm=False))
    assert printed(record)["warm"] == []


def test_the_command_leaves_no_kernel_behind_when_the_input_is_bad(tmp_path, monkeypatch):
    """``exportnb run`` starts the kernel before it reads the notebook's parameters."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    result = CliRunner().invoke(main, ["run", "--notebook", str(SUCCEEDS), "-p", "nope", "1"])
    assert result.exit_code == 2 and result.stderr.startswith("Error: ")
    assert list((tmp_path / "tmp").iterdir()) == []  # the kernel's folder is gone with it
    result = CliRunner().invoke(main, ["run", "--notebook", str(SUCCEEDS), "--json"])
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_run_of_another_notebook_starts_no_probe_process(tmp_path):
    assert not probes.applies_to(runner.plan(notebook(tmp_path)).declared)
    seen = printed(runner.run(notebook(tmp_path)))
    assert seen["probes"] and not seen["probing"]  # named, but nothing probes there
    assert os.environ.get(probes.ENV) is None  # the kernel's, not this process's
