"""Benchmark: the ``exportnb run`` command against a bare ``papermill`` command on a one-cell
notebook.

Target (issue #3): on the default scenario, the wall time of the ``exportnb run`` command
— a process of its own, as an on-call engineer or the alert receiver runs it, with the
sandbox's environment (``eval "$(exportnb sandbox env)"``): validation, execution on a fresh
kernel, redaction, HTML, the record written to an archive — is at most 2.0x the wall time
of the command ``papermill one_cell.ipynb out.ipynb`` (``print("ok")``) in the same
environment. Both are measured in this run, alternated, and compared by their medians.
The warm-up round is a notebook's first run: it reads the notebook's parameters with
papermill and keeps them (``$EXPORTNB_HOME/cache``), as every later run of it finds them;
such a first run, with that cache emptied each time, is shown for information.

For information, in this process (the library, as the service calls it): ``runner.run``
against ``papermill.execute_notebook`` of the one-cell notebook, and against
``papermill.execute_notebook`` of the same notebook with the same parameters (what the
runner adds on top of papermill itself).

With a sandbox running (``$EXPORTNB_HOME``), every command and kernel gets its environment
and the runs its defaults (reported jobs, target host and port), as ``exportnb demo`` does.

Run: ``python benchmarks/run_overhead.py [--rounds 7] [--notebook PATH] [-p NAME VALUE]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import nbformat
import papermill

from exportnb.archive.store import LocalArchive
from exportnb.core import config
from exportnb.platform.registry import local_environment
from exportnb.run import parameters, runner

TARGET = 2.0
BIN = Path(sys.executable).parent


def one_cell_notebook(folder: Path) -> Path:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell('print("ok")')],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    path = folder / "one_cell.ipynb"
    nbformat.write(nb, path)
    return path


def command(name: str, *args: str) -> list[str]:
    """The installed console script ``name`` of this environment, as a user runs it."""
    script = BIN / name
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-m", {"exportnb": "exportnb.cli"}.get(name, name), *args]


def timed_command(argv: Sequence[str], env: dict[str, str], cwd: Path) -> tuple[float, int]:
    began = time.perf_counter()
    done = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - began, done.returncode


def exportnb_argv(notebook: Path, archive: Path, given: dict, defaults: dict) -> list[str]:
    """``exportnb run`` with the run's parameters as flags (job IDs, ``-p NAME JSON``)."""
    args = ["run", "--notebook", str(notebook), "--archive", str(archive)]
    for job in defaults.get("job_ids", []):
        args += ["--job-id", job]
    known = parameters.declared(notebook)
    for name, value in {**defaults, **given}.items():
        if name != "job_ids" and name in known:
            args += ["-p", name, value if isinstance(value, str) else json.dumps(value)]
    return command("exportnb", *args)


def first_run(argv: Sequence[str], folder: Path) -> tuple[float, int]:
    """The command as on a notebook's first run: its parameters not yet kept."""
    for kept in (config.home() / "cache" / "declared").glob("*.json"):
        kept.unlink()
    return timed_command(argv, dict(os.environ), folder)


def bare_papermill(notebook: Path, folder: Path, params: dict | None = None) -> float:
    began = time.perf_counter()
    with contextlib.suppress(papermill.PapermillExecutionError):  # a failure costs its run too
        papermill.execute_notebook(
            str(notebook),
            str(folder / "out.ipynb"),
            parameters=params,
            kernel_name="python3",
            progress_bar=False,
        )
    return time.perf_counter() - began


def library_run(notebook: Path, archive: LocalArchive, options: dict) -> tuple[float, str]:
    began = time.perf_counter()
    record = runner.run(notebook, archive=archive, **options)
    return time.perf_counter() - began, record.status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--notebook", type=Path, help="default: the incident template")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args()
    notebook = (args.notebook or runner.default_template()).absolute()
    given = parameters.parse_assignments(args.p, parameters.declared(notebook))
    found = local_environment()
    env, defaults = found if found else ({}, {})
    os.environ.update(env)  # the commands and bare papermill's kernels see the sandbox too
    options = {"parameters": given, "defaults": defaults, "env": env}
    same = runner.plan(notebook, **options).parameters
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        archive, one = LocalArchive(folder / "archive"), one_cell_notebook(folder)
        ours = exportnb_argv(notebook, folder / "archive", given, defaults)
        base = command("papermill", str(one), str(folder / "out.ipynb"))
        keys = ("cmd", "pm", "first", "lib", "pmlib", "same")
        figures: dict[str, list[float]] = {key: [] for key in keys}
        codes: set[int] = set()
        statuses: set[str] = set()
        steps: list[Callable[[], None]] = [
            lambda: _note(figures["cmd"], codes, timed_command(ours, dict(os.environ), folder)),
            lambda: _note(figures["pm"], codes, timed_command(base, dict(os.environ), folder)),
            lambda: _note(figures["first"], codes, first_run(ours, folder)),
            lambda: _note(figures["lib"], statuses, library_run(notebook, archive, options)),
            lambda: figures["pmlib"].append(bare_papermill(one, folder)),
            lambda: figures["same"].append(bare_papermill(notebook, folder, same)),
        ]
        for step in steps:  # warm up: caches, compiled files
            step()
        for values in figures.values():
            values.clear()
        for _ in range(args.rounds):
            for step in steps:
                step()
    report(notebook, found is not None, figures, codes, statuses)


def _note(values: list[float], outcomes: set, measured: tuple[float, object]) -> None:
    values.append(measured[0])
    outcomes.add(measured[1])


def report(
    notebook: Path,
    sandbox: bool,
    figures: dict[str, list[float]],
    codes: set[int],
    statuses: set[str],
) -> None:
    m = {name: statistics.median(values) for name, values in figures.items()}
    where = "sandbox env" if sandbox else "no sandbox"
    print(
        f"notebook: {notebook} ({where}; rounds: {len(figures['cmd'])}, alternated; "
        f"exportnb run exit codes: {sorted(codes)}; library runs: {', '.join(sorted(statuses))})"
    )
    print(f"{'figure':<62}{'median s':>10}")
    rows = [
        ("cmd", "exportnb run (command: validate, execute, redact, HTML, archive)"),
        ("pm", "papermill one_cell.ipynb out.ipynb (command, baseline)"),
        ("first", "exportnb run, a notebook's first run (parameters not kept)"),
        ("lib", "runner.run (library, in this process)"),
        ("pmlib", "papermill.execute_notebook, one-cell notebook (library)"),
        ("same", "papermill.execute_notebook, same notebook and parameters"),
    ]
    for key, label in rows:
        print(f"{label:<62}{m[key]:>10.2f}")
    ratio = m["cmd"] / m["pm"]
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"ratio exportnb run / papermill, commands: {ratio:.2f}  (target <= {TARGET})  {verdict}")
    print(
        f"ratio exportnb run on a notebook's first run / papermill, commands: "
        f"{m['first'] / m['pm']:.2f}  (information)"
    )
    print(
        f"ratio runner.run / papermill.execute_notebook one-cell, library: "
        f"{m['lib'] / m['pmlib']:.2f}  (information)"
    )
    print(
        f"ratio runner.run / same notebook in bare papermill: {m['lib'] / m['same']:.2f}  "
        "(information)"
    )


if __name__ == "__main__":
    main()
