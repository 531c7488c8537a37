"""Charts of an incident: success rate against the baseline (over the attempts each minute
stands on), latency against the SLO, and where the failures are.

Every chart is a :class:`matplotlib.figure.Figure` built without pyplot, so it renders on
any backend (Agg in papermill, inline in JupyterLab) and leaves no global state behind.
Times on the axes are UTC, as ``HH:MM``. matplotlib is imported inside the functions:
importing this module costs nothing.

The frames are the ones :mod:`exportnb.incident.steps.baseline`,
:mod:`exportnb.incident.steps.detection` and
:mod:`exportnb.incident.steps.jobstate` build: a *rates* frame (index ``minute``, columns ``total``,
``succeeded``, ``failed``, ``rate`` with the success rate 0..1), a *baseline* frame
(index ``minute``, columns ``expected``, ``low``, ``high``), a *latency* frame (index
``minute``, columns ``count``, ``p50``, ``p95``, ``p99`` in seconds) and a *categories*
frame (columns ``connector``, ``bucket``, ``error_code``, ``count``, ...).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from exportnb.core.errors import InvalidInput

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SIZE = (10.0, 4.0)  # inches: the width of a notebook's output area
DPI = 100
TIME_LABEL = "Time (UTC)"
RATE_LABEL = "Success rate (%)"
ATTEMPTS_LABEL = "Attempts per minute"
MINUTES_PER_DAY = 24 * 60  # matplotlib's date unit is a day
LATENCY_LABEL = "Latency (s)"
FAILED_LABEL = "Failed jobs"
NO_DATA = "no data"
TOP_CODES = 6  # error codes named in the failures chart; the rest are "other"

_RATE, _BAND, _EXPECTED = "#1f77b4", "#9ecae1", "#3182bd"
_THRESHOLD, _START, _MITIGATION = "#d62728", "#7f7f7f", "#2ca02c"
_VOLUME, _VOLUME_TEXT = "#b0b0b0", "#666666"
# column, colour, line style, width, opacity, z-order: p95 (what the SLO judges) is drawn
# over p99, and p99 is a wide pale band, so it still shows where the two are equal (a
# minute of few attempts)
_PERCENTILES = (
    ("p50", "#2ca02c", "-", 1.5, 1.0, 2.4),
    ("p95", "#ff7f0e", "-", 1.5, 1.0, 2.2),
    ("p99", "#d62728", "-", 4.0, 0.35, 2.0),
)


def success_rate_chart(
    rates: pd.DataFrame,
    baseline: pd.DataFrame | None,
    *,
    threshold: float = 0.98,
    incident_start: datetime | None = None,
    mitigations: Sequence[tuple[datetime, str]] = (),
    title: str = "Export success rate against the baseline",
) -> Figure:
    """Success rate per minute (%) with the baseline band, the threshold and event markers.

    ``threshold`` is the lowest acceptable success rate as a fraction (``1 - failure
    threshold``, 0.98 for the runbook's 2%). Minutes without attempts (NaN) leave gaps.
    """
    if not 0.0 <= threshold <= 1.0:
        raise InvalidInput(f"threshold {threshold!r} must be a success rate from 0 to 1")
    fig, ax = _figure(title)
    values: list[float] = [threshold * 100]
    if baseline is not None and len(baseline) and {"low", "high", "expected"} <= set(baseline):
        values += _plot_baseline(ax, baseline)
    has_rates = bool(len(rates)) and _finite(_rate_column(rates))
    if has_rates:
        percent = _rate_column(rates) * 100
        ax.plot(
            minute_times(rates),
            percent,
            color=_RATE,
            marker=".",
            markersize=3,
            linewidth=1.5,
            label="Success rate",
        )
        values += [float(percent.min())]
    else:
        _no_data(ax)
    ax.axhline(
        threshold * 100,
        color=_THRESHOLD,
        linestyle=":",
        linewidth=1.5,
        label=f"Threshold {threshold * 100:g}%",
    )
    _mark_events(ax, incident_start, mitigations, _span(rates if has_rates else baseline))
    ax.set_ylim(max(0.0, min(values) - 2.0), 100.5)
    volume = plot_attempts(ax, rates) if has_rates else None
    time_axis(ax, RATE_LABEL, extra=[volume] if volume is not None else [])
    if not has_rates and (baseline is None or not len(baseline)):
        _empty_time_axis(ax, [incident_start, *(at for at, _ in mitigations)])
    return fig


def latency_chart(
    latency: pd.DataFrame,
    *,
    slo: float,
    title: str = "Export latency per minute (p50, p95, p99)",
) -> Figure:
    """p50/p95/p99 attempt durations per minute against the SLO and twice the SLO."""
    if not slo > 0:
        raise InvalidInput(f"latency SLO {slo!r} must be a positive number of seconds")
    fig, ax = _figure(title)
    plotted = False
    for column, color, style, width, alpha, order in _PERCENTILES:
        if column in latency and len(latency) and _finite(latency[column].astype(float)):
            ax.plot(
                minute_times(latency),
                latency[column].astype(float),
                color=color,
                marker=".",
                markersize=3,
                linewidth=width,
                alpha=alpha,
                linestyle=style,
                zorder=order,
                label=column,
            )
            plotted = True
    if not plotted:
        _no_data(ax)
    ax.axhline(slo, color="#555555", linestyle="--", linewidth=1.2, label=f"SLO {slo:g} s")
    ax.axhline(
        2 * slo, color=_THRESHOLD, linestyle=":", linewidth=1.5, label=f"2× SLO {2 * slo:g} s"
    )
    ax.set_ylim(bottom=0)
    time_axis(ax, LATENCY_LABEL)
    if not plotted:
        _empty_time_axis(ax, [])
    return fig


def failures_chart(
    categories: pd.DataFrame,
    *,
    title: str = "Failed jobs by connector, storage and error code",
) -> Figure:
    """Three horizontal bar panels (connector, bucket, error code), stacked by error code."""
    from matplotlib.figure import Figure  # deferred: matplotlib is heavy

    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(1, 3)
    frame = _failure_frame(categories)
    if frame is None:
        for ax, (_, heading) in zip(axes, _PANELS, strict=True):
            ax.set_title(heading, fontsize="medium")
            ax.set_xlabel(FAILED_LABEL)
            ax.set_xticks([])
            ax.set_yticks([])
            _no_data(ax, "no failed jobs")
        fig.legend(
            handles=_code_handles(["none"], {"none": "#cccccc"}),
            title="Error code",
            loc="outside lower center",
        )
        return fig
    codes = _top_codes(frame)
    colors = _code_colors(codes)
    for ax, (column, heading) in zip(axes, _PANELS, strict=True):
        _stacked_panel(ax, frame, column, codes, colors)
        ax.set_title(heading, fontsize="medium")
        ax.set_xlabel(FAILED_LABEL)
    fig.legend(
        handles=_code_handles(codes, colors),
        title="Error code",
        loc="outside lower center",
        ncols=min(len(codes), 4),
        fontsize="small",
    )
    return fig


def figure_to_png(fig: Figure, *, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# Shared parts ------------------------------------------------------------------------
def _figure(title: str) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure  # deferred: matplotlib is heavy

    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return fig, ax


def minute_times(frame: pd.DataFrame) -> Any:
    """The frame's minutes as naive UTC datetimes (matplotlib's UTC)."""
    import pandas as pd  # deferred: pandas is heavy

    index = pd.DatetimeIndex(frame.index)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.to_numpy()


def date_number(when: datetime) -> float:
    """matplotlib's number for a time; a naive time is taken to be UTC."""
    import matplotlib.dates as mdates  # deferred: matplotlib is heavy

    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return float(mdates.date2num(when))


