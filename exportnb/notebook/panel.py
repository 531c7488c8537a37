"""The mitigation panel: plan, confirm, apply and watch each runbook mitigation in JupyterLab.

One card per action of the registry (:mod:`exportnb.mitigation.registry`, ipywidgets 8),
the recommended ones first, each with its inputs prefilled from the assessment (and from
the incident, for a parameter that says which of its facts fills it)::

    [Plan]      -> what would change and how widely (jobs, tenants, buckets), the runbook
                   command, warnings; journaled as a plan
    [Apply…]    -> asks to confirm, naming the reach once more
    [Confirm]   -> mitigations.apply(..., confirmed=True): applied once, journaled, the
                   result shown; [Cancel] journals that the engineer said no

The panel holds no logic of its own: every button calls :mod:`exportnb.mitigation.lifecycle`,
the code path of ``exportnb mitigate`` and of unattended runs, so the idempotency key,
the guardrails (a mandatory TTL under the configured maximum, the retry concurrency cap,
preconditions that explain and change nothing) and the journal are the same everywhere.
A double click, or the same plan applied from another window, applies once: buttons are
disabled while a call runs, and the journal's lock and key do the rest.

After a retry the card watches the retried jobs live
(:class:`~exportnb.notebook.retrywatch.RetryWatcher`): queued ->
running -> succeeded or failed, with a progress bar and repeat errors flagged, until
every job has finished or the watch times out.

Widget output lives in widget state, which an archived notebook hides; the record shows
the journal through the template's audit cell (:mod:`exportnb.mitigation.trail`) and
:func:`exportnb.run.finalize.finalize`, which the Finalize button calls.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
from IPython.display import Markdown

from exportnb.core.config import Settings
from exportnb.core.errors import ExportnbError
from exportnb.mitigation import registry
from exportnb.mitigation.policy import effective_mode
from exportnb.notebook.cards import ActionCard, Desk
from exportnb.notebook.retrywatch import message
from exportnb.record.model import HTML
from exportnb.run.finalize import finalize

if TYPE_CHECKING:
    from exportnb.incident.model import Incident
    from exportnb.mitigation.assessment import Assessment, Recommendation
    from exportnb.platform import Platform
    from exportnb.record.model import Record


# The panel ---------------------------------------------------------------------------------
class MitigationPanel:
    """Every mitigation as a card, the recommended first, and a Finalize button."""

    def __init__(
        self,
        platform: Platform,
        incident: str,
        *,
        assessment: Assessment | None = None,
        operator: str | None = None,
        mode: str = "interactive",
        settings: Settings | None = None,
        home: Path | None = None,
        prefill: Mapping[str, Mapping[str, Any]] | None = None,
        watch_interval: float = 1.0,
        watch_timeout: float = 900.0,
    ) -> None:
        settings = settings or Settings.load()
        self.desk = Desk(platform, incident, operator, mode, settings, home)
        recommended = _recommended(assessment)
        order = [*recommended, *(a for a in registry.names() if a not in recommended)]
        self.cards = {
            action: ActionCard(
                self.desk,
                action,
                _prefill(action, recommended, prefill),
                recommended.get(action),
                watch_interval=watch_interval,
                watch_timeout=watch_timeout,
            )
            for action in order
        }
        self.finalize_button = widgets.Button(
            description="Finalize", icon="archive", tooltip="Re-execute unattended into the archive"
        )
        self.finalize_button.add_class("exportnb-finalize")
        self.finalize_button.on_click(lambda _: self.on_finalize())
        self.finalize_status = widgets.HTML()
        self.record: Record | None = None
        self._finalizing: threading.Thread | None = None
        self.widget = self._layout(recommended)

    def _layout(self, recommended: Mapping[str, Any]) -> widgets.VBox:
        lead = (
            f"<b>Mitigations for {escape(self.desk.incident)}</b>: plan, confirm, apply. "
            f"Every step is journaled. Recommended first ({len(recommended)})."
        )
        finish = widgets.HBox([self.finalize_button, self.finalize_status])
        panel = widgets.VBox([widgets.HTML(lead), *(c.widget for c in self.cards.values()), finish])
        panel.add_class("exportnb-panel")
        return panel

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def on_finalize(self, *, wait: bool = False) -> None:
        """Finalize the incident in a thread (the notebook runs on a kernel of its own)."""
        if self._finalizing is not None and self._finalizing.is_alive():
            return
        self.finalize_button.disabled = True
        self.finalize_status.value = message("Finalizing: executing the notebook unattended…")
        self._finalizing = threading.Thread(target=self._finalize, daemon=True)
        self._finalizing.start()
        if wait:
            self._finalizing.join()

    def _finalize(self) -> None:
        try:
            record = finalize(self.desk.incident, home=self.desk.home, operator=self.desk.operator)
            self.record = record
            tone = "ok" if record.status == "succeeded" else "bad"
            self.finalize_status.value = message(
                f"Record {record.record_id} ({record.status}): {record.path(HTML)}", tone
            )
        except ExportnbError as exc:
            self.finalize_status.value = message(f"Finalize failed: {exc.message}", "bad")
        finally:
            self.finalize_button.disabled = False


def _recommended(assessment: Assessment | None) -> dict[str, Recommendation]:
    if assessment is None:
        return {}
    ranked = sorted(assessment.recommendations, key=lambda r: r.priority)
    known = registry.names()
    return {r.action: r for r in ranked if r.action in known}


def _prefill(
    action: str,
    recommended: Mapping[str, Recommendation],
    given: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """A card's first values: the action's defaults, then what the caller gives, then the
    recommendation's parameters."""
    values = {**registry.get(action).defaults(), **(given or {}).get(action, {})}
    if action in recommended:
        values |= dict(recommended[action].params)
    return values


def mitigation_panel(incident: Incident, assessment: Assessment | None = None) -> Any:
    """The panel for the notebook's incident; in an unattended run, a note instead."""
    if effective_mode(incident.mode) == "auto":
        return Markdown(
            '*The mitigation panel appears in interactive sessions (`mode = "interactive"`, '
            "as `exportnb investigate` prepares the notebook). An unattended run applies only "
            "what `[policy] auto_apply` allows: see the plan above.*"
        )
    return MitigationPanel(
        incident.platform,
        incident.id,
        assessment=assessment,
        operator=incident.operator,
        prefill=incident_prefill(incident),
    )


def incident_prefill(incident: Incident) -> dict[str, dict[str, Any]]:
    """Inputs the incident fills: each parameter that names one of its facts
    (:attr:`~exportnb.mitigation.registry.Param.prefill`, the fallback bucket say)."""
    found: dict[str, dict[str, Any]] = {}
    for mitigation in registry.mitigations():
        for param in mitigation.params:
            value = getattr(incident, param.prefill, None) if param.prefill else None
            if value:
                found.setdefault(mitigation.name, {})[param.name] = value
    return found
