"""The runner on a real kernel (papermill, ipykernel): one fixture notebook per failure mode.

Every run is archived once, failed runs included; bad input runs nothing and writes
nothing; the CLI prints ``Error: …`` and never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner
from conftest import exportnb_cmd

from exportnb.cli import main
from exportnb.core.errors import InvalidInput, NotFound, PreconditionFailed
from exportnb.platform.model import JobQuery
from exportnb.platform.registry import local_environment
from exportnb.run import runner

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = Path(__file__).parent / "notebooks"
SUCCEEDS = NOTEBOOKS / "succeeds.ipynb"


pytestmark = pytest.mark.usefixtures("home")  # a fresh $EXPORTNB_HOME (conftest)


def archived(home: Path) -> list[Path]:
    return sorted(p for p in (home / "archive").glob("*/*") if p.is_dir())


def executed(record) -> nbformat.NotebookNode:
    return nbformat.read(record.path("notebook.ipynb"), as_version=4)


def stream_text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


# Succeeding ---------------------------------------------------------------------------
def test_a_run_archives_one_record_with_metadata_results_and_hashes(home):
    calls: list[str] = []
    hooks = runner.Hooks(
        on_start=lambda incident, path: calls.append(f"start {incident} {path.name}"),
        on_cell_complete=lambda index, total: calls.append("cell"),
        on_record=lambda record: calls.append(f"record {record.record_id}"),
    )
    record = runner.run(
        SUCCEEDS,
        incident_id="INC-1",
        job_ids=["job-a", "job-b"],
        alert={"status": "firing", "alerts": [{"labels": {"a": "b"}}]},
        parameters={"window_minutes": 15},
        hooks=hooks,
    )
    assert record.status == "succeeded" and runner.exit_code(record) == 0
    assert record.record_id.startswith("INC-1/") and record.error is None
    assert archived(home) == [Path(record.location)]
    assert record.operator == "alice" and record.job_ids == ["job-a", "job-b"]
    assert record.parameters["window_minutes"] == 15 and record.parameters["operator"] == "alice"
    assert calls[0] == f"start INC-1 {SUCCEEDS.name}" and calls[-1] == f"record {record.record_id}"
    assert calls.count("cell") == 4
    files = {p.name: p.read_bytes() for p in Path(record.location).iterdir()}
    assert set(files) == {"notebook.ipynb", "notebook.html", "record.json"}
    for name in ("notebook.ipynb", "notebook.html"):
        assert record.files[name].sha256 == hashlib.sha256(files[name]).hexdigest()
    assert record.record_id.endswith(record.files["notebook.ipynb"].sha256[:8])
    stored = json.loads(files["record.json"])
    assert stored["schema"] == "exportnb.record/v1" and "location" not in stored
    assert set(stored["versions"]) >= {"exportnb", "papermill", "nbclient", "python"}
    assert [r["step"] for r in stored["results"]] == ["detection"]
    assert record.severity_counts() == {"critical": 1, "warning": 1, "info": 0}
    echo = json.loads(stream_text(executed(record)))
    assert echo["alert"]["value"]["alerts"][0]["labels"] == {"a": "b"}
    assert echo["job_ids"]["value"] == ["job-a", "job-b"]
    assert echo["window_minutes"] == {"type": "int", "value": 15}
    assert b"jp-InputArea" in files["notebook.html"] and b"received" in files["notebook.html"]
    page = files["notebook.html"].decode()
    assert page.index("<main>") < page.index("At a glance — INC-1</strong> · run succeeded")
    assert page.index("At a glance") < page.index('class="jp-Cell')  # above the first cell
    assert "<strong>Findings:</strong> 1 critical, 1 warning, 0 info" in page


def test_code_like_strings_arrive_as_strings_never_as_code(home, tmp_path):
    marker = tmp_path / "pwned"
    hostile = [
        f"__import__('os').system('touch {marker}')",
        f'"); import os; os.system("touch {marker}"); ("',
        "\\\"\n'''\x00{}",
    ]
    for value in hostile:
        record = runner.run(SUCCEEDS, parameters={"message": value})
        echo = json.loads(stream_text(executed(record)))
        assert echo["message"] == {"type": "str", "value": value}
    assert not marker.exists()


def test_json_parameters_from_the_command_line(home):
    result = cli(
        "run",
        "--notebook",
        str(SUCCEEDS),
        "--json",
        "-p",
        "alert",
        '{"a": [1, null]}',
        "-p",
        "window_minutes",
        "30",
        "-p",
        "operator",
        "007",
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["status"] == "succeeded" and Path(out["notebook"]).is_file()
    assert Path(out["html"]).is_file() and out["findings"]["critical"] == 1
    echo = json.loads(stream_text(nbformat.read(out["notebook"], as_version=4)))
    assert echo["alert"]["value"] == {"a": [1, None]}
    assert echo["operator"] == {"type": "str", "value": "007"}  # string default: taken as is
    assert echo["incident_id"]["value"].startswith("INC-")


# Bad input: nothing runs, nothing is written -----------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["-p", "__import__('os')", "1"], "is not a Python identifier"),
        (["-p", "a;b", "1"], "is not a Python identifier"),
        (["-p", "class", "1"], "is a Python keyword"),
        (["-p", "__class__", "1"], "reserved"),
        (["-p", "nope", "1"], "known parameters: alert, failure_threshold, incident_id"),
        (["-p", "window_minutes", "NaN"], "not JSON values"),
        (["-p", "window_minutes", "Infinity"], "not JSON values"),
        (["-p", "window_minutes", "ten"], "takes a number"),
        (["-p", "job_ids", "job-1"], "takes a list"),
        (["-p", "window_minutes", "None"], "write null"),
        (["--incident", "../../etc"], "incident ID"),
        (["--cell-timeout", "0"], "cell timeout"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(home, args, message):
    result = cli("run", "--notebook", str(SUCCEEDS), *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert "Traceback" not in result.output
    assert archived(home) == []


@pytest.mark.parametrize("value", [{1, 2}, b"bytes", float("nan"), float("inf"), (1, 2), object()])
def test_values_that_are_not_json_are_refused_by_the_library(home, value):
    with pytest.raises(InvalidInput):
        runner.run(SUCCEEDS, parameters={"message": value})
    assert archived(home) == []


def test_an_alert_file_that_is_not_json(home, tmp_path):
    alert = tmp_path / "alert.json"
    alert.write_text("{not json")
    result = cli("run", "--notebook", str(SUCCEEDS), "--alert", str(alert))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: alert file {alert} is not JSON: ")
    assert archived(home) == []


def test_a_missing_notebook_and_a_missing_template(home, monkeypatch, tmp_path):
    result = cli("run", "--notebook", str(tmp_path / "none.ipynb"))
    assert result.exit_code == 2 and "does not exist" in result.stderr
    monkeypatch.setenv("EXPORTNB_TEMPLATE", str(SUCCEEDS))
    assert runner.default_template() == SUCCEEDS
    monkeypatch.delenv("EXPORTNB_TEMPLATE")
    monkeypatch.setattr(runner, "TEMPLATE", "no-such-template.ipynb")
    with pytest.raises(NotFound, match="no incident template"):
        runner.default_template()


def test_a_kernel_that_cannot_start_runs_nothing(home, monkeypatch):
    monkeypatch.setattr(runner, "KERNEL", "no-such-kernel")
    with pytest.raises(PreconditionFailed, match="kernel did not start"):
        runner.run(SUCCEEDS)
    assert archived(home) == []


# Failing: archived with status failed ---------------------------------------------------
def test_a_failing_notebook_is_archived_as_failed_with_its_error_cell(home):
    result = cli(
        "run",
        "--notebook",
        str(NOTEBOOKS / "raises.ipynb"),
        "--json",
        "-p",
        "message",
        "disk on fire",
    )
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    assert out["status"] == "failed" and out["exit_code"] == 1
    error = out["error"]
    assert (error["ename"], error["evalue"], error["cell_id"]) == (
        "ValueError",
        "disk on fire",
        "raises-3",
    )
    nb = nbformat.read(out["notebook"], as_version=4)
    failing = nb.cells[error["cell_index"]]
    assert failing.id == "raises-3" and failing.execution_count == error["execution_count"]
    assert failing.outputs[-1].ename == "ValueError"
    assert "before the failure" in stream_text(nb) and "never printed" not in stream_text(nb)
    assert "papermill-error-cell-tag" in nb.cells[0].metadata.tags
    page = Path(out["html"]).read_text()
    assert (
        f"run failed at {error['where']}" in page
        if "where" in error
        else "run failed at cell" in page
    )


@pytest.mark.parametrize("how", ["kill", "exit"])
def test_a_dead_kernel_is_archived_as_failed_with_the_cells_that_ran(home, how):
    record = runner.run(NOTEBOOKS / "dead_kernel.ipynb", parameters={"how": how})
    assert record.status == "failed" and runner.exit_code(record) == 1
    assert record.error is not None and record.error.ename == "DeadKernelError"
    assert record.error.cell_id == "dead_kernel-3"
    text = stream_text(executed(record))
    assert "kernel pid" in text and "never printed" not in text


def test_the_kernel_and_what_it_started_stop_when_the_run_ends(home, tmp_path):
    """The kernel is stopped (at once, after its last cell) with its process group: a
    child it left running does not outlive the run."""
    notebook = tmp_path / "leaves_a_child.ipynb"
    source = (
        'import subprocess\nchild = subprocess.Popen(["sleep", "60"])\n'
        'print("child pid", child.pid)'
    )
    nbformat.write(
        nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_code_cell(source)],
            metadata={
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
        ),
        notebook,
    )
    record = runner.run(notebook)
    assert record.status == "succeeded"
    pid = int(stream_text(executed(record)).split("child pid")[1].split()[0])

    def alive() -> bool:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
        return "State:\tZ" not in status  # a zombie is dead, only not yet reaped

    from conftest import wait_for

    wait_for(lambda: not alive(), timeout=5, every=0.05)


def test_the_html_renderer_is_kept_and_renders_as_a_new_exporter_would(home):
    from nbconvert import HTMLExporter

    from exportnb.record.model import HTMLRenderer, render_html, warm_html

    record = runner.run(SUCCEEDS, incident_id="INC-7")
    nb = executed(record)
    fresh, _ = HTMLExporter(template_name="lab").from_notebook_node(
        nb, resources={"metadata": {"name": "INC-7"}}
    )
    assert render_html(nb, title="INC-7") == fresh.encode()
    assert render_html(nb, title="INC-7") == fresh.encode()  # kept, and still the same
    assert HTMLRenderer.of() is HTMLRenderer.of() and HTMLRenderer.of() is not HTMLRenderer.of(
        hide_input=True
    )
    hidden, _ = HTMLExporter(template_name="lab", exclude_input=True).from_notebook_node(
        nb, resources={"metadata": {"name": "INC-7"}}
    )
    assert render_html(nb, title="INC-7", hide_input=True) == hidden.encode()
    warm_html(home / "no-such-notebook.ipynb")  # best effort: nothing raised


@pytest.mark.parametrize("code, status", [(0, "succeeded"), (1, "failed")])
def test_sys_exit(home, code, status):
    record = runner.run(NOTEBOOKS / "sysexit.ipynb", parameters={"code": code})
    assert record.status == status
    assert "never printed" not in stream_text(executed(record))


def test_a_cell_that_runs_too_long_fails_the_run(home):
    result = cli(
        "run", "--notebook", str(NOTEBOOKS / "sleeps.ipynb"), "--cell-timeout", "1", "--json"
    )
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    assert out["error"]["ename"] == "CellTimeoutError" and out["duration_seconds"] < 20
    assert out["error"]["evalue"] == "the cell ran longer than 1s"


def test_real_subprocess_prints_a_summary_and_exit_codes(home):
    env = {**os.environ, "EXPORTNB_HOME": str(home)}
    failed = subprocess.run(
        exportnb_cmd("run", "--notebook", str(NOTEBOOKS / "raises.ipynb"), "--incident", "INC-9"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1, failed.stderr
    assert "failed at cell 5 (In [3]): ValueError: boom" in failed.stdout
    assert "Executing" in failed.stderr and "Traceback" not in failed.stderr
    bad = subprocess.run(
        exportnb_cmd("run", "--notebook", str(SUCCEEDS), "-p", "a;b", "1"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("Error: ")
    assert "Traceback" not in bad.stderr
    assert [p.parent.name for p in archived(home)] == ["INC-9"]


def test_an_archive_that_cannot_be_written_is_an_error_before_running(home, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli("run", "--notebook", str(SUCCEEDS), "--archive", str(blocker / "archive"))
    assert result.exit_code == 6 and result.stderr.startswith("Error: cannot create")


def test_investigate_prepares_the_notebook_without_running_it(home):
    target, made = runner.prepare(SUCCEEDS, incident_id="INC-5", job_ids=["job-1"])
    assert made and target == home / "work" / "INC-5" / SUCCEEDS.name
    nb = nbformat.read(target, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert (
        "job_ids = ['job-1']" in injected[0].source or 'job_ids = ["job-1"]' in injected[0].source
    )
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code")
    again, made = runner.prepare(SUCCEEDS, incident_id="INC-5")
    assert again == target and not made


def test_investigate_serves_jupyterlab_until_interrupted(home):
    import signal
    import urllib.request

    env = {**os.environ, "EXPORTNB_HOME": str(home)}
    proc = subprocess.Popen(
        exportnb_cmd(
            "investigate", "--notebook", str(SUCCEEDS), "--incident", "INC-6", "--no-browser"
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        url = lines[1].split("JupyterLab: ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and "token=" in url
        base, token = url.split("/lab/")[0], url.split("token=")[1]
        with urllib.request.urlopen(f"{base}/api/contents/{SUCCEEDS.name}?token={token}") as r:
            assert json.load(r)["name"] == SUCCEEDS.name
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 or "JupyterLab stopped." in out, err
    assert "Traceback" not in err


def test_python_of_the_kernel_is_this_one(home):
    """The python3 kernelspec resolves to this interpreter (its ipykernel)."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] in ("python", "python3", sys.executable)


