"""Benchmark: ``exportnb run`` (library call) against a bare papermill run of a one-cell notebook.

Target: the median of ``runner.run`` on the notebook (default: the incident template;
``--notebook`` for another) — validation, execution on a fresh kernel, redaction, HTML,
the record, written to a temporary local archive — takes at most 2.0x the median of a
bare ``papermill.execute_notebook`` of a one-cell notebook (``print("ok")``). Rounds are
alternated. Also shown, for information: bare papermill on the same notebook with the
same parameters (what the runner adds on top of papermill itself).

When a sandbox is running, every kernel gets its environment (``exportnb sandbox env``)
and the runner its defaults (reported jobs, target host), as ``exportnb demo`` does.

Run: ``python benchmarks/run_overhead.py [--rounds 5] [--notebook PATH] [-p NAME VALUE]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import nbformat
import papermill

from exportnb import parameters, runner
from exportnb.archive import LocalArchive

TARGET = 2.0


def one_cell_notebook(folder: Path) -> Path:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell('print("ok")')],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}},
    )  # fmt: skip
    path = folder / "one_cell.ipynb"
    nbformat.write(nb, path)
    return path


def bare_papermill(notebook: Path, folder: Path, params: dict | None = None) -> float:
    began = time.perf_counter()
    with contextlib.suppress(papermill.PapermillExecutionError):  # a failure costs its run too
        papermill.execute_notebook(str(notebook), str(folder / "out.ipynb"), parameters=params,
                                   kernel_name="python3", progress_bar=False)  # fmt: skip
    return time.perf_counter() - began


def exportnb_run(notebook: Path, archive: LocalArchive, options: dict) -> tuple[float, str]:
    began = time.perf_counter()
    record = runner.run(notebook, archive=archive, **options)
    return time.perf_counter() - began, record.status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--notebook", type=Path, help="default: the incident template")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args()
    notebook = (args.notebook or runner.default_template()).absolute()
    given = parameters.parse_assignments(args.p, parameters.declared(notebook))
    found = runner.sandbox_defaults()
    env, defaults = found if found else ({}, {})
    os.environ.update(env)  # bare papermill's kernels see the sandbox too
    options = {"parameters": given, "defaults": defaults, "env": env}
    same = runner.plan(notebook, **options).parameters
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        archive, one = LocalArchive(folder / "archive"), one_cell_notebook(folder)
        exportnb_run(notebook, archive, options), bare_papermill(one, folder)  # warm up
        ours, base, plain, statuses = [], [], [], set()
        for _ in range(args.rounds):
            elapsed, status = exportnb_run(notebook, archive, options)
            ours.append(elapsed)
            statuses.add(status)
            base.append(bare_papermill(one, folder))
            plain.append(bare_papermill(notebook, folder, same))
    o, b, p = statistics.median(ours), statistics.median(base), statistics.median(plain)
    sandbox = "sandbox env" if found else "no sandbox"
    print(f"notebook: {notebook} ({sandbox}; runs: {', '.join(sorted(statuses))})")
    print(f"{'figure':<56}{'median s':>10}")
    print(f"{'bare papermill, one-cell notebook (baseline)':<56}{b:>10.2f}")
    print(f"{'bare papermill, same notebook and parameters':<56}{p:>10.2f}")
    print(f"{'exportnb run (validate, execute, redact, HTML, archive)':<56}{o:>10.2f}")
    verdict = "PASS" if o / b <= TARGET else "FAIL"
    print(f"ratio exportnb run / one-cell baseline: {o / b:.2f}  (target <= {TARGET})  {verdict}")
    print(f"ratio exportnb run / same notebook in bare papermill: {o / p:.2f}  (information)")


if __name__ == "__main__":
    main()
