"""The chart of a postmortem review: the success rate across the whole incident against the
baseline, with the incident's events marked (failures began, alert, each mitigation, the
resolution).

It follows :mod:`exportnb.notebook.charts`: a :class:`matplotlib.figure.Figure` built without
pyplot, a title, the axes' units (time in UTC as ``HH:MM``, success rate in %), a legend
beside the plot, and matplotlib imported inside the function.

The data is :meth:`exportnb.review.model.IncidentReview.frame`: index ``minute``, columns
``rate`` (0..1) and ``baseline`` (0..1, the baseline of the record the minute was read
from, so it steps where a later record judged against a newer baseline).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from exportnb.notebook.charts import (
    DPI,
    RATE_LABEL,
    SIZE,
    date_number,
    minute_times,
    plot_attempts,
    time_axis,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from exportnb.review.model import IncidentReview

_RATE, _BASELINE, _THRESHOLD = "#1f77b4", "#3182bd", "#d62728"
_MARKERS = {  # event kind: colour, line style
    "start": ("#7f7f7f", "--"),
    "alert": ("#ff7f0e", ":"),
    "mitigation": ("#2ca02c", "-."),
    "resolution": ("#9467bd", "-"),
}
_LABELS = {"start": "Failures began", "alert": "Alert", "resolution": "Resolved"}
NO_DATA = "no success rate in the records"


def incident_rate_chart(review: IncidentReview, *, title: str | None = None) -> Figure:
    """Success rate per minute (%) across the incident, the baseline, the threshold, the
    incident's events as vertical markers, and the attempts per minute beneath."""
    from matplotlib.figure import Figure  # deferred: matplotlib is heavy

    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title or f"Export success rate across {review.incident_id} against the baseline")
    ax.grid(True, alpha=0.3)
    frame = review.frame()
    lows = _plot_rates(ax, frame)
    if review.threshold is not None:
        ax.axhline(
            review.threshold * 100,
            color=_THRESHOLD,
            linestyle=":",
            linewidth=1.5,
            label=f"Threshold {review.threshold * 100:g}%",
        )
        lows.append(review.threshold * 100)
    for at, kind, label in markers(review):
        color, style = _MARKERS[kind]
        ax.axvline(
            date_number(at),
            color=color,
            linestyle=style,
            linewidth=1.2,
            label=f"{label} {at.astimezone(UTC):%H:%M}",
        )
    ax.set_ylim(max(0.0, min(lows, default=0.0) - 2.0), 100.5)
    volume = plot_attempts(ax, frame) if lows else None
    time_axis(ax, RATE_LABEL, extra=[volume] if volume is not None else [])
    return fig


def markers(review: IncidentReview) -> list[tuple[datetime, str, str]]:
    """``(time, event kind, label)`` of the events the chart marks."""
    found = [(e.at, e.kind, _LABELS[e.kind]) for e in review.timeline if e.kind in _LABELS]
    for m in review.mitigations:
        who = f" by {m.operator}" if m.operator else ""
        found.append((m.at, "mitigation", f"{m.action}{who}"))
    return found


def _plot_rates(ax: Axes, frame: Any) -> list[float]:
    """The success rate and the baseline; the lowest values drawn (for the y range)."""
    lows: list[float] = []
    times = minute_times(frame)
    rate = frame["rate"].astype(float) * 100 if len(frame) else None
    if rate is None or not rate.notna().any():
        ax.text(
            0.5,
            0.5,
            NO_DATA,
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize="large",
            color="#777777",
        )
        return lows
    ax.plot(times, rate, color=_RATE, marker=".", markersize=3, linewidth=1.5, label="Success rate")
    lows.append(float(rate.min()))
    baseline = frame["baseline"].astype(float) * 100
    if baseline.notna().any():
        ax.step(
            times,
            baseline,
            where="post",
            color=_BASELINE,
            linestyle="--",
            linewidth=1.2,
            label="Baseline (expected)",
        )
        lows.append(float(baseline.min()))
    return lows
