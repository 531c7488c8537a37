"""One card per mitigation: inputs, Plan, Apply…, Confirm/Cancel, the result, the watch.

A card is made from its :class:`~exportnb.mitigation.registry.Mitigation`: its label is
the title, and each parameter is an input of the parameter's kind (job IDs, text, a size,
a duration, a whole number up to its maximum, a choice, a checkbox). Its buttons call
:mod:`exportnb.mitigation.lifecycle` and nothing else: the plan (journaled), the
confirmation, the apply (journaled, once per idempotency key) or the decline. Handlers
run one at a time: buttons are disabled while a call runs, and a click that arrives
meanwhile is ignored. A change to any input drops the plan, so that what is confirmed is
always what was planned. After a retry, a :class:`~exportnb.notebook.retrywatch.RetryWatcher`
follows the retried jobs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from exportnb.core.config import Settings
from exportnb.core.errors import ExportnbError
from exportnb.core.quantities import format_duration, format_size
from exportnb.mitigation import lifecycle as mitigations
from exportnb.mitigation import registry
from exportnb.mitigation.registry import Param
from exportnb.notebook.retrywatch import RetryWatcher, message, preformatted

if TYPE_CHECKING:
    from exportnb.mitigation.assessment import Recommendation
    from exportnb.platform import Platform

UNBOUNDED = 2**31 - 1  # a whole number without a maximum of its own


@dataclass(frozen=True)
class Desk:
    """Who acts, for which incident, on which platform: what every card shares."""

    platform: Platform
    incident: str
    operator: str | None
    mode: str
    settings: Settings
    home: Path | None

    def plan(self, action: str, params: Mapping[str, Any]) -> mitigations.Plan:
        return mitigations.plan(
            self.platform,
            self.incident,
            action,
            params,
            operator=self.operator,
            settings=self.settings,
            home=self.home,
        )

    def apply(self, plan: mitigations.Plan) -> mitigations.Outcome:
        return mitigations.apply(
            self.platform,
            plan,
            operator=self.operator,
            mode=self.mode,
            confirmed=True,
            settings=self.settings,
            home=self.home,
        )

    def decline(self, plan: mitigations.Plan) -> mitigations.Outcome:
        return mitigations.decline(
            plan, operator=self.operator, platform=self.platform, home=self.home
        )


# Small pieces ---------------------------------------------------------------------------
def _input(param: Param, value: Any, settings: Settings) -> widgets.Widget:
    """The input of one parameter, of its kind, showing ``value``."""
    options: dict[str, Any] = {
        "description": param.label,
        "tooltip": param.help,
        "style": {"description_width": "initial"},
    }
    if param.kind == "ids":
        ids = value if isinstance(value, (list, tuple)) else ([value] if value else [])
        return widgets.Textarea(
            "\n".join(str(i) for i in ids), placeholder=param.help, rows=3, **options
        )
    if param.kind == "choice":
        return widgets.Dropdown(
            options=list(param.choices), value=value or param.choices[0], **options
        )
    if param.kind == "flag":
        return widgets.Checkbox(value=bool(value), indent=False, **options)
    if param.kind == "int":
        top = param.top(settings) or UNBOUNDED
        return widgets.BoundedIntText(
            value=int(value or 1), min=1, max=top, layout={"width": "160px"}, **options
        )
    return widgets.Text(_text(param, value), placeholder=param.help, **options)


def _text(param: Param, value: Any) -> str:
    """A value as its text input shows it: sizes and durations as people write them."""
    if param.kind == "size" and isinstance(value, int) and not isinstance(value, bool):
        return format_size(value)
    if param.kind == "duration" and isinstance(value, (int, float)):
        return format_duration(value)
    return "" if value is None else str(value)


def _value(param: Param, widget: widgets.Widget) -> Any:
    if param.kind == "ids":
        text = str(widget.value).replace(",", "\n")
        return [line.strip() for line in text.splitlines() if line.strip()]
    return widget.value


def params_of(action: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """An action's parameters from its card's values, as the action reads a form."""
    given = registry.get(action).form_params(values)
    if given.get("round") == 1:
        given.pop("round")  # round 1 is the default: the same key as the CLI's
    return given


# A card per action ------------------------------------------------------------------------
class ActionCard:
    """Inputs, Plan, Apply…, Confirm/Cancel, the result, and (after a retry) the watch."""

    def __init__(
        self,
        desk: Desk,
        action: str,
        prefill: Mapping[str, Any],
        recommendation: Recommendation | None = None,
        *,
        watch_interval: float = 1.0,
        watch_timeout: float = 900.0,
    ) -> None:
        self.desk, self.action, self.recommendation = desk, action, recommendation
        self.watch_interval, self.watch_timeout = watch_interval, watch_timeout
        self.current: mitigations.Plan | None = None
        self.outcome: mitigations.Outcome | None = None
        self.watcher: RetryWatcher | None = None
        self._busy = threading.Lock()
        self.mitigation = registry.get(action)
        self.fields = self.mitigation.params
        self.inputs = {f.name: _input(f, prefill.get(f.name), desk.settings) for f in self.fields}
        self.plan_button = self._button("Plan", "exportnb-plan", "Show what would change.")
        self.apply_button = self._button("Apply…", "exportnb-apply", "Apply after confirming.")
        self.confirm_button = self._button("Confirm", "exportnb-confirm", "Apply this plan now.")
        self.cancel_button = self._button("Cancel", "exportnb-cancel", "Do not apply it.")
        self.apply_button.button_style, self.confirm_button.button_style = "warning", "danger"
        self.apply_button.disabled = True
        self.confirm_row = widgets.HBox([self.confirm_button, self.cancel_button])
        self.confirm_row.layout.display = "none"
        self.status, self.detail = widgets.HTML(), widgets.HTML()
        self.watch_box = widgets.VBox([])
        self._wire()
        self.widget = self._layout()

    def _button(self, label: str, css: str, tooltip: str) -> widgets.Button:
        button = widgets.Button(description=label, tooltip=tooltip)
        button.add_class(css)
        return button

    def _wire(self) -> None:
        self.plan_button.on_click(lambda _: self._guarded(self.on_plan))
        self.apply_button.on_click(lambda _: self._guarded(self.on_apply))
        self.confirm_button.on_click(lambda _: self._guarded(self.on_confirm))
        self.cancel_button.on_click(lambda _: self._guarded(self.on_cancel))
        for widget in self.inputs.values():
            widget.observe(self._changed, names="value")

    def _layout(self) -> widgets.VBox:
        title = f"<b>{escape(self.mitigation.label)}</b> <code>{escape(self.action)}</code>"
        if self.recommendation is not None:
            title += "<br>" + message(f"Recommended: {self.recommendation.reason}", "warn")
        inputs = list(self.inputs.values())
        rows = [widgets.HTML(title), *([widgets.HBox(inputs)] if inputs else [])]
        buttons = widgets.HBox([self.plan_button, self.apply_button])
        card = widgets.VBox(
            [*rows, buttons, self.confirm_row, self.status, self.detail, self.watch_box],
            layout={"border": "1px solid #d0d7de", "padding": "6px", "margin": "4px 0"},
        )
        card.add_class(f"exportnb-action-{self.action}")
        return card

    # Handlers --------------------------------------------------------------------------
    def _guarded(self, handler: Callable[[], None]) -> None:
        """Run a handler once at a time; a click while one runs is ignored."""
        if not self._busy.acquire(blocking=False):
            return
        buttons = (self.plan_button, self.apply_button, self.confirm_button, self.cancel_button)
        enabled = [b for b in buttons if not b.disabled]
        for button in enabled:
            button.disabled = True
        try:
            handler()
        except ExportnbError as exc:
            self._refused(exc.message)
        finally:
            for button in enabled:
                button.disabled = False
            self._sync_buttons()
            self._busy.release()

    def params(self) -> dict[str, Any]:
        values = {f.name: _value(f, self.inputs[f.name]) for f in self.fields}
        return params_of(self.action, values)

    def on_plan(self) -> None:
        self.current, self.outcome = None, None
        found = self.desk.plan(self.action, self.params())
        self.current = found
        reach = ", ".join(f"{n} {what}" for what, n in found.reach.items())
        if found.already_applied:
            self.status.value = message(found.summary, "info")
        else:
            self.status.value = message(f"Planned ({reach}). Apply… to confirm.", "info")
        self.detail.value = preformatted(mitigations.describe(found))

    def on_apply(self) -> None:
        if self.current is None or self.current.already_applied:
            return
        reach = ", ".join(f"{n} {what}" for what, n in self.current.reach.items())
        self.status.value = message(
            f"Apply {self.action} for {self.desk.incident} ({reach})? Confirm or Cancel.", "warn"
        )
        self.confirm_row.layout.display = "flex"

    def on_confirm(self) -> None:
        if self.current is None:
            return
        found, self.current = self.current, None
        self.confirm_row.layout.display = "none"
        outcome = self.desk.apply(found)
        self.outcome = outcome
        tone = {"applied": "ok", "already_applied": "info"}.get(outcome.status, "bad")
        self.status.value = message(outcome.message, tone)
        self.detail.value = preformatted(_result_text(outcome))
        if outcome.status == "applied" and outcome.retried:
            self.watch(outcome.retried, outcome.attempts_before)

    def on_cancel(self) -> None:
        if self.current is None:
            return
        found, self.current = self.current, None
        self.confirm_row.layout.display = "none"
        self.outcome = self.desk.decline(found)
        self.status.value = message(self.outcome.message, "info")

    def _refused(self, text: str) -> None:
        self.current = None
        self.confirm_row.layout.display = "none"
        self.status.value = message(f"Refused: {text}", "bad")

    def _changed(self, _: Any) -> None:
        if self.current is not None:
            self.current = None
            self.confirm_row.layout.display = "none"
            self.status.value = message("The inputs changed: plan again.", "warn")
        self._sync_buttons()

    def _sync_buttons(self) -> None:
        ready = self.current is not None and not self.current.already_applied
        self.apply_button.disabled = not ready or self.confirm_row.layout.display == "flex"

    # Watching a retry ----------------------------------------------------------------------
    def watch(self, job_ids: Sequence[str], attempts_before: Mapping[str, int]) -> RetryWatcher:
        self.watcher = RetryWatcher(self.desk.platform, job_ids, attempts_before)
        self.watch_box.children = [self.watcher.widget]
        self.watcher.start(self.watch_interval, self.watch_timeout)
        return self.watcher


def _result_text(outcome: mitigations.Outcome) -> str:
    result = outcome.result
    if result is None:
        return outcome.message
    lines = [f"{outcome.action} by {result.operator} at {result.at:%Y-%m-%d %H:%M:%S} UTC"]
    lines += [f"  {change.kind} {change.target}" for change in result.changes[:20]]
    if len(result.changes) > 20:
        lines.append(f"  ... and {len(result.changes) - 20} more")
    if result.error:
        lines.append(f"  error: {result.error}")
    return "\n".join(lines)
