"""How a runbook step's result appears in the notebook, and how it is recorded.

A notebook cell calls the library and then one of these::

    show("job_state", jobs, command="exportctl list --status failed --limit 20")

:func:`show` makes ONE display call with a bundle of three mimetypes:

* ``text/html`` (``text/markdown`` for status updates and audit summaries) for people:
  a heading line with the runbook command the cell stands for, the findings with
  severity markers, and a compact table of the result's main data. Plain HTML, no
  JavaScript, so it reads the same in JupyterLab and in nbconvert's HTML export;
* :data:`~exportnb.core.findings.RESULT_MIMETYPE`, the machine-readable record of the step
  (:func:`result_record`), from which the archive reads results back;
* ``text/plain``, for consoles and logs.

The record of a step is ``{"schema": 2, "step", "kind", "type", "result"}``: the result's
kind as its class declares it (``KIND``, :mod:`exportnb.record.model` says how kinds are
named), and the class name it had when kinds came in, for readers older than kinds. Each
kind of result has a renderer in :data:`exportnb.notebook.views.RENDERERS`; a result type
without a kind is recorded by its class name alone (schema 1) and rendered from its
dataclass fields.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING, Any

from exportnb.core import codec
from exportnb.core.findings import RESULT_MIMETYPE, STEPS, record_bundle
from exportnb.notebook.charts import figure_to_png
from exportnb.notebook.views import (
    RENDERERS,
    facts,
    findings_html,
    findings_markdown,
    heading_html,
    heading_markdown,
    kind_of_result,
    plain,
    render,
)
from exportnb.record.model import BUNDLE_SCHEMA, TYPE_NAMES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from exportnb.incident.model import Incident
    from exportnb.incident.steps.impact import SweepProgress

DIAGNOSTIC_STEPS = frozenset(
    {"detection", "job_state", "storage_health", "checksums", "network_path", "recovery"}
)
"""Steps that judge the data: for them, "no findings" is news worth a line."""

__all__ = [
    "RENDERERS",
    "bundle",
    "show",
    "show_chart",
    "show_parameters",
    "show_recommendations",
    "sweep_progress",
]


# The display calls ----------------------------------------------------------------------
def bundle(step: str, result: Any, *, command: str | None = None) -> dict[str, Any]:
    """The mimetype bundle :func:`show` displays for ``result`` of runbook ``step``."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r} (known: {', '.join(STEPS)})")
    body = render(result)
    findings = list(getattr(result, "findings", None) or [])
    label = body.label
    data: dict[str, Any] = {
        RESULT_MIMETYPE: json_safe(result_record(step, result)),
        "text/plain": plain(step, command, findings, body.text, label),
    }
    judged = bool(findings) or step in DIAGNOSTIC_STEPS  # else "no findings" says nothing
    if body.markdown is not None:
        found = [findings_markdown(findings)] if judged else []
        data["text/markdown"] = "\n\n".join(
            [heading_markdown(step, command, label), *found, body.markdown]
        )
    else:
        found_html = findings_html(findings) if judged else ""
        data["text/html"] = heading_html(step, command, label) + found_html + body.html
    return data


def show(step: str, result: Any, *, command: str | None = None) -> None:
    """Display ``result`` of runbook ``step`` for people and for the record, in one call."""
    from IPython.display import display  # deferred: IPython is heavy, and only kernels have it

    display(bundle(step, result, command=command), raw=True)


def show_chart(fig: Figure) -> None:
    """Display a chart as a PNG (with its title as text) and release it."""
    from IPython.display import display  # deferred: IPython is heavy, and only kernels have it

    title = fig.get_suptitle() or " / ".join(ax.get_title() for ax in fig.axes if ax.get_title())
    png = base64.b64encode(figure_to_png(fig)).decode("ascii")
    alt = {"image/png": {"alt": f"Chart: {title}"}}  # read by nbconvert's classic template
    display({"image/png": png, "text/plain": f"[chart: {title}]"}, metadata=alt, raw=True)
    if fig.canvas.manager is not None:  # made through pyplot: let pyplot forget it
        import matplotlib.pyplot as plt  # deferred: matplotlib is heavy

        plt.close(fig)


def show_incident(incident: Incident) -> None:
    """The incident as the setup cell shows it: what it is judged on, as a table."""
    from IPython.display import (  # deferred: IPython is heavy, and only kernels have it
        HTML,
        display,
    )

    display(HTML(facts(incident.facts())))


def show_parameters(incident: Incident) -> None:
    """Declare incident; assign comms lead: who, what, which mode, which alert."""
    show("immediate_actions", incident.declaration())


def show_recommendations(assessment: Any) -> None:
    """Each recommendation, most urgent first, with its reason and the runbook command."""
    show("assessment", assessment)


def sweep_progress() -> Callable[[SweepProgress], None]:
    """A progress callback for the impact sweep: one line, displayed on the first report and
    updated in place after (a display with an ID: no widgets, no JavaScript), so that
    JupyterLab shows the sweep as it goes and the saved notebook its last state. Nothing is
    displayed when nothing is reported (a result collected from an early probe)."""
    handle: Any = None

    def report(progress: SweepProgress) -> None:
        nonlocal handle
        from IPython.display import display  # deferred: IPython is heavy, and only kernels have it

        line = progress.line()
        data = {"text/plain": line, "text/html": f"<p><em>{escape(line)}</em></p>"}
        if handle is None:
            handle = display(data, raw=True, display_id=True)
        else:
            handle.update(data, raw=True)

    return report


# The record -----------------------------------------------------------------------------
def result_record(step: str, result: Any) -> dict[str, Any]:
    """The JSON payload stored under RESULT_MIMETYPE for ``result`` of runbook ``step``: its
    kind, and the class name older readers know it by; by class name alone (schema 1) for
    a result type that declares no kind."""
    kind = kind_of_result(result)
    if kind is None:
        return record_bundle(step, result)
    named = {"type": TYPE_NAMES[kind]} if kind in TYPE_NAMES else {}
    return {
        "schema": BUNDLE_SCHEMA,
        "step": step,
        "kind": kind,
        **named,
        "result": codec.encode(result),
    }


def json_safe(value: Any) -> Any:
    """``value`` as strict JSON: NaN and infinities become null, unknown objects text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    return str(value)


def dumps(payload: Any) -> str:
    """The record payload as JSON text (strict: refuses NaN)."""
    return json.dumps(payload, allow_nan=False, ensure_ascii=False)
