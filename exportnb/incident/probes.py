"""Early probes: the runbook steps that wait on other systems, started before their cells ask.

Job state and detection (the platform's store), HeadBucket on each bucket, checksum
verification and the impact sweep (S3) and the network path (seconds of mtr) wait on other
systems more than they compute. :meth:`~exportnb.incident.model.Incident.start_probes`
starts them with exactly the arguments their cells will give them; each cell then asks for
its step with :meth:`~exportnb.incident.model.Incident.collect`. A result is used only for
the very same call (the function, and arguments equal to the cell's); any other call, an
early call that failed, or one that never came makes the call in the cell itself, where an
error surfaces as it would have without probes. Collected once: a re-run cell measures anew.

The probes run in one of two places::

    JupyterLab, papermill   kernel: open_incident -> start_probes -> EarlyProbes (threads)

    exportnb run            runner: plan -> ProbeProcess.launch --------------------+
                              (python -m exportnb.incident.probe_process FOLDER)    | results,
                            kernel: boots ... open_incident -> HandedProbes <-------+ one file each

A call is compared without the keyword arguments of :data:`UNCOMPARED` (a progress
callback says how a call reports as it goes, not what it computes): the early call runs
without them, and a cell that passes one gets the early result all the same.

* :class:`EarlyProbes`: threads in the notebook's own kernel; what a notebook opened
  anywhere does.
* :class:`ProbeProcess`: the runner starts it as soon as a run is planned, beside the
  kernel that is still booting. It opens the incident from the same parameters, starts
  the same probes, and leaves each result in FOLDER as it arrives (:class:`Handed`). The
  kernel, told of FOLDER by ``$EXPORTNB_PROBES``, opens its incident at the times the
  probe process opened it at (:class:`Opened`: ``now``, the incident's start) and collects
  from there (:class:`HandedProbes`). The slow probes then run on another core while the
  kernel starts and draws, and the kernel needs no S3 client at all.

The hand-off is pickled (results are the library's own dataclasses) in the run's private
working folder, which only the runner's processes see. A file appears whole (written, then
renamed). The probe process holds an exclusive ``flock`` on FOLDER/alive from before it
starts until it exits: a kernel waiting for a result that will never come (the process died)
stops waiting and makes the call.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from exportnb.incident.parameters import PARAMETERS
from exportnb.platform import Platform

_T = TypeVar("_T")
_P = ParamSpec("_P")
Arguments = tuple[tuple[Any, ...], Mapping[str, Any]]
"""A call's positional and keyword arguments."""
CallKey = tuple[str, tuple[Any, ...], dict[str, Any]]
"""A call as another process can compare it: the function's name, then its arguments."""

ENV = "EXPORTNB_PROBES"
"""Names the folder a probe process hands its results over in (set for a run's kernel)."""
GIVEN, OPENED, ALIVE, LOG = "given.json", "opened.pickle", "alive", "probes.log"
POLL = 0.005
"""Seconds between looks for a result that is not there yet."""
PROCESS = "exportnb.incident.probe_process"
"""The module the probe process runs (``python -m``)."""
UNCOMPARED = frozenset({"progress"})
"""Keyword arguments left out when calls are compared: how a call reports as it goes."""


