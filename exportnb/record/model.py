"""The record of one run: the executed notebook, its HTML, and ``record.json``.

A record is written once, when the run ends, and never changed. It is a folder (local
archive) or a prefix (``s3://``) named by its record ID, ``<incident>/<UTC start>-<hash>``
(``INC-42/20240501T120000Z-3fa9c2d1``, the hash being the first 8 hex digits of the
notebook's sha256), holding:

``notebook.ipynb``
    the executed notebook, redacted (:mod:`exportnb.record.redaction`);
``notebook.html``
    the same rendered by nbconvert's ``lab`` template: inputs shown (unless asked
    otherwise), charts embedded as the outputs carry them (:class:`HTMLRenderer`), and
    opening with the "at a glance" box made from the results (:mod:`exportnb.record.glance`);
``record.json``
    :class:`Record`, schema :data:`RECORD_SCHEMA`: who ran what, with which (redacted)
    parameters, the status and the failing cell, times, the sha256 of both files, the
    versions of the tools, and the ``results`` the notebook displayed under
    :data:`~exportnb.core.findings.RESULT_MIMETYPE`, so that findings can be read back without
    executing anything.

Each of the ``results`` is a bundle ``{"cell_index", "schema", "step", "kind", "type",
"result"}``. Its ``kind`` (:data:`BUNDLE_SCHEMA` 2) names what the result is, as its class
declares it (``KIND: ClassVar[str] = "detection/v1"``): the kebab-case name of the
runbook's result and the version of its fields, bumped when a field is renamed, removed
or changes meaning, never when a class is renamed. Readers key on the kind
(:func:`kind_of`). ``type`` is the class name the result had when kinds came in, kept
for readers older than kinds; bundles of schema 1 have only ``type``, and
:data:`LEGACY_TYPES` gives their kind.
"""

from __future__ import annotations

import functools
import json
import platform
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from exportnb.core import codec
from exportnb.core.errors import CommandError, StorageError
from exportnb.core.findings import RESULT_MIMETYPE, SEVERITIES, Finding
from exportnb.core.ids import (  # noqa: F401 - the record's IDs, named here too
    INCIDENT_ID,
    RECORD_ID,
    check_incident_id,
    check_record_id,
    sha256,
)
from exportnb.record.glance import glance_html, with_glance
from exportnb.record.redaction import Redactor

RECORD_SCHEMA = "exportnb.record/v1"
NOTEBOOK, HTML, METADATA = "notebook.ipynb", "notebook.html", "record.json"
FILES = (NOTEBOOK, HTML, METADATA)
"""The files of a record, in the order they are written (``record.json`` last)."""
STATUSES = ("succeeded", "failed")
TOOLS = ("exportnb", "papermill", "nbclient", "nbconvert", "nbformat", "ipykernel")


@dataclass(frozen=True)
class RecordError:
    """Where and how a run failed, like papermill's ``PapermillExecutionError``.

    ``cell_index`` counts the cells of the archived ``notebook.ipynb`` (papermill's
    error marker cells included); ``cell_id`` is the nbformat cell ID, the same in the
    template; ``execution_count`` is the ``In [N]`` of the cell.
    """

    ename: str
    evalue: str
    cell_index: int | None = None
    cell_id: str | None = None
    execution_count: int | None = None

    def describe(self) -> str:
        where = f"cell {self.cell_index}" if self.cell_index is not None else "the kernel"
        if self.execution_count is not None:
            where += f" (In [{self.execution_count}])"
        return f"{where}: {self.ename}: {self.evalue}".rstrip(": ")


@dataclass(frozen=True)
class RecordFile:
    sha256: str
    size: int


@dataclass(frozen=True)
class Record:
    """``record.json``; ``location`` is where the archive keeps the record (not stored)."""

    record_id: str
    incident_id: str
    status: str
    started_at: datetime
    ended_at: datetime
    duration_seconds: float
    operator: str
    notebook: str
    job_ids: list[str]
    parameters: dict[str, Any]
    error: RecordError | None
    files: dict[str, RecordFile]
    versions: dict[str, str]
    results: list[dict[str, Any]] = field(default_factory=list)
    redactions: dict[str, int] = field(default_factory=dict)
    schema: str = RECORD_SCHEMA
    location: str = ""

    def findings(self) -> list[Finding]:
        """Every finding of every recorded result, most severe first."""
        found = [f for result in self.results for f in _findings(result)]
        return sorted(found, key=lambda f: SEVERITIES.index(f.severity))

    def severity_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(SEVERITIES, 0)
        for finding in self.findings():
            counts[finding.severity] += 1
        return counts

    def path(self, name: str) -> str:
        """Where file ``name`` of this record is: a local path or an ``s3://`` URL."""
        return f"{self.location.rstrip('/')}/{name}"

    def to_json(self) -> bytes:
        doc = {"schema": self.schema, **codec.encode(self)}
        doc.pop("location")
        return (json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, location: str = "") -> Record:
        """A record read back from ``record.json``; StorageError if it is not one."""
        try:
            doc = json.loads(data)
            if not str(doc.get("schema", "")).startswith(RECORD_SCHEMA):
                raise ValueError(f"unknown record schema {doc.get('schema')!r}")
            doc["location"] = location
            record: Record = codec.decode(cls, doc, path="record")
            return record
        except (ValueError, AttributeError, CommandError) as exc:
            raise StorageError(f"{location or 'record'}: not a valid record.json: {exc}") from exc

    def summary(self) -> RecordSummary:
        return RecordSummary(
            self.record_id,
            self.incident_id,
            self.status,
            self.started_at,
            self.duration_seconds,
            self.operator,
            self.severity_counts(),
            self.error.describe() if self.error else None,
            self.location,
        )


