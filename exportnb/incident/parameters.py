"""The incident template's parameters: their names and defaults, and their values checked.

The template's parameters cell holds JSON values only. :data:`PARAMETER_TABLE` names each
one with its default and a few words on it, in the cell's order; the template's build
script writes the cell from it, and :data:`PARAMETERS` are its names and defaults.
:func:`validated` checks values over those defaults (types, ranges, the incident ID, the
mode), parses ``now`` (ISO-8601 with a zone, or the current time) and the alert (one JSON
object: an Alertmanager webhook, or one alert), and refuses anything else with
:class:`~exportnb.core.errors.InvalidInput` before anything is read. :func:`alert_summary`
is the alert in one line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exportnb.core.errors import InvalidInput
from exportnb.core.ids import check_incident_id
from exportnb.core.quantities import parse_ttl


@dataclass(frozen=True)
class Parameter:
    """One parameter of the incident template: its name, its default (a JSON value), and
    what it is in a few words (the comment beside it in the parameters cell, which
    papermill shows as its help)."""

    name: str
    default: Any
    help: str


PARAMETER_TABLE: tuple[Parameter, ...] = (
    Parameter("incident_id", "INC-unset", "the incident's ID, e.g. INC-1234"),
    Parameter("job_ids", [], "job IDs customers reported as incomplete or failing"),
    Parameter("alert", {}, "the alert (an Alertmanager webhook payload) as one JSON value"),
    Parameter("window_minutes", 10, "detection window, in minutes"),
    Parameter("failure_threshold", 0.02, "failure rate above which the window breaches (2%)"),
    Parameter("latency_slo", 60.0, "latency SLO (p95), in seconds; the alert fires at 2x SLO"),
    Parameter("running_sla", 1200.0, "longest a job may stay running, in seconds"),
    Parameter("stale_heartbeat", 30.0, "a running job silent this long is stuck, in seconds"),
    Parameter("buckets", [], "extra buckets to check; $EXPORT_BUCKET is always checked"),
    Parameter("target_host", "", "the export target; default: $EXPORT_TARGET_HOST"),
    Parameter("target_port", 22, "the target's port, probed over TCP where mtr is missing"),
    Parameter("probe_count", 10, "network path: mtr cycles (or TCP connects) to the target"),
    Parameter(
        "probe_interval", 0.05, "network path: seconds between mtr cycles (at least 1 unless root)"
    ),
    Parameter(
        "probe_grace", 1.0, "network path: seconds mtr waits after its last cycle; later is lost"
    ),
    Parameter("platform", "", "platform name; default: from $EXPORTNB_HOME/config.toml"),
    Parameter("operator", "", "who runs this; default: $EXPORTNB_OPERATOR or the login name"),
    Parameter("comms_lead", "", "who sends the status updates"),
    Parameter("mode", "auto", '"auto" (papermill on an alert: nothing applied) or "interactive"'),
    Parameter("baseline_days", 7, "days of history the baseline is taken from"),
    Parameter("recovery_minutes", 15, "how long the success rate must be back at baseline"),
    Parameter(
        "impact_sweep",
        "auto",
        'verify every delivery of the incident: "auto" (when checksums are in question), '
        '"always" or "never"',
    ),
    Parameter("impact_sweep_cap", 5000, "the most deliveries the impact sweep verifies"),
    Parameter("impact_sweep_margin", "15m", "the sweep starts this long before the incident start"),
    Parameter("now", "", "ISO-8601 time to evaluate at; default: the current time"),
)
"""The template's parameters, in the order of its parameters cell: the one table the cell
is generated from (``templates/build_template.py``) and its values are checked against."""

_ZERO = re.compile(r"^\s*0+(\.0*)?\s*(ms|s|m|h|d|w)?\s*$")
PARAMETERS: dict[str, Any] = {p.name: p.default for p in PARAMETER_TABLE}
"""The template's parameters by name, with their defaults, in the cell's order."""

MODES = ("auto", "interactive")
SWEEP_MODES = ("auto", "always", "never")
"""When the impact sweep runs: when checksums are in question, always, never."""
_RANGES: dict[str, tuple[float, float]] = {
    "window_minutes": (1, 1440),
    "failure_threshold": (0.0, 1.0),
    "latency_slo": (0.0, 86400.0),
    "running_sla": (0.0, 7 * 86400.0),
    "stale_heartbeat": (0.0, 86400.0),
    "target_port": (1, 65535),
    "probe_count": (1, 1000),
    "probe_interval": (0.0, 60.0),
    "probe_grace": (0.0, 60.0),
    "baseline_days": (1, 90),
    "recovery_minutes": (1, 1440),
    "impact_sweep_cap": (1, 100_000),
}


def parameters_of(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The template's parameters found in ``namespace`` (a notebook's ``globals()``)."""
    return {name: namespace[name] for name in PARAMETERS if name in namespace}