# In the kernel: threads -------------------------------------------------------------------
class EarlyProbes:
    """Calls started in the background, each collected once by a cell making the same call.

    :meth:`start` runs ``function(*args, **kwargs)`` in a worker, the arguments made there
    by ``prepare`` (which may wait for another started call: the buckets to check need the
    job state). :meth:`collect` returns the early result when the function and arguments
    equal the ones asked for; otherwise, or when the early call failed, it makes the call
    itself, so an error surfaces in the cell that asked, as it would have without probes.
    A second collect of the same function makes the call again: a re-run cell measures anew.
    """

    WORKERS = 7

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._started: dict[Callable[..., Any], Future[tuple[Arguments, Any]]] = {}
        self._lock = threading.Lock()

    def start(
        self, function: Callable[..., Any], prepare: Callable[[], Arguments]
    ) -> Future[tuple[Arguments, Any]]:
        def run() -> tuple[Arguments, Any]:
            args, kwargs = prepare()
            return (args, kwargs), function(*args, **kwargs)

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.WORKERS, thread_name_prefix="probe")
            future = self._pool.submit(run)
            self._started[function] = future
        return future

    def collect(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with self._lock:
            future = self._started.pop(function, None)
        if future is not None:
            try:
                early, result = future.result()
            except Exception:  # the call below meets the error in the cell that asked
                early = None
            if early == (args, compared(kwargs)):
                return result
        return function(*args, **kwargs)

    def started(self) -> list[str]:
        """The names (:func:`name_of`) of the calls started and not collected yet."""
        with self._lock:
            return [name_of(function) for function in self._started]

    def finished(self) -> Iterator[tuple[Callable[..., Any], Future[tuple[Arguments, Any]]]]:
        """Each started call, as it finishes (the future is done)."""
        with self._lock:
            by_future = {future: function for function, future in self._started.items()}
        for future in as_completed(by_future):
            yield by_future[future], future


def compared(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments that say what a call computes (:data:`UNCOMPARED` left out)."""
    return {name: value for name, value in kwargs.items() if name not in UNCOMPARED}


def arguments(function: Callable[_P, Any], *args: _P.args, **kwargs: _P.kwargs) -> Arguments:
    """The arguments of a call of ``function``, as :meth:`EarlyProbes.start` prepares them:
    written as the call, so that a type checker holds them to the function's signature."""
    return args, kwargs


def result_of(future: Future[tuple[Arguments, _T]]) -> _T:
    """The result of a started call (its arguments left out)."""
    return future.result()[1]


# The hand-off -----------------------------------------------------------------------------
def name_of(function: Callable[..., Any]) -> str:
    """``module.qualname``: the same function in another process has the same name."""
    return f"{function.__module__}.{function.__qualname__}"


def call_key(
    function: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> CallKey:
    """The call, comparable across processes: a platform stands for itself by its name."""
    return (
        name_of(function),
        tuple(_comparable(a) for a in args),
        {k: _comparable(v) for k, v in compared(kwargs).items()},
    )


def _comparable(value: Any) -> Any:
    return ("platform", value.name) if isinstance(value, Platform) else value


@dataclass(frozen=True)
class Opened:
    """What the probe process opened the incident with: the parameters (over their defaults,
    as given, before validation), the times it judged the incident at, the calls started."""

    parameters: dict[str, Any]
    now: datetime
    incident_start: datetime
    breach_found: bool
    started: tuple[str, ...]


@dataclass(frozen=True)
class Handed:
    """One started call as it ended: its key and result, or ``ok=False`` if it failed."""

    key: CallKey | None
    result: Any = None
    ok: bool = False

    @classmethod
    def of(cls, function: Callable[..., Any], future: Future[tuple[Arguments, Any]]) -> Handed:
        try:
            (args, kwargs), result = future.result()
        except Exception:  # the kernel makes the call itself and meets the error there
            return cls(None)
        return cls(call_key(function, args, kwargs), result, True)


class HandedProbes:
    """The results a probe process leaves in a folder, collected as :class:`EarlyProbes`'s."""

    def __init__(self, folder: Path, started: Iterable[str]) -> None:
        self._folder = folder
        self._waiting = set(started)
        self._lock = threading.Lock()

    def collect(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        name = name_of(function)
        with self._lock:
            waiting = name in self._waiting
            self._waiting.discard(name)
        if waiting:
            handed = self._wait_for(name)
            if handed is not None and handed.ok and handed.key == call_key(function, args, kwargs):
                result: _T = handed.result
                return result
        return function(*args, **kwargs)

    def _wait_for(self, name: str) -> Handed | None:
        path = self._folder / f"{name}.pickle"
        while not path.exists():
            if not alive(self._folder):
                break
            time.sleep(POLL)
        found = _read(path)
        return found if isinstance(found, Handed) else None


def handed_over(parameters: Mapping[str, Any]) -> tuple[Opened, HandedProbes] | None:
    """The incident a probe process opened for exactly these ``parameters`` (over their
    defaults), with its results; None without ``$EXPORTNB_PROBES``, or for other parameters,
    or when the probe process could not open it."""
    folder = os.environ.get(ENV)
    if not folder:
        return None
    where = Path(folder)
    opened = _read(where / OPENED)
    while opened is None and alive(where):
        time.sleep(POLL)
        opened = _read(where / OPENED)
    if not isinstance(opened, Opened) or opened.parameters != dict(parameters):
        return None
    return opened, HandedProbes(where, opened.started)


def alive(folder: Path) -> bool:
    """Whether the probe process that hands over in ``folder`` still runs."""
    try:
        with (folder / ALIVE).open("rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def hand_over(path: Path, value: Any) -> None:
    """``value`` pickled into ``path`` for the kernel to collect; the file appears whole."""
    part = path.with_name(path.name + ".part")
    try:
        part.write_bytes(pickle.dumps(value))
    except (pickle.PicklingError, TypeError, AttributeError):
        part.write_bytes(pickle.dumps(Handed(None)))  # not picklable: the kernel calls itself
    part.replace(path)


def _read(path: Path) -> Any:
    try:
        return pickle.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except Exception:  # a result this kernel cannot load is one it makes itself
        return None


# The runner's side -------------------------------------------------------------------------
def applies_to(declared: Iterable[str]) -> bool:
    """Whether a notebook with these parameters is an incident notebook (it declares all
    of the incident's parameters), whose probes are worth starting early."""
    return set(PARAMETERS) <= set(declared)


class ProbeProcess:
    """``python -m exportnb.incident.probe_process FOLDER``, started by the runner for one
    run (:mod:`exportnb.incident.probe_process`)."""

    def __init__(self, folder: Path, process: subprocess.Popen[bytes]) -> None:
        self.folder, self.process = folder, process

    @classmethod
    def launch(
        cls, folder: Path, parameters: Mapping[str, Any], env: Mapping[str, str]
    ) -> ProbeProcess:
        """Start probing for a run with these (validated) notebook parameters, in a process
        of its own with the kernel's environment; its results go to ``folder`` (new)."""
        folder.mkdir(mode=0o700)
        given = {name: value for name, value in parameters.items() if name in PARAMETERS}
        (folder / GIVEN).write_text(json.dumps(given), encoding="utf-8")
        environment = {name: value for name, value in env.items() if name != ENV}
        with (folder / ALIVE).open("wb") as lock, (folder / LOG).open("wb") as log:
            fcntl.flock(lock, fcntl.LOCK_EX)  # held by the process from its first instant
            process = subprocess.Popen(
                [sys.executable, "-m", PROCESS, str(folder), str(lock.fileno())],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(lock.fileno(),),
                start_new_session=True,
                cwd=folder,
            )
        return cls(folder, process)

    @property
    def environment(self) -> dict[str, str]:
        """What the kernel's environment needs to collect from this process."""
        return {ENV: str(self.folder)}

    def stop(self) -> None:
        """Stop the process and whatever it started (mtr), if they still run."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