@dataclass(frozen=True)
class RecordSummary:
    """One line of ``exportnb archive list``."""

    record_id: str
    incident_id: str
    status: str
    started_at: datetime
    duration_seconds: float
    operator: str
    findings: dict[str, int]
    error: str | None
    location: str


def _findings(result: Mapping[str, Any]) -> list[Finding]:
    body = result.get("result")
    raw = body.get("findings", []) if isinstance(body, dict) else []
    found = []
    for item in raw if isinstance(raw, list) else []:
        try:
            finding = codec.decode(Finding, item, path="finding")
        except CommandError:
            continue
        if finding.severity in SEVERITIES:
            found.append(finding)
    return found


def results_of(nb: Any) -> list[dict[str, Any]]:
    """The result bundles a notebook displayed under RESULT_MIMETYPE, with their cell index."""
    found = []
    for index, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []):
            bundle = output.get("data", {}).get(RESULT_MIMETYPE)
            if isinstance(bundle, str):
                try:
                    bundle = json.loads(bundle)
                except ValueError:
                    continue
            if isinstance(bundle, dict) and "step" in bundle:
                found.append({"cell_index": index, **bundle})
    return found


# Result kinds ---------------------------------------------------------------------------
BUNDLE_SCHEMA = 2
"""Schema of a result bundle: 1 names the result by class name (``type``) only, 2 adds
its ``kind``."""
LEGACY_TYPES: dict[str, str] = {
    "Detection": "detection/v1",
    "Declaration": "declaration/v1",
    "BulkPause": "bulk-pause/v1",
    "FailureCapture": "failure-capture/v1",
    "JobState": "job-state/v1",
    "StorageHealth": "storage-health/v1",
    "ChecksumReport": "checksum-report/v1",
    "NetworkPath": "network-path/v1",
    "Assessment": "assessment/v1",
    "MitigationPlan": "mitigation-plan/v1",
    "Recovery": "recovery/v1",
    "StatusUpdate": "status-update/v1",
    "AuditSummary": "audit-summary/v1",
    "Baseline": "baseline/v1",
    "Trail": "audit-trail/v1",
    "JournalReport": "journal-report/v1",  # no such class: a journal older notebooks showed
    "IncidentReview": "incident-review/v1",
    "Portfolio": "portfolio/v1",
}
"""The kind of each result by the ``type`` (class name) bundles of schema 1 name it by.
Fixed for good: a class renamed keeps its line, a result type made since has none."""
TYPE_NAMES: dict[str, str] = {kind: name for name, kind in LEGACY_TYPES.items()}
"""The ``type`` a bundle of each kind also carries, for readers older than kinds."""


def kind_of(bundle: Mapping[str, Any]) -> str:
    """The kind of a recorded result: its ``kind``, else the kind of its legacy ``type``;
    ``""`` when it names neither (a result type without a kind)."""
    kind = bundle.get("kind")
    if isinstance(kind, str) and kind:
        return kind
    return LEGACY_TYPES.get(str(bundle.get("type")), "")