def test_demo_runs_in_the_sandbox_environment_and_leaves_it_running(sandbox, monkeypatch):
    monkeypatch.setenv("EXPORTNB_HOME", str(sandbox.home))
    for name in ("EXPORT_BUCKET", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)  # the kernel gets them from the sandbox
    result = cli("demo", "--notebook", str(NOTEBOOKS / "sandbox_env.ipynb"))
    assert result.exit_code == 0, result.output
    assert "is still running; stop it with `exportnb sandbox down`" in result.stderr
    assert "was started" not in result.stderr
    location = result.stdout.split("notebook:", 1)[1].split()[0]
    seen = json.loads(stream_text(nbformat.read(location, as_version=4)))
    assert seen["EXPORT_BUCKET"] == sandbox.env["EXPORT_BUCKET"]
    assert seen["AWS_ENDPOINT_URL"] == sandbox.env["AWS_ENDPOINT_URL"]
    assert seen["EXPORTNB_HOME"] == str(sandbox.home) and seen["head_bucket"] == 200
    assert seen["target_host"] == sandbox.env["EXPORT_TARGET_HOST"] and seen["target_port"] > 0
    assert location.startswith(str(sandbox.home / "archive"))
    status = sandbox.run(*exportnb_cmd("sandbox", "status"))
    assert status.returncode == 0


