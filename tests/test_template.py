"""The incident template: its parameters, its sections in the runbook's order, the runbook's
commands, cells that only call the library — and a real run against the sandbox."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import exportnb_cmd, need, wait_for

from exportnb.core.findings import RESULT_MIMETYPE
from exportnb.incident.parameters import PARAMETER_TABLE, PARAMETERS, Parameter
from exportnb.run.parameters import declared

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "templates" / "export_failure.ipynb"
RUNBOOKS = (ROOT / "runbooks" / "export-failure.md",)
MAX_LINES = 6
"""Statement lines a step cell may have, imports and blank lines aside."""
JSON_TYPES = (str, int, float, bool, list, dict, type(None))
LOGIC = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.For,
    ast.While,
    ast.If,
    ast.With,
    ast.Try,
    ast.Lambda,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
    ast.IfExp,
    ast.Match,
)


@pytest.fixture(scope="module")
def notebook() -> nbformat.NotebookNode:
    nb = nbformat.read(TEMPLATE, as_version=4)
    nbformat.validate(nb)
    return nb


@pytest.fixture(scope="module")
def runbook() -> str:
    found = next((p for p in RUNBOOKS if p.is_file()), None)
    need(found is not None, f"the runbook is not at {' or '.join(map(str, RUNBOOKS))}")
    assert found is not None
    return found.read_text(encoding="utf-8")


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def parameters_cell(nb):
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    return tagged[0]


# Parameters -------------------------------------------------------------------------------
def test_the_parameters_cell_holds_exactly_the_documented_json_parameters(notebook):
    cell = parameters_cell(notebook)
    assert notebook.cells.index(cell) == 1 and notebook.cells[0].cell_type == "markdown"
    assert notebook.cells[0].source.startswith("# ")
    found = {}
    for statement in ast.parse(cell.source).body:
        assert isinstance(statement, ast.Assign) and len(statement.targets) == 1
        found[statement.targets[0].id] = ast.literal_eval(statement.value)
    assert list(found) == list(PARAMETERS)
    assert found == PARAMETERS
    assert all(isinstance(v, JSON_TYPES) for v in found.values())
    assert json.loads(json.dumps(found)) == found
    assert found["window_minutes"] == 10 and found["failure_threshold"] == 0.02
    assert found["mode"] == "auto" and found["now"] == "" and found["target_port"] == 22


def test_papermill_reads_every_parameter_with_its_help(notebook):
    params = declared(TEMPLATE)
    assert list(params) == list(PARAMETERS)
    assert all(p.help for p in params.values()), [n for n, p in params.items() if not p.help]
    assert {name: p.help for name, p in params.items()} == {p.name: p.help for p in PARAMETER_TABLE}


def test_the_parameters_cell_is_written_from_the_parameter_table(monkeypatch):
    build = build_script()
    added = Parameter("dry_run", False, "a flag, written as Python")
    monkeypatch.setattr(build, "PARAMETER_TABLE", (*PARAMETER_TABLE, added))
    cell = build.parameters_cell()
    assert cell.splitlines()[0] == 'incident_id = "INC-unset"  # the incident\'s ID, e.g. INC-1234'
    assert cell.splitlines()[-1] == "dry_run = False  # a flag, written as Python"
    assert build.literal({"a": [1, None, "x"]}) == '{"a": [1, None, "x"]}'


def build_script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "build_template", TEMPLATE.parent / "build_template.py"
    )
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build


def test_the_template_is_what_the_build_script_makes():
    build = build_script()
    assert TEMPLATE.read_text(encoding="utf-8") == build.text(), "run templates/build_template.py"


def test_the_template_has_no_outputs(notebook):
    assert all(not c.outputs and c.execution_count is None for c in code_cells(notebook))
    assert notebook.metadata.kernelspec.name == "python3"


# The runbook -------------------------------------------------------------------------------
def headings(text: str, level: str) -> list[str]:
    return [
        line[len(level) + 1 :].strip() for line in text.splitlines() if line.startswith(level + " ")
    ]


def test_sections_follow_the_runbook_in_order(notebook, runbook):
    sections = headings(runbook, "##")
    assert sections[:2] == ["Detection", "Immediate Actions (10 minutes)"]
    in_notebook = [h for h in headings(markdown(notebook), "##") if h in sections]
    assert in_notebook == sections
    steps = re.findall(r"^\d+\. \*\*(.+?)\*\*", runbook, flags=re.M)
    assert steps == ["Job state", "Storage health", "Checksum verification", "Network path"]
    subsections = headings(markdown(notebook), "###")
    assert subsections[:4] == [f"{n}. {step}" for n, step in enumerate(steps, 1)]
    assert subsections[4:] == ["Mitigation panel", "Audit trail"]
    order = headings(markdown(notebook), "##")
    assert order.index("Diagnostics") < order.index("Assessment") < order.index("Mitigations")


def test_every_runbook_line_and_command_is_in_the_notebook(notebook, runbook):
    text = markdown(notebook)
    checklist = re.findall(r"^\s*- \[ \] (.+)$", runbook, flags=re.M)
    assert len(checklist) == 14
    for line in checklist:
        assert f"- [ ] {line}" in text, line
    expected = re.findall(r"Expected: (.+)$", runbook, flags=re.M)
    assert len(expected) == 7
    for line in expected:
        assert f"Expected: {line}" in text, line
    commands = re.findall(r"Command: `([^`]+)`", runbook)
    assert len(commands) == 7
    for command in commands:
        assert f"`{command}`" in text, command


def test_each_diagnostic_cell_shows_its_runbook_command(notebook, runbook):
    shown = " ".join(c.source for c in code_cells(notebook))
    diagnostics = runbook.split("## Diagnostics")[1].split("## Mitigations")[0]
    for command in re.findall(r"Command: `([^`]+)`", diagnostics):
        assert f'command="{command}"' in shown, command
    assert 'command="exportctl pause bulk"' in shown


# Cells call the library and render ----------------------------------------------------------
def statement_lines(source: str) -> list[str]:
    tree = ast.parse(source)
    lines: set[int] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return [source.splitlines()[n - 1] for n in sorted(lines)]


def test_code_cells_only_call_the_library(notebook):
    parameters = parameters_cell(notebook)
    for cell in code_cells(notebook):
        if cell is parameters:
            continue
        tree = ast.parse(cell.source)
        logic = [type(n).__name__ for n in ast.walk(tree) if isinstance(n, LOGIC)]
        assert not logic, f"logic in a cell ({logic}):\n{cell.source}"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module and node.module.split(".")[0] == "exportnb", cell.source
            assert not isinstance(node, ast.Import), f"imports only from exportnb:\n{cell.source}"
        lines = statement_lines(cell.source)
        assert 1 <= len(lines) <= MAX_LINES, f"{len(lines)} lines:\n{cell.source}"


def test_every_step_result_is_shown(notebook):
    sources = "\n".join(c.source for c in code_cells(notebook))
    for step in (
        "detection",
        "immediate_actions",
        "job_state",
        "storage_health",
        "checksums",
        "network_path",
        "mitigations",
        "recovery",
        "communication",
    ):
        assert f'show("{step}"' in sources, step
    assert "show_recommendations(assessed)" in sources and "show_parameters(incident)" in sources
    assert sources.count("show_chart(") == 4


def test_the_slow_steps_are_collected_from_the_probes_the_incident_started(notebook):
    sources = [c.source for c in code_cells(notebook)]
    assert "incident.start_probes()" in sources[1]  # the setup cell, right after opening
    collected = "\n".join(sources)
    for step in (
        "detect",
        "job_state",
        "storage_health",
        "verify_jobs",
        "impact_sweep",
        "network_path",
    ):
        assert re.search(rf"incident\.collect\(\s*{step}, ", collected), step


def test_the_impact_sweep_follows_the_checksums_and_feeds_what_comes_after(notebook):
    sources = [c.source for c in code_cells(notebook)]
    (checks,) = [i for i, s in enumerate(sources) if "collect(verify_jobs" in s]
    assert "incident.sweep_options(checks)" in sources[checks + 1]
    assert "progress=sweep_progress()" in sources[checks + 1]
    assert 'show("checksums", impact' in sources[checks + 1]
    later = "\n".join(sources[checks + 2 :])
    for use in (
        "assess(detection, jobs, storage, checks, impact, path",
        "affected_jobs=incident.affected_jobs(checks, impact)",
        "impact=impact",
        "findings_of(detection, jobs, storage, checks, impact, path, recovered)",
    ):
        assert use in later, use
    assert 'impact_sweep = "auto"' in parameters_cell(notebook).source


def test_cells_never_change_the_platform_themselves(notebook):
    sources = "\n".join(c.source for c in code_cells(notebook))
    for action in ("pause_bulk(", "retry(", "set_flag(", "set_chunk_size(", "unset_flag("):
        assert f".{action}" not in sources, action  # only through mitigations: journaled, once
    assert "respond(incident, assessed)" in sources and "mitigation_panel(incident" in sources
    assert "only what `[policy] auto_apply` allows is applied" in markdown(notebook)


# A real run -----------------------------------------------------------------------------------
@pytest.mark.integration
def test_the_template_runs_top_to_bottom_against_the_sandbox(sandbox, tmp_path, monkeypatch):
    alert = {"status": "firing", "commonLabels": {"alertname": "Export"}}
    records = run_template(
        sandbox,
        tmp_path,
        monkeypatch,
        incident_id="INC-42",
        job_ids=["job-unknown"],
        comms_lead="carol",
        alert=alert,
    )
    steps = [r["step"] for r in records]
    assert steps == [
        "detection",
        "immediate_actions",
        "immediate_actions",
        "immediate_actions",
        "job_state",
        "storage_health",
        "checksums",
        "checksums",
        "network_path",
        "assessment",
        "mitigations",
        "recovery",
        "communication",
        "mitigations",
        "communication",
    ]
    assert all(json.loads(json.dumps(r, allow_nan=False)) == r for r in records)
    declaration = records[1]["result"]
    assert declaration["incident_id"] == "INC-42" and declaration["comms_lead"] == "carol"
    assert declaration["operator"] == "test-operator"
    assert declaration["alert_summary"] == "firing Export"
    assert records[0]["result"]["reported"][0] == {
        "job_id": "job-unknown",
        "found": False,
        "status": None,
        "tenant": None,
        "error_code": None,
    }
    assert "job-unknown" in [j["job_id"] for j in records[6]["result"]["jobs"]]
    sweep = records[7]  # reported job IDs: every delivery of the incident is verified
    assert sweep["kind"] == "impact-sweep/v1" and sweep["result"]["ran"] is True
    assert "customers reported job IDs (job-unknown)" in sweep["result"]["reason"]
    assert sweep["result"]["verified"] == sweep["result"]["total"]
    path = records[8]["result"]  # paced by the template's probe parameters
    if path["method"] == "mtr":
        assert path["argv"][3:9] == ["-c", "10", "-i", "0.05", "-G", "1"]
    assert path["hops"][-1]["sent"] == 10
    assert records[10]["result"]["applied"] == []
    assert sandbox.platform().get_flag("export.bulk_paused") is None  # nothing applied


def run_template(sandbox, tmp_path, monkeypatch, **parameters) -> list[dict]:
    """Execute the template in the sandbox's environment; the records it holds, in order."""
    import papermill  # deferred: papermill is heavy

    for name, value in sandbox.env.items():
        monkeypatch.setenv(name, value)
    output = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(TEMPLATE),
        str(output),
        kernel_name="python3",
        progress_bar=False,
        parameters=parameters,
        cwd=str(tmp_path),
    )
    nb = nbformat.read(output, as_version=4)
    errors = [o for c in code_cells(nb) for o in c.outputs if o.output_type == "error"]
    assert not errors
    charts = [o for c in code_cells(nb) for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(charts) == 4
    return [
        o.data[RESULT_MIMETYPE]
        for c in code_cells(nb)
        for o in c.outputs
        if RESULT_MIMETYPE in o.get("data", {})
    ]


@pytest.mark.integration
def test_a_throttled_bucket_is_diagnosed_and_nothing_is_applied(sandbox, tmp_path, monkeypatch):
    bucket, fallback = sandbox.env["EXPORT_BUCKET"], sandbox.env["EXPORT_FALLBACK_BUCKET"]
    injected = sandbox.run(
        *exportnb_cmd("sandbox", "fault", "inject", "--json", "throttle", "--bucket", bucket),
        check=True,
    )
    fault = json.loads(injected.stdout)["id"]
    try:
        submitted = sandbox.run(
            *exportnb_cmd("sandbox", "submit", "--json", "--count", "12", "--size", "10MB"),
            check=True,
        )
        job_ids = json.loads(submitted.stdout)
        platform = sandbox.platform()
        wait_for(lambda: all(platform.get_job(j).job.status == "failed" for j in job_ids), 60)
        records = run_template(
            sandbox, tmp_path, monkeypatch, incident_id="INC-43", job_ids=job_ids[:1]
        )
    finally:
        sandbox.run(*exportnb_cmd("sandbox", "fault", "clear", str(fault)), check=True)
    by_step = {}
    for record in records:
        by_step.setdefault(record["step"], record["result"])
    assert by_step["detection"]["breached"] is True
    checks = {c["bucket"]: c["verdict"] for c in by_step["storage_health"]["checks"]}
    assert checks[bucket] == "throttled" and checks[fallback] == "ok"
    actions = [r["action"] for r in by_step["assessment"]["recommendations"]]
    assert "fallback-bucket" in actions
    plan = by_step["mitigations"]
    assert plan["applied"] == [] and plan["mode"] == "auto"
    assert any(
        s["command"].startswith("featurectl set export.fallback_bucket") for s in plan["steps"]
    )
    assert platform.get_flag("export.fallback_bucket") is None  # recommended, not applied
    assert platform.get_flag("export.bulk_paused") is None
    assert [r["job_id"] for r in by_step["detection"]["reported"]] == job_ids[:1]