def with_kinds(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The bundles with their ``kind`` filled in (records from before kinds have none)."""
    return [{**bundle, "kind": kind_of(bundle)} for bundle in results]


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for tool in TOOLS:
        try:
            found[tool] = metadata.version(tool)
        except metadata.PackageNotFoundError:
            found[tool] = "unknown"
    return found


def render_html(nb: Any, *, title: str, hide_input: bool = False) -> bytes:
    """The notebook as one HTML page (nbconvert, ``lab`` template)."""
    return HTMLRenderer.of(hide_input).render(nb, title=title)


def warm_html(notebook: Path, *, hide_input: bool = False) -> None:
    """Get the renderer ready for a run of ``notebook`` while it executes: compile the
    templates and highlight the notebook's code. Best effort: a failure here is left for
    the render itself to meet, so it is not raised."""
    try:
        import nbformat  # deferred: nbformat loads only when a record is made

        HTMLRenderer.of(hide_input).warm(nbformat.read(notebook, as_version=4), str(notebook))
    except Exception:  # the render after the run raises what matters
        return


class HTMLRenderer:
    """nbconvert's ``lab`` HTML exporter, kept for the process: its templates compile once,
    and the code cells it has highlighted are not highlighted again (a template's cells are
    the same every run). The page is the one a new exporter would make."""

    def __init__(self, hide_input: bool = False) -> None:
        # deferred: nbconvert is heavy, and reading records never needs it
        from nbconvert import HTMLExporter
        from nbconvert.filters.strings import clean_html

        self._lock = threading.Lock()
        self._warmed: set[str] = set()
        self._exporter = HTMLExporter(template_name="lab", exclude_input=hide_input)
        self._highlight = _Highlighter()
        self._exporter.filters = {
            "highlight_code": self._highlight,
            "clean_html": functools.lru_cache(512)(clean_html),
        }

    @classmethod
    def of(cls, hide_input: bool = False) -> HTMLRenderer:
        """The renderer kept for this process (one per ``hide_input``)."""
        with _KEPT_LOCK:
            if hide_input not in _KEPT:
                _KEPT[hide_input] = cls(hide_input)
            return _KEPT[hide_input]

    def render(self, nb: Any, *, title: str) -> bytes:
        info = nb.get("metadata", {}).get("language_info", {})
        with self._lock:  # an exporter renders one notebook at a time
            self._highlight.lexer = info.get("pygments_lexer", info.get("name")) or "ipython3"
            body, _ = self._exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
        return body.encode()

    def warm(self, nb: Any, name: str) -> None:
        """Render ``nb`` once (and only once per name), for what that leaves compiled."""
        if name not in self._warmed:
            self.render(nb, title=name)
            self._warmed.add(name)


_KEPT: dict[bool, HTMLRenderer] = {}
_KEPT_LOCK = threading.Lock()


class _Highlighter:
    """nbconvert's ``highlight_code`` filter (Highlight2HTML), remembering what it made."""

    lexer = "ipython3"

    def __call__(self, source: str, language: str | None = None, metadata: Any = None) -> str:
        magics = (metadata or {}).get("magics_language")
        return _highlighted(source, language or self.lexer, magics)


@functools.lru_cache(maxsize=512)
def _highlighted(source: str, language: str, magics: str | None) -> str:
    from nbconvert.filters.highlight import Highlight2HTML  # deferred: nbconvert is heavy

    metadata = {"magics_language": magics} if magics else None
    return str(Highlight2HTML(pygments_lexer=language)(source, language, metadata))


@dataclass(frozen=True)
class Outcome:
    """What the runner hands over when execution ends (before redaction)."""

    nb: Any
    started_at: datetime
    ended_at: datetime
    error: RecordError | None


def assemble(
    outcome: Outcome,
    *,
    incident_id: str,
    job_ids: Sequence[str],
    parameters: Mapping[str, Any],
    notebook: Path,
    operator: str,
    redactor: Redactor,
    hide_input: bool = False,
    locate: Callable[[str], str] = lambda record_id: record_id,
) -> tuple[Record, dict[str, bytes]]:
    """The record and its files' bytes: redact, render, hash, name; ``locate`` names a place."""
    import nbformat  # deferred: nbformat loads only when a record is made

    safe = redactor.parameters(parameters)
    nb = redacted_notebook(outcome.nb, safe, redactor)
    nb.metadata["exportnb"] = {"schema": RECORD_SCHEMA, "incident_id": incident_id}
    body = nbformat.writes(nb).encode()
    error = outcome.error
    if error is not None:
        error = replace(error, ename=redactor.text(error.ename), evalue=redactor.text(error.evalue))
    results = results_of(nb)
    html = with_glance(
        render_html(nb, title=f"{incident_id}: {notebook.stem}", hide_input=hide_input),
        glance_html(
            incident_id=incident_id,
            failed_at=error.describe() if error else None,
            results=with_kinds(results),
        ),
    )
    digest = sha256(body)
    record_id = f"{incident_id}/{outcome.started_at.strftime('%Y%m%dT%H%M%SZ')}-{digest[:8]}"
    record = Record(
        record_id=record_id,
        incident_id=incident_id,
        status="failed" if error else "succeeded",
        started_at=outcome.started_at,
        ended_at=outcome.ended_at,
        duration_seconds=round((outcome.ended_at - outcome.started_at).total_seconds(), 3),
        operator=redactor.text(operator),
        notebook=str(notebook),
        job_ids=list(job_ids),
        parameters=safe,
        error=error,
        files={NOTEBOOK: RecordFile(digest, len(body)), HTML: RecordFile(sha256(html), len(html))},
        versions=versions(),
        results=results,
        redactions=dict(redactor.counts),
        location=locate(record_id),
    )
    return record, {NOTEBOOK: body, HTML: html, METADATA: record.to_json()}


def redacted_notebook(nb: Any, safe_parameters: Mapping[str, Any], redactor: Redactor) -> Any:
    """The notebook redacted; the injected-parameters cell rewritten from safe parameters."""
    from papermill.translators import translate_parameters  # deferred: papermill is heavy

    clean = redactor.notebook(nb)
    meta = clean.metadata.setdefault("papermill", {})
    meta["parameters"] = dict(safe_parameters)
    meta["output_path"] = NOTEBOOK
    kernel = clean.metadata.get("kernelspec", {})
    for cell in clean.cells:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            cell.source = translate_parameters(
                kernel.get("name", "python3"),
                kernel.get("language", "python"),
                dict(safe_parameters),
                "Parameters",
            )
    return clean
