"""The runner: validated parameters → papermill on a real kernel → one record in the archive.

:func:`run` checks everything before anything runs (the notebook, its declared
parameters, the values, the incident ID, the archive), executes the notebook with
papermill's execution manager and client on a ``python3`` kernel (ipykernel of this
Python) with a per-cell timeout, without writing the notebook anywhere while it runs,
then redacts, renders and archives the record exactly once (:mod:`exportnb.record.model`).
A notebook that raises, exits non-zero, times out or kills its kernel is archived too,
with status ``failed`` and the cells that did run.

The default notebook is the incident template, looked up in this order:
``$EXPORTNB_TEMPLATE``; ``templates/export_failure.ipynb`` beside the package in a source
checkout; ``exportnb/templates/export_failure.ipynb`` shipped inside the package.

Lifecycle hooks (:class:`Hooks`) are named callables, so that a service can subscribe.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from exportnb.archive import index as archive_index
from exportnb.archive import store as archives
from exportnb.core import config
from exportnb.core.errors import (
    ExportnbError,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    StorageError,
)
from exportnb.incident import probes
from exportnb.platform import current_actor
from exportnb.record import redaction
from exportnb.record.model import (
    Outcome,
    Record,
    RecordError,
    assemble,
    check_incident_id,
    warm_html,
)
from exportnb.run.kernel import Kernel
from exportnb.run.parameters import declared, validate

TEMPLATE = "export_failure.ipynb"
KERNEL = "python3"
ERROR_MARKER_TAG = "papermill-error-cell-tag"


@dataclass(frozen=True)
class Hooks:
    """Callables the runner calls as a run goes; each is optional.

    ``on_start(incident_id, notebook)`` once everything is validated, before the kernel
    starts; ``on_cell_complete(index, total)`` after each code cell; ``on_record(record)``
    once the record is archived (``record.location`` says where).
    """

    on_start: Callable[[str, Path], None] | None = None
    on_cell_complete: Callable[[int, int], None] | None = None
    on_record: Callable[[Record], None] | None = None


@dataclass(frozen=True)
class Plan:
    """A validated run: what will execute, with which parameters, recorded where."""

    notebook: Path
    incident_id: str
    job_ids: list[str]
    parameters: dict[str, Any]
    operator: str
    redactor: redaction.Redactor = field(repr=False)
    declared: frozenset[str] = frozenset()
    """The parameters the notebook declares."""


def default_template() -> Path:
    """The incident template (see the module docstring for the order it is looked up in)."""
    explicit = os.environ.get("EXPORTNB_TEMPLATE")
    if explicit:
        return Path(explicit).expanduser()
    package = Path(__file__).resolve().parents[1]  # exportnb/
    for candidate in (package.parent / "templates" / TEMPLATE, package / "templates" / TEMPLATE):
        if candidate.is_file():
            return candidate
    raise NotFound(
        f"no incident template: neither $EXPORTNB_TEMPLATE, {package.parent / 'templates'} nor "
        f"{package / 'templates'} holds {TEMPLATE}; give a notebook with --notebook"
    )


def new_incident_id(now: datetime | None = None) -> str:
    return "INC-" + (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def plan(
    notebook: str | Path | None = None,
    *,
    incident_id: str | None = None,
    job_ids: Sequence[str] = (),
    alert: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    operator: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Plan:
    """Validate a run; InvalidInput (nothing runs) when anything is wrong.

    ``incident_id`` names the record, and goes into the parameter of that name when the
    notebook declares it, as does the operator. ``job_ids`` and ``alert`` are for the
    notebook: one that does not declare them refuses them as unknown parameters.
    ``defaults`` are passed only where declared and not given otherwise (the sandbox's
    target host, say).
    """
    path = (Path(notebook).expanduser() if notebook else default_template()).absolute()
    known = declared(path)
    flags = {"incident_id": incident_id or None, "job_ids": list(job_ids) or None, "alert": alert}
    given = _merged(parameters or {}, flags)
    incident = given.get("incident_id") or new_incident_id()
    check_incident_id(str(incident))
    operator = operator or current_actor()
    extra = {"incident_id": incident, "operator": operator, **(defaults or {})}
    given |= {k: v for k, v in extra.items() if k in known and k not in given}
    if "incident_id" not in known:
        given.pop("incident_id", None)  # it names the record all the same
    checked = validate(given, known)
    jobs = checked.get("job_ids") if isinstance(checked.get("job_ids"), list) else job_ids
    return Plan(
        path,
        str(incident),
        [str(j) for j in jobs or []],
        checked,
        operator,
        redaction.redactor(checked, {**os.environ, **(env or {})}),
        frozenset(known),
    )


def _merged(parameters: Mapping[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """``-p`` parameters with the values of ``--incident``, ``--job-id``, ``--alert``."""
    given = dict(parameters)
    for name, value in flags.items():
        if value is not None:
            if name in given and given[name] != value:
                raise InvalidInput(f"{name} is given twice, with different values")
            given[name] = value
    return given


def run(
    notebook: str | Path | None = None,
    *,
    incident_id: str | None = None,
    job_ids: Sequence[str] = (),
    alert: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    archive: str | archives.Archive | None = None,
    cell_timeout: float | None = None,
    start_timeout: float = 60.0,
    progress: bool = False,
    env: Mapping[str, str] | None = None,
    operator: str | None = None,
    hide_input: bool = False,
    hooks: Hooks | None = None,
    kernel: Kernel | None = None,
) -> Record:
    """Run a notebook and archive its record; returns the record (``location`` set).

    Raises InvalidInput before anything runs, PreconditionFailed when the kernel cannot
    start, StorageError when the archive cannot take the record. A failed notebook is not
    an exception: the record says ``status == "failed"`` (see :func:`exit_code`). While the
    kernel runs, the HTML renderer gets ready on this process's side (:func:`warm_html`).
    ``kernel`` is one started ahead for this run (:meth:`Kernel.start` with the same
    ``env``), stopped when the run ends or is refused; by default one is started here.
    """
    hooks = hooks or Hooks()
    try:
        if cell_timeout is not None and cell_timeout <= 0:
            raise InvalidInput("the cell timeout must be a positive number of seconds")
        the_plan = plan(
            notebook,
            incident_id=incident_id,
            job_ids=job_ids,
            alert=alert,
            parameters=parameters,
            defaults=defaults,
            operator=operator,
            env=env,
        )
        store = archives.open_archive(archive)
        store.check()
        if hooks.on_start:
            hooks.on_start(the_plan.incident_id, the_plan.notebook)
    except BaseException:
        if kernel is not None:
            kernel.stop()
        raise
    warm = threading.Thread(
        target=warm_html,
        args=(the_plan.notebook,),
        name="warm-html",
        kwargs={"hide_input": hide_input},
        daemon=True,
    )
    outcome = execute(
        the_plan,
        cell_timeout=cell_timeout,
        start_timeout=start_timeout,
        progress=progress,
        env=env,
        on_cell_complete=hooks.on_cell_complete,
        kernel=kernel,
        on_executing=warm.start,
    )
    record, files = assemble(
        outcome,
        incident_id=the_plan.incident_id,
        job_ids=the_plan.job_ids,
        parameters=the_plan.parameters,
        notebook=the_plan.notebook,
        operator=the_plan.operator,
        redactor=the_plan.redactor,
        hide_input=hide_input,
        locate=store.location,
    )
    save(store, record, files)
    if hooks.on_record:
        hooks.on_record(record)
    return record


def exit_code(record: Record) -> int:
    """0 when the notebook succeeded, 1 when it failed (its record is archived either way)."""
    return 0 if record.status == "succeeded" else 1


def save(store: archives.Archive, record: Record, files: Mapping[str, bytes]) -> None:
    """Archive the record; if the archive refuses, keep it under $EXPORTNB_HOME/unarchived."""
    try:
        store.write(record.record_id, files)
    except StorageError as exc:
        keep = archives.LocalArchive(config.home() / "unarchived")
        try:
            where = keep.write(record.record_id, files)
        except ExportnbError:
            raise exc from None
        raise StorageError(
            f"{exc.message}; the record is kept in {where}", code=exc.code, status=exc.status
        ) from exc
    archive_index.record_saved(store, record, files)  # never raises: the index can be rebuilt


# Execution -----------------------------------------------------------------------------
def load(the_plan: Plan) -> Any:
    """The notebook with its parameters injected the papermill way (a tagged cell)."""
    from papermill.execute import prepare_notebook_metadata, remove_error_markers
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(the_plan.notebook))
    if the_plan.parameters:
        nb = parameterize_notebook(nb, the_plan.parameters, kernel_name=KERNEL)
    nb = prepare_notebook_metadata(nb, str(the_plan.notebook), None)
    return remove_error_markers(nb)


def execute(
    the_plan: Plan,
    *,
    cell_timeout: float | None = None,
    start_timeout: float = 60.0,
    progress: bool = False,
    env: Mapping[str, str] | None = None,
    on_cell_complete: Callable[[int, int], None] | None = None,
    kernel: Kernel | None = None,
    early_probes: bool = True,
    on_executing: Callable[[], None] | None = None,
) -> Outcome:
    """Execute on a fresh kernel in a temporary working folder; nothing is written.

    ``kernel`` is one started ahead for this run (:meth:`Kernel.start`, with the same
    ``env``); without one, a kernel is started here. An incident notebook's probes start at
    once, in a process of their own (:class:`exportnb.incident.probes.ProbeProcess`;
    ``early_probes=False`` leaves them to the notebook). The kernel's own log (not the
    cells' output) is shown only when the kernel does not start. Once the last cell has
    answered, every output is in hand: the kernel (and whatever it started) is stopped at
    once rather than asked to tidy up, which would cost the interpreter's whole teardown (a
    third of a second with pandas loaded); so is the probe process. ``on_executing()`` is
    called as the notebook goes to the kernel (papermill loaded): work to do meanwhile.
    """
    with kernel or Kernel.start(KERNEL, env) as running:
        early = None
        if early_probes and probes.applies_to(the_plan.declared):
            early = probes.ProbeProcess.launch(
                running.work / "probes", the_plan.parameters, running.environment
            )
        try:
            return _execute(
                the_plan,
                running,
                cell_timeout=cell_timeout,
                start_timeout=start_timeout,
                progress=progress,
                on_cell_complete=on_cell_complete,
                on_executing=on_executing,
            )
        finally:
            if early is not None:
                early.stop()


def _execute(
    the_plan: Plan,
    kernel: Kernel,
    *,
    cell_timeout: float | None,
    start_timeout: float,
    progress: bool,
    on_cell_complete: Callable[[int, int], None] | None,
    on_executing: Callable[[], None] | None,
) -> Outcome:
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NotebookExecutionManager

    nb = load(the_plan)
    manager = NotebookExecutionManager(
        nb, output_path=None, progress_bar=progress, log_output=False, autosave_cell_every=0
    )
    started: list[int] = []

    def done(cell: Any, cell_index: int, **_: Any) -> None:
        if on_cell_complete:
            on_cell_complete(cell_index, len(nb.cells))

    began = datetime.now(UTC)
    client = PapermillNotebookClient(
        manager,
        km=kernel.manager,
        kernel_name=kernel.name,
        timeout=cell_timeout,
        startup_timeout=start_timeout,
        resources={"metadata": {"path": str(kernel.work)}},
        on_cell_start=lambda cell, cell_index, **_: started.append(cell_index),
        on_cell_complete=done,
    )
    manager.notebook_start()
    try:
        if kernel.failure is not None:
            raise kernel.failure
        if on_executing:
            on_executing()
        client.execute()
    except Exception as exc:
        _crashed(manager, nb, started, exc, cell_timeout, kernel.log)
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
        manager.cleanup_pbar()
        manager.notebook_complete()
    return Outcome(nb, began, datetime.now(UTC), failure(nb))


def _crashed(
    manager: Any,
    nb: Any,
    started: list[int],
    exc: Exception,
    cell_timeout: float | None,
    log: IO[bytes],
) -> None:
    """The kernel died, a cell timed out, or the kernel never started."""
    import nbformat
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    if not started:
        log.seek(0)
        said = log.read().decode(errors="replace").strip().splitlines()[-10:]
        raise PreconditionFailed(
            f"the {KERNEL} kernel did not start: {exc}" + "".join(f"\n  {x}" for x in said)
        ) from exc
    if isinstance(exc, CellTimeoutError):
        ename, evalue = "CellTimeoutError", f"the cell ran longer than {cell_timeout:g}s"
    elif isinstance(exc, DeadKernelError):
        ename, evalue = "DeadKernelError", "the kernel died while running this cell"
    else:
        ename, evalue = type(exc).__name__, str(exc)
    cell = nb.cells[started[-1]]
    cell.outputs.append(
        nbformat.v4.new_output(
            "error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"]
        )
    )
    manager.cell_exception(cell, cell_index=started[-1])


def failure(nb: Any) -> RecordError | None:
    """The first failing cell, as papermill finds it; marks it the way papermill does.

    A ``sys.exit(0)`` (or ``sys.exit()``) stops the notebook without failing it.
    """
    for index, cell in enumerate(nb.cells):
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        clean_exit = [o for o in errors if o.ename == "SystemExit" and o.evalue in ("", "0")]
        failed = [o for o in errors if o not in clean_exit]
        if failed:  # the last: a timeout or dead kernel error comes after what the cell said
            return _mark(nb, index, failed[-1].ename, failed[-1].evalue)
        raised = cell.get("metadata", {}).get("papermill", {}).get("exception") is True
        if raised and not clean_exit:
            return _mark(nb, index, "CellExecutionError", "")
    return None


def _mark(nb: Any, index: int, ename: str, evalue: str) -> RecordError:
    import nbformat
    from papermill.execute import ERROR_ANCHOR_MSG, ERROR_MESSAGE_TEMPLATE

    cell = nb.cells[index]
    count = cell.get("execution_count")
    anchor = nbformat.v4.new_markdown_cell(ERROR_ANCHOR_MSG)
    message = nbformat.v4.new_markdown_cell(ERROR_MESSAGE_TEMPLATE % str(count))
    for marker in (anchor, message):
        marker.metadata["tags"] = [ERROR_MARKER_TAG]
    nb.cells.insert(index, anchor)
    nb.cells.insert(0, message)
    return RecordError(ename, evalue, index + 2, cell.get("id"), count)


def prepare(notebook: str | Path | None = None, **given: Any) -> tuple[Path, bool]:
    """Prepare an investigation (papermill ``prepare_only``) in $EXPORTNB_HOME/work/<incident>/.

    ``given`` are the arguments of :func:`plan`. Returns the notebook and whether it was made
    now: an existing working copy is left as it is (the engineer's work in progress).
    """
    import papermill

    the_plan = plan(notebook, **given)
    folder = config.home() / "work" / the_plan.incident_id
    target = folder / the_plan.notebook.name
    if target.exists():
        return target, False
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        papermill.execute_notebook(
            str(the_plan.notebook),
            str(target),
            parameters=the_plan.parameters,
            prepare_only=True,
            kernel_name=KERNEL,
            progress_bar=False,
        )
    except (OSError, papermill.PapermillException) as exc:
        raise PreconditionFailed(f"cannot prepare {target}: {exc}") from exc
    return target, True