def test_the_kernel_of_a_run_is_unattended_whatever_the_caller_says(home, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import os\nprint('mode=' + os.environ.get('EXPORTNB_MODE', ''))"
        ),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = tmp_path / "mode.ipynb"
    nbformat.write(nb, path)
    record = runner.run(path, env={"EXPORTNB_MODE": "interactive"})
    assert record.status == "succeeded"
    assert "mode=auto" in stream_text(executed(record))


# Probes beside the kernel --------------------------------------------------------------------
COLLECTS = """\
import json, os, sys
from exportnb.incident.steps.checksums import verify_jobs
from exportnb.incident.steps.detection import detect
from exportnb.incident.model import open_incident, parameters_of
from exportnb.incident.steps.jobstate import job_state
from exportnb.incident.steps.network import network_path
from exportnb.incident.steps.storagehealth import storage_health

incident = open_incident(**parameters_of(globals()))
incident.start_probes()
detection = incident.collect(detect, incident.platform, **incident.detection_options())
jobs = incident.collect(job_state, incident.platform, **incident.job_state_options())
storage = incident.collect(
    storage_health, incident.buckets_to_check(jobs), access=incident.storage_access
)
checks = incident.collect(verify_jobs, incident.platform, incident.checksum_jobs(jobs, detection))
path = incident.collect(network_path, incident.target_host, **incident.network_options())
print(json.dumps({"probes": type(incident.probes).__name__, "s3": "boto3" in sys.modules,
                  "buckets": [c.bucket for c in storage.checks], "verified": len(checks.jobs),
                  "sent": path.destination.sent if path.destination else None,
                  "folder": os.environ["EXPORTNB_PROBES"]}))
"""