def _rate_column(rates: pd.DataFrame) -> pd.Series:
    """Success rate 0..1; computed from the counts when the frame has no ``rate``."""
    if "rate" in rates:
        return rates["rate"].astype(float)
    total = rates["total"].astype(float)
    return (rates["succeeded"].astype(float) / total.where(total > 0)).astype(float)


def _finite(series: pd.Series) -> bool:
    return bool(series.notna().any())


def _plot_baseline(ax: Axes, baseline: pd.DataFrame) -> list[float]:
    times = minute_times(baseline)
    low, high = baseline["low"].astype(float) * 100, baseline["high"].astype(float) * 100
    expected = baseline["expected"].astype(float) * 100
    ax.fill_between(
        times, low, high, color=_BAND, alpha=0.45, linewidth=0, label="Baseline band (usual range)"
    )
    ax.plot(
        times, expected, color=_EXPECTED, linestyle="--", linewidth=1.2, label="Baseline (expected)"
    )
    return [float(v) for v in (low.min(), expected.min()) if v == v]


def _span(frame: pd.DataFrame | None) -> tuple[float, float] | None:
    """The time range a frame covers, one minute either side; None when it is empty."""
    import matplotlib.dates as mdates  # deferred: matplotlib is heavy

    if frame is None or not len(frame):
        return None
    times = minute_times(frame)
    minute = 1 / (24 * 60)  # matplotlib counts days
    return float(mdates.date2num(times.min())) - minute, float(
        mdates.date2num(times.max())
    ) + minute


def _mark_events(
    ax: Axes,
    incident_start: datetime | None,
    mitigations: Sequence[tuple[datetime, str]],
    span: tuple[float, float] | None,
) -> None:
    """Vertical markers for the incident start and each mitigation within ``span``."""

    def shown(when: datetime) -> bool:
        return span is None or span[0] <= date_number(when) <= span[1]

    mitigations = [(at, label) for at, label in mitigations if shown(at)]
    if incident_start is not None and not shown(incident_start):
        incident_start = None
    if incident_start is not None:
        ax.axvline(
            date_number(incident_start),
            color=_START,
            linestyle="--",
            linewidth=1.2,
            label=f"Incident start {incident_start.astimezone(UTC):%H:%M}",
        )
    for at, label in mitigations:
        ax.axvline(
            date_number(at),
            color=_MITIGATION,
            linestyle="-.",
            linewidth=1.2,
            label=f"{label} {at.astimezone(UTC):%H:%M}",
        )


