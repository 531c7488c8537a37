"""Benchmark: the kernel's peak memory while it runs the incident template.

Target: the kernel's peak resident set (``VmHWM`` in ``/proc/<pid>/status``) stays under
400 MB. The notebook (default: the template; ``--notebook`` for another) is parameterized
the runner's way, gets one more cell at the end that reads ``/proc/self/status``, and runs
on a fresh ``python3`` kernel with errors allowed, so that the last cell runs even when a
diagnostic fails. The kernel process is also polled, which gives a figure when the kernel
dies before the last cell. With a sandbox running, the kernel gets its environment.

Run: ``python benchmarks/kernel_memory.py [--notebook PATH] [-p NAME VALUE] [--target-mb 400]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from exportnb.platform.registry import local_environment
from exportnb.run import parameters, runner

PROBE = """import json
fields = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({k: int(fields[k].split()[0]) for k in ("VmHWM", "VmRSS")}))"""


def peak_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Poller(threading.Thread):
    """Samples the kernel's VmHWM until stopped (a fallback for a kernel that dies)."""

    def __init__(self, client: NotebookClient) -> None:
        super().__init__(daemon=True)
        self.client, self.peak, self.done = client, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            pid = getattr(getattr(self.client.km, "provisioner", None), "pid", None)
            if pid:
                self.peak = max(self.peak, peak_kb(pid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", type=Path, help="default: the incident template")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--target-mb", type=float, default=400.0)
    parser.add_argument("--cell-timeout", type=float, default=600.0)
    args = parser.parse_args()
    notebook = (args.notebook or runner.default_template()).absolute()
    given = parameters.parse_assignments(args.p, parameters.declared(notebook))
    found = local_environment()
    env, defaults = found if found else ({}, {})
    nb = runner.load(runner.plan(notebook, parameters=given, defaults=defaults, env=env))
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    with tempfile.TemporaryDirectory() as work:
        client = NotebookClient(
            nb,
            kernel_name=runner.KERNEL,
            allow_errors=True,
            timeout=args.cell_timeout,
            resources={"metadata": {"path": work}},
        )
        poller = Poller(client)
        poller.start()
        try:
            client.execute(env={**os.environ, **env})
        except DeadKernelError as exc:
            print(f"the kernel died: {exc}")
        finally:
            poller.done.set()
    errors = [o.ename for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    probe = [o.text for o in nb.cells[-1].get("outputs", []) if o.output_type == "stream"]
    final = json.loads(probe[0]) if probe else {}
    peak = max(final.get("VmHWM", 0), poller.peak) / 1024
    print(
        f"notebook: {notebook} ({'sandbox env' if found else 'no sandbox'}; "
        f"{len(errors)} cell error(s){': ' + ', '.join(errors) if errors else ''})"
    )
    print(
        f"kernel peak RSS (VmHWM): {peak:.0f} MB   final RSS: "
        f"{final.get('VmRSS', 0) / 1024:.0f} MB   (polled peak {poller.peak / 1024:.0f} MB)"
    )
    verdict = "PASS" if 0 < peak <= args.target_mb else "FAIL"
    print(f"target: peak <= {args.target_mb:.0f} MB  {verdict}")


if __name__ == "__main__":
    main()
