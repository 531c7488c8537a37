"""How a runbook step's result appears in the notebook, and how it is recorded.

A notebook cell calls the library and then one of these::

    show("job_state", jobs, command="exportctl list --status failed --limit 20")

:func:`show` makes ONE display call with a bundle of three mimetypes:

* ``text/html`` (``text/markdown`` for status updates and audit summaries) for people:
  a heading line with the runbook command the cell stands for, the findings with
  severity markers, and a compact table of the result's main data. Plain HTML, no
  JavaScript, so it reads the same in JupyterLab and in nbconvert's HTML export;
* :data:`~exportnb.core.findings.RESULT_MIMETYPE`, the machine-readable record of the step
  (:func:`~exportnb.core.findings.record_bundle`), from which the archive reads results back;
* ``text/plain``, for consoles and logs.

Each result type has a renderer in :data:`exportnb.notebook.views.RENDERERS`, keyed by its class
name; a type without one is rendered from its dataclass fields.
"""

from __future__ import annotations

import base64
import json
import math
from typing import TYPE_CHECKING, Any

from exportnb.core.findings import RESULT_MIMETYPE, STEPS, record_bundle
from exportnb.notebook.views import (
    RENDERERS,
    findings_html,
    findings_markdown,
    heading_html,
    heading_markdown,
    plain,
    render,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from exportnb.incident.model import Incident

DIAGNOSTIC_STEPS = frozenset(
    {"detection", "job_state", "storage_health", "checksums", "network_path", "recovery"}
)
"""Steps that judge the data: for them, "no findings" is news worth a line."""

__all__ = ["RENDERERS", "bundle", "show", "show_chart", "show_parameters", "show_recommendations"]


# The display calls ----------------------------------------------------------------------
def bundle(step: str, result: Any, *, command: str | None = None) -> dict[str, Any]:
    """The mimetype bundle :func:`show` displays for ``result`` of runbook ``step``."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r} (known: {', '.join(STEPS)})")
    body = render(result)
    findings = list(getattr(result, "findings", None) or [])
    label = body.label
    data: dict[str, Any] = {
        RESULT_MIMETYPE: json_safe(record_bundle(step, result)),
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
    from IPython.display import display

    display(bundle(step, result, command=command), raw=True)


def show_chart(fig: Figure) -> None:
    """Display a chart as a PNG (with its title as text) and release it."""
    from IPython.display import display

    from exportnb.notebook.charts import figure_to_png

    title = fig.get_suptitle() or " / ".join(ax.get_title() for ax in fig.axes if ax.get_title())
    png = base64.b64encode(figure_to_png(fig)).decode("ascii")
    alt = {"image/png": {"alt": f"Chart: {title}"}}  # read by nbconvert's classic template
    display({"image/png": png, "text/plain": f"[chart: {title}]"}, metadata=alt, raw=True)
    if fig.canvas.manager is not None:  # made through pyplot: let pyplot forget it
        import matplotlib.pyplot as plt

        plt.close(fig)


def show_parameters(incident: Incident) -> None:
    """Declare incident; assign comms lead: who, what, which mode, which alert."""
    show("immediate_actions", incident.declaration())


def show_recommendations(assessment: Any) -> None:
    """Each recommendation, most urgent first, with its reason and the runbook command."""
    show("assessment", assessment)


# The record -----------------------------------------------------------------------------
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