def test_an_incident_notebooks_probes_run_beside_its_kernel(sandbox, tmp_path, monkeypatch):
    """The runner's probe process measures what the cells collect: the kernel itself makes
    no S3 call; the process is gone when the run ends."""
    monkeypatch.setenv("EXPORTNB_HOME", str(sandbox.home))
    template = nbformat.read(ROOT / "templates" / "export_failure.ipynb", as_version=4)
    (parameters,) = [c for c in template.cells if "parameters" in c.metadata.get("tags", [])]
    nb = nbformat.v4.new_notebook(
        cells=[parameters, nbformat.v4.new_code_cell(COLLECTS)], metadata=template.metadata
    )
    path = tmp_path / "collects.ipynb"
    nbformat.write(nb, path)
    env, defaults = local_environment(sandbox.home) or ({}, {})
    delivered = [j.id for j in sandbox.platform().list_jobs(JobQuery(status="succeeded", limit=2))]
    record = runner.run(
        path,
        env=env,
        job_ids=delivered,
        defaults={**defaults, "probe_count": 3},
        archive=str(tmp_path / "archive"),
    )
    assert record.status == "succeeded", record.error
    seen = json.loads(stream_text(executed(record)))
    assert seen["probes"] == "HandedProbes" and seen["s3"] is False
    assert seen["buckets"][0] == env["EXPORT_BUCKET"] and seen["verified"] >= len(delivered)
    assert seen["sent"] == 3
    assert not Path(seen["folder"]).exists() and not commands_naming(seen["folder"])


