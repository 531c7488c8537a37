"""The kernel a run executes on: started ahead of the run, stopped at once when it ends.

A ``python3`` kernel (ipykernel of this Python) takes about half a second to boot, and as
long again to import what the library's frames and charts need (:data:`WARM`, which it
does as it boots). A run starts it first, in the run's own temporary working folder, so
that it boots while the run is being prepared and papermill loads: ``exportnb run`` starts
it before it even reads the input (bad input then stops it: nothing has run). The
kernel's environment is the caller's, with ``EXPORTNB_MODE=auto`` (the run is unattended:
:mod:`exportnb.mitigation.policy`) and ``$EXPORTNB_PROBES`` naming the folder where the run's probe
process, if any, hands over its results (:mod:`exportnb.incident.probes`). The imports leave the
notebook's namespace as it is: a cell that uses pandas still imports it.

A kernel that cannot be launched is not an error yet: :attr:`Kernel.failure` says why, and
the runner reports it (after it has checked the input) as it would have reported a kernel
that did not start. :meth:`Kernel.stop` kills the kernel's process group at once (when a
run ends its last cell has answered: there is nothing to wait for) and removes the folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from exportnb.incident import probes
from exportnb.mitigation.policy import MODE_ENV

HISTORY = "--HistoryManager.hist_file=:memory:"
"""No IPython history database for a run (what nbclient asks of the kernels it starts)."""
WARM = ("pandas", "matplotlib.figure", "matplotlib.backends.backend_agg")
"""What the library's frames and charts import when first used (a third of a second)."""


class Kernel:
    """One kernel for one run, with its working folder; a context manager that stops it."""

    def __init__(self, name: str, env: Mapping[str, str]) -> None:
        self.name = name
        self._folder = tempfile.TemporaryDirectory(prefix="exportnb-run-")
        self.work = Path(self._folder.name)
        self.environment: dict[str, str] = {
            **os.environ,
            **env,
            MODE_ENV: "auto",
            probes.ENV: str(self.work / "probes"),
        }
        self.log: IO[bytes] = (self.work / "kernel.log").open("w+b")
        self.manager: Any = None
        self.failure: Exception | None = None

    @classmethod
    def start(
        cls, name: str = "python3", env: Mapping[str, str] | None = None, *, warm: bool = True
    ) -> Kernel:
        """Launch kernel ``name`` (not waiting for it to be ready) with ``env`` over this
        process's environment; ``warm``: it imports :data:`WARM` as it boots."""
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        kernel = cls(name, env or {})
        manager = AsyncKernelManager(kernel_name=name)
        extra = [HISTORY, f"--ext={__name__}"] if warm else [HISTORY]
        try:
            run_sync(manager.start_kernel)(
                extra_arguments=extra,
                cwd=str(kernel.work),
                env=kernel.environment,
                stdout=kernel.log,
                stderr=kernel.log,
            )
        except Exception as exc:  # reported by the run that uses it, as a kernel not started
            kernel.failure = exc
        else:
            kernel.manager = manager
        return kernel

    def stop(self) -> None:
        """Kill the kernel and what it started, and remove the working folder."""
        from jupyter_core.utils import run_sync

        manager, self.manager = self.manager, None
        if manager is not None:
            provisioner = manager.provisioner
            process = getattr(provisioner, "process", None)
            if process is not None:
                with contextlib.suppress(OSError):
                    os.killpg(provisioner.pgid or process.pid, signal.SIGKILL)
                process.wait()
            with contextlib.suppress(RuntimeError):  # already dead: only the tidying is left
                run_sync(manager.shutdown_kernel)(now=True)
        self.log.close()
        self._folder.cleanup()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def load_ipython_extension(ipython: Any) -> None:
    """As an IPython extension (``--ext=exportnb.run.kernel``): import :data:`WARM` in a
    kernel that is booting, nothing else (the notebook's namespace is left as it is)."""
    import importlib

    for module in WARM:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