def time_axis(ax: Axes, ylabel: str, *, extra: Sequence[Any] = ()) -> None:
    """Time ticks in UTC, the axis labels, and the legend right of the plot (``extra``:
    handles drawn on a twin axis, listed last; the legend then clears its tick labels)."""
    import matplotlib.dates as mdates  # deferred: matplotlib is heavy

    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=10))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))
    handles, labels = ax.get_legend_handles_labels()
    handles += list(extra)
    labels += [h.get_label() for h in extra]
    ax.legend(
        handles,
        labels,
        loc="upper left",
        bbox_to_anchor=(1.09 if extra else 1.01, 1.0),
        fontsize="small",
        borderaxespad=0,
    )


def plot_attempts(ax: Axes, rates: pd.DataFrame) -> Any | None:
    """Attempts per minute as pale bars on a right-hand axis, kept to the lower third of the
    plot: what each minute's rate stands on (one failure of two is 50%). None without counts."""
    if "total" not in rates:
        return None
    total = rates["total"].astype(float).fillna(0.0)
    if not bool((total > 0).any()):
        return None
    volume = ax.twinx()
    bars = volume.bar(
        minute_times(rates),
        total,
        width=0.8 / MINUTES_PER_DAY,
        color=_VOLUME,
        alpha=0.45,
        label=ATTEMPTS_LABEL,
        zorder=0,
    )
    volume.set_ylim(0, float(total.max()) * 3)
    volume.set_ylabel(ATTEMPTS_LABEL, color=_VOLUME_TEXT)
    volume.tick_params(axis="y", colors=_VOLUME_TEXT)
    ax.set_zorder(volume.get_zorder() + 1)  # the rate over the bars
    ax.patch.set_visible(False)
    return bars


def _empty_time_axis(ax: Axes, events: Sequence[datetime | None]) -> None:
    """Half an hour either side of the events, or no time ticks when there is nothing."""
    known = [date_number(e) for e in events if e is not None]
    margin = date_number(datetime(2000, 1, 1, 0, 30)) - date_number(datetime(2000, 1, 1))
    if known:
        ax.set_xlim(min(known) - margin, max(known) + margin)
    else:
        ax.set_xticks([])


def _no_data(ax: Axes, text: str = NO_DATA) -> None:
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize="large",
        color="#777777",
    )


# Failures ---------------------------------------------------------------------------
_PANELS = (
    ("connector", "By connector"),
    ("bucket", "By storage (bucket)"),
    ("error_code", "By error code"),
)


def _failure_frame(categories: pd.DataFrame) -> pd.DataFrame | None:
    """The columns the panels need, with unknown values named; None when nothing failed."""
    needed = {"connector", "bucket", "error_code", "count"}
    if not len(categories) or not needed <= set(categories):
        return None
    frame = categories[["connector", "bucket", "error_code", "count"]].copy()
    for column in ("connector", "bucket", "error_code"):
        frame[column] = frame[column].fillna("unknown").astype(str)
    frame["count"] = frame["count"].fillna(0).astype(int)
    frame = frame[frame["count"] > 0]
    return frame if len(frame) else None


def _top_codes(frame: pd.DataFrame) -> list[str]:
    totals = frame.groupby("error_code")["count"].sum().sort_values(ascending=False)
    codes = [str(c) for c in totals.index[:TOP_CODES]]
    if len(totals) > TOP_CODES:
        frame.loc[~frame["error_code"].isin(codes), "error_code"] = "other"
        codes.append("other")
    return codes


def _code_colors(codes: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps  # deferred: matplotlib is heavy

    palette = colormaps["tab10"]
    return {code: palette(i % 10) for i, code in enumerate(codes)}


def _stacked_panel(
    ax: Axes, frame: pd.DataFrame, column: str, codes: list[str], colors: dict[str, Any]
) -> None:
    from matplotlib.ticker import MaxNLocator  # deferred: matplotlib is heavy

    grouped = frame.assign(panel=frame[column])
    table = grouped.pivot_table(
        index="panel", columns="error_code", values="count", aggfunc="sum", fill_value=0
    )
    table = table.loc[table.sum(axis=1).sort_values().index]  # largest at the top
    left = [0] * len(table)
    labels = [str(v) for v in table.index]
    for code in codes:
        if code not in table:
            continue
        counts = [int(v) for v in table[code]]
        ax.barh(labels, counts, left=left, color=colors[code], label=code)
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.tick_params(axis="y", labelsize="small")
    ax.grid(True, axis="x", alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _code_handles(codes: list[str], colors: dict[str, Any]) -> list[Any]:
    from matplotlib.patches import Patch  # deferred: matplotlib is heavy

    return [Patch(color=colors[code], label=code) for code in codes]