def commands_naming(text: str) -> list[str]:
    """The command lines of running processes that name ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line:
            found.append(line)
    return found


# The template, installed ---------------------------------------------------------------------


def test_a_built_package_ships_the_template_and_finds_it(tmp_path, monkeypatch):
    """The wheel's build step (pyproject.toml names it) copies templates/*.ipynb into the
    package, where an installed, non-editable exportnb finds its template."""
    import importlib.util
    import tomllib

    from setuptools import Distribution, find_packages

    cmdclass = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cmdclass["cmdclass"]["build_py"] == "templates.ship.BuildPy"
    spec = importlib.util.spec_from_file_location("ship", ROOT / "templates" / "ship.py")
    assert spec is not None and spec.loader is not None
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    monkeypatch.chdir(ROOT)
    distribution = Distribution(
        {
            "name": "exportnb",
            "packages": find_packages(str(ROOT), include=["exportnb*"]),
            "script_name": "setup.py",
        }
    )
    build = ship.BuildPy(distribution)
    build.build_lib = str(tmp_path / "lib")
    build.ensure_finalized()
    build.run()
    shipped = tmp_path / "lib" / "exportnb" / "templates" / "export_failure.ipynb"
    assert shipped.read_bytes() == (ROOT / "templates" / "export_failure.ipynb").read_bytes()
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import exportnb, exportnb.run.runner as r; "
            "print(exportnb.__file__); print(r.default_template())",
        ],
        env={**os.environ, "PYTHONPATH": str(tmp_path / "lib")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert found == [str(tmp_path / "lib" / "exportnb" / "__init__.py"), str(shipped)]


# What a notebook declares, kept ------------------------------------------------------------
DECLARED = """\
import json, sys
from pathlib import Path
from exportnb.run.parameters import declared
found = declared(Path(sys.argv[1]))
print(json.dumps({"papermill": "papermill" in sys.modules,
                  "found": {name: [d.default, d.type_name, d.help] for name, d in found.items()}}))
"""


def test_what_a_notebook_declares_is_read_once_per_content(home, tmp_path):
    """``exportnb run`` checks its input without loading papermill once it has read the
    notebook's parameters: they are kept by the notebook's sha256."""
    notebook = tmp_path / "succeeds.ipynb"
    notebook.write_bytes(SUCCEEDS.read_bytes())

    def read() -> dict:
        done = subprocess.run(
            [sys.executable, "-c", DECLARED, str(notebook)],
            check=True,
            env={**os.environ, "EXPORTNB_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return json.loads(done.stdout)

    first, again = read(), read()
    assert first["papermill"] and not again["papermill"]
    assert again["found"] == first["found"] and "window_minutes" in first["found"]
    nb = nbformat.read(notebook, as_version=4)
    nb.cells[1].source += "\nextra = 1  # one more"
    nbformat.write(nb, notebook)
    changed = read()
    assert changed["papermill"] and changed["found"]["extra"][2] == "one more"