def validated(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters checked, over their defaults, with ``now`` and ``alert`` parsed."""
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise InvalidInput(
            f"unknown parameter(s): {', '.join(unknown)} (known: {', '.join(PARAMETERS)})"
        )
    values = {**PARAMETERS, **parameters}
    checked = {name: _check(name, values[name], PARAMETERS[name]) for name in PARAMETERS}
    check_incident_id(checked["incident_id"])  # the archive's rule: it names a folder
    if checked["mode"] not in MODES:
        raise InvalidInput(f"mode {checked['mode']!r}: use one of {', '.join(MODES)}")
    if checked["impact_sweep"] not in SWEEP_MODES:
        raise InvalidInput(
            f"impact_sweep {checked['impact_sweep']!r}: use one of {', '.join(SWEEP_MODES)}"
        )
    checked["impact_sweep_margin"] = parse_margin(checked["impact_sweep_margin"])
    checked["now"] = parse_now(checked["now"])
    checked["alert"] = parse_alert(values["alert"])
    checked["job_ids"] = unique(j.strip() for j in checked["job_ids"] if j.strip())
    checked["buckets"] = unique(b.strip() for b in checked["buckets"] if b.strip())
    return checked


def _check(name: str, value: Any, default: Any) -> Any:
    if name == "alert":
        return value
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidInput(f"{name} must be a list of strings, got {value!r}")
        return list(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise InvalidInput(f"{name} must be a string, got {value!r}")
        return value.strip()
    return _number(name, value, integer=isinstance(default, int))


def _number(name: str, value: Any, *, integer: bool) -> int | float:
    """A number in its range: whole numbers inclusive, fractions and seconds above zero."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise InvalidInput(f"{name} must be a number, got {value!r}")
    if integer and float(value) != int(value):
        raise InvalidInput(f"{name} must be a whole number, got {value!r}")
    low, high = _RANGES[name]
    if integer and not low <= value <= high:
        raise InvalidInput(f"{name} {value!r} is out of range: use {low:g} to {high:g}")
    if not integer and not low < value < high:
        raise InvalidInput(
            f"{name} {value!r} is out of range: use more than {low:g} and less than {high:g}"
        )
    return int(value) if integer else float(value)


def parse_margin(text: str) -> float:
    """The impact sweep's margin in seconds: a duration such as ``15m`` or ``1h30m``, or
    ``0``; anything else is refused."""
    if _ZERO.match(text):
        return 0.0
    try:
        return parse_ttl(text)
    except InvalidInput:
        raise InvalidInput(
            f"impact_sweep_margin {text!r} is not a duration: use one such as 15m, 1h or 0"
        ) from None


def parse_now(text: str) -> datetime:
    """``""`` is the current time; otherwise an ISO-8601 time with its zone, as UTC."""
    if not text:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"now {text!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidInput(f"now {text!r} has no time zone: add Z or an offset such as +00:00")
    return parsed.astimezone(UTC)


def parse_alert(value: Any) -> dict[str, Any]:
    """The alert as one JSON object (a dict, or the text of one)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as exc:
            raise InvalidInput(f"alert is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"alert must be one JSON object, got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"alert must hold JSON values only: {exc}") from None
    return value


def alert_summary(alert: Mapping[str, Any]) -> str:
    """One line about an Alertmanager webhook (or a single alert): status, names, summary."""
    if not alert:
        return "no alert: opened by hand"
    alerts = [a for a in alert.get("alerts", [alert]) if isinstance(a, dict)]
    common = alert.get("commonLabels") or {}
    names = unique(
        [str(a.get("labels", {}).get("alertname", "")) for a in alerts]
        + [str(common.get("alertname", ""))]
    )
    notes = alert.get("commonAnnotations") or (alerts[0].get("annotations") if alerts else {})
    summary = (notes or {}).get("summary") or (notes or {}).get("description") or ""
    starts = sorted(str(a["startsAt"]) for a in alerts if a.get("startsAt"))
    parts = [
        str(alert.get("status") or (alerts[0].get("status") if alerts else "") or "alert"),
        ", ".join(n for n in names if n) or "unnamed alert",
    ]
    line = " ".join(parts) + (f": {summary}" if summary else "")
    return line + (f" (since {starts[0]})" if starts else "")


def unique(values: Iterable[str]) -> list[str]:
    """The values in order, each once, empty ones left out."""
    return list(dict.fromkeys(v for v in values if v))
