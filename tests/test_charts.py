"""The incident charts: what they draw, their labels and legends, empty data, PNG output."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import matplotlib.dates as mdates
import pandas as pd
import pytest

from exportnb.core.errors import InvalidInput
from exportnb.notebook import charts

NOW = datetime(2024, 6, 11, 14, 30, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def minutes(n: int) -> pd.DatetimeIndex:
    return pd.date_range(NOW - timedelta(minutes=n - 1), NOW, freq="min", tz="UTC", name="minute")


def rates_frame(n: int = 60, *, dip_from: int = 40, dip: float = 0.7) -> pd.DataFrame:
    index = minutes(n)
    total = [20] * n
    succeeded = [20 if i < dip_from else int(20 * dip) for i in range(n)]
    frame = pd.DataFrame(
        {
            "total": total,
            "succeeded": succeeded,
            "failed": [t - s for t, s in zip(total, succeeded, strict=True)],
        },
        index=index,
    )
    frame["rate"] = frame["succeeded"] / frame["total"]
    frame.loc[index[5:8], ["total", "succeeded", "failed"]] = 0
    frame.loc[index[5:8], "rate"] = math.nan  # minutes without attempts
    return frame


def baseline_frame(n: int = 60) -> pd.DataFrame:
    return pd.DataFrame(
        {"expected": 0.995, "low": 0.985, "high": 1.0}, index=minutes(n), dtype="float64"
    )


def empty_rates() -> pd.DataFrame:
    index = pd.DatetimeIndex([], tz="UTC", name="minute")
    return pd.DataFrame({c: [] for c in ("total", "succeeded", "failed", "rate")}, index=index)


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None, "the chart has no legend"
    return [t.get_text() for t in legend.get_texts()]


def line_labelled(ax, prefix: str):
    found = [line for line in ax.get_lines() if line.get_label().startswith(prefix)]
    assert found, f"no line labelled {prefix!r} in {[x.get_label() for x in ax.get_lines()]}"
    return found[0]


def assert_png(fig) -> bytes:
    data = charts.figure_to_png(fig)
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    assert (width, height) == (1000, 400)  # 10 x 4 inches at 100 dpi: notebook width
    return data


# Success rate -------------------------------------------------------------------------
def test_success_rate_chart_draws_rate_baseline_threshold_and_markers():
    start = NOW - timedelta(minutes=19)
    fix = NOW - timedelta(minutes=5)
    fig = charts.success_rate_chart(
        rates_frame(),
        baseline_frame(),
        threshold=0.98,
        incident_start=start,
        mitigations=[(fix, "fallback bucket")],
    )
    ax = fig.axes[0]
    assert ax.get_title() == "Export success rate against the baseline"
    assert ax.get_ylabel() == "Success rate (%)" and ax.get_xlabel() == "Time (UTC)"
    assert legend_texts(ax) == [
        "Baseline band (usual range)",
        "Baseline (expected)",
        "Success rate",
        "Threshold 98%",
        "Incident start 14:11",
        "fallback bucket 14:25",
        "Attempts per minute",
    ]
    threshold = line_labelled(ax, "Threshold")
    assert list(threshold.get_ydata()) == [98.0, 98.0]
    rate = line_labelled(ax, "Success rate")
    values = list(rate.get_ydata())
    assert values[0] == 100.0 and values[-1] == 70.0 and math.isnan(values[5])
    assert line_labelled(ax, "Baseline (expected)").get_linestyle() == "--"
    assert list(line_labelled(ax, "Incident start").get_xdata()) == [mdates.date2num(start)] * 2
    assert line_labelled(ax, "fallback bucket").get_xdata()[0] == mdates.date2num(fix)
    low, high = ax.get_ylim()
    assert low <= 68 and high == 100.5  # the dip to 70% is in view
    assert ax.xaxis.get_major_formatter()(mdates.date2num(NOW)) == "14:30"
    assert_png(fig)


def test_success_rate_chart_shows_the_attempts_each_minute_stands_on():
    fig = charts.success_rate_chart(rates_frame(), None)
    rate_axis, volume = fig.axes
    assert volume.get_ylabel() == "Attempts per minute"
    heights = [bar.get_height() for bar in volume.patches]
    assert heights[:5] == [20] * 5 and heights[5:8] == [0] * 3 and len(heights) == 60
    assert volume.get_ylim() == (0, 60)  # bars in the lower third, under the rate
    assert rate_axis.get_zorder() > volume.get_zorder()
    no_counts = rates_frame().drop(columns=["total", "succeeded", "failed"])
    assert len(charts.success_rate_chart(no_counts, None).axes) == 1  # nothing to show


def test_success_rate_chart_without_baseline_or_with_an_empty_one():
    for baseline in (None, baseline_frame().iloc[0:0]):
        fig = charts.success_rate_chart(rates_frame(), baseline, threshold=0.95)
        ax = fig.axes[0]
        assert legend_texts(ax) == ["Success rate", "Threshold 95%", "Attempts per minute"]
        assert line_labelled(ax, "Threshold").get_ydata()[0] == 95.0
        assert_png(fig)


def test_success_rate_chart_of_no_data_says_so():
    fig = charts.success_rate_chart(empty_rates(), None, incident_start=NOW)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["no data"]
    assert legend_texts(ax) == ["Threshold 98%", "Incident start 14:30"]
    left, right = ax.get_xlim()
    assert left < mdates.date2num(NOW) < right
    assert_png(fig)
    idle = rates_frame(10)
    idle["rate"] = math.nan  # minutes exist, none had attempts
    fig = charts.success_rate_chart(idle, baseline_frame(10))
    assert [t.get_text() for t in fig.axes[0].texts] == ["no data"]
    assert_png(fig)
    assert_png(charts.success_rate_chart(empty_rates(), None))  # no events at all


def test_success_rate_chart_computes_the_rate_from_counts_when_missing():
    frame = rates_frame().drop(columns=["rate"])
    ax = charts.success_rate_chart(frame, None).axes[0]
    values = list(line_labelled(ax, "Success rate").get_ydata())
    assert values[-1] == 70.0 and math.isnan(values[6])


def test_success_rate_threshold_is_a_fraction():
    with pytest.raises(InvalidInput, match="from 0 to 1"):
        charts.success_rate_chart(rates_frame(), None, threshold=98)


def test_naive_baseline_times_are_utc():
    frame = rates_frame()
    frame.index = frame.index.tz_localize(None)
    ax = charts.success_rate_chart(frame, None).axes[0]
    assert (
        line_labelled(ax, "Success rate").get_xdata()[-1]
        == pd.Timestamp(NOW).tz_localize(None).to_datetime64()
    )


# Latency ---------------------------------------------------------------------------------
def latency_frame(n: int = 30) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"count": [10] * n, "p50": [20.0] * n, "p95": [45.0] * n, "p99": [130.0] * n},
        index=minutes(n),
    )
    frame.iloc[3] = [0, math.nan, math.nan, math.nan]
    return frame


def test_latency_chart_draws_percentiles_against_slo():
    fig = charts.latency_chart(latency_frame(), slo=60.0)
    ax = fig.axes[0]
    assert ax.get_title() == "Export latency per minute (p50, p95, p99)"
    assert ax.get_ylabel() == "Latency (s)" and ax.get_xlabel() == "Time (UTC)"
    assert legend_texts(ax) == ["p50", "p95", "p99", "SLO 60 s", "2× SLO 120 s"]
    assert line_labelled(ax, "SLO").get_ydata()[0] == 60.0
    assert line_labelled(ax, "2× SLO").get_ydata()[0] == 120.0
    assert math.isnan(line_labelled(ax, "p99").get_ydata()[3])
    assert ax.get_ylim()[0] == 0
    assert_png(fig)


def test_latency_chart_of_no_data():
    for frame in (pd.DataFrame(), latency_frame().assign(p50=math.nan, p95=math.nan, p99=math.nan)):
        fig = charts.latency_chart(frame, slo=30, title="Latency")
        ax = fig.axes[0]
        assert ax.get_title() == "Latency"
        assert [t.get_text() for t in ax.texts] == ["no data"]
        assert legend_texts(ax) == ["SLO 30 s", "2× SLO 60 s"]
        assert_png(fig)
    with pytest.raises(InvalidInput, match="SLO"):
        charts.latency_chart(latency_frame(), slo=0)


# Failures ---------------------------------------------------------------------------------
def categories_frame() -> pd.DataFrame:
    rows = [
        ("snowflake", "exports-primary", "RequestTimeout", 40),
        ("bigquery", "exports-primary", "RequestTimeout", 25),
        ("s3", "exports-eu", "SlowDown", 30),
        ("gcs", "exports-eu", "SlowDown", 12),
        ("sftp", "exports-primary", None, 2),
    ]
    frame = pd.DataFrame(rows, columns=["connector", "bucket", "error_code", "count"])
    frame["first_seen"] = pd.Timestamp(NOW - timedelta(minutes=20))
    frame["last_seen"] = pd.Timestamp(NOW)
    frame["tenants"] = "acme, globex"
    return frame


def bar_totals(ax) -> dict[str, int]:
    labels = [t.get_text() for t in ax.get_yticklabels()]
    totals: dict[str, int] = dict.fromkeys(labels, 0)
    for patch in ax.patches:
        y = round(patch.get_y() + patch.get_height() / 2)
        totals[labels[y]] += int(patch.get_width())
    return totals


def test_failures_chart_by_connector_bucket_and_error_code():
    fig = charts.failures_chart(categories_frame())
    assert fig.get_suptitle() == "Failed jobs by connector, storage and error code"
    by_connector, by_bucket, by_code = fig.axes
    assert [ax.get_title() for ax in fig.axes] == [
        "By connector",
        "By storage (bucket)",
        "By error code",
    ]
    assert all(ax.get_xlabel() == "Failed jobs" for ax in fig.axes)
    assert bar_totals(by_connector) == {
        "sftp": 2,
        "gcs": 12,
        "bigquery": 25,
        "s3": 30,
        "snowflake": 40,
    }
    assert bar_totals(by_bucket) == {"exports-eu": 42, "exports-primary": 67}
    assert bar_totals(by_code) == {"unknown": 2, "SlowDown": 42, "RequestTimeout": 65}
    legend = fig.legends[0]
    assert legend.get_title().get_text() == "Error code"
    assert [t.get_text() for t in legend.get_texts()] == ["RequestTimeout", "SlowDown", "unknown"]
    assert_png(fig)


def test_failures_chart_names_the_top_codes_and_groups_the_rest():
    rows = [("s3", "b", f"Code{i}", 10 - i) for i in range(9)]
    frame = pd.DataFrame(rows, columns=["connector", "bucket", "error_code", "count"])
    fig = charts.failures_chart(frame)
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert names == [f"Code{i}" for i in range(charts.TOP_CODES)] + ["other"]
    assert bar_totals(fig.axes[2])["other"] == sum(10 - i for i in range(charts.TOP_CODES, 9))


def test_failures_chart_with_nothing_failed():
    for frame in (pd.DataFrame(), categories_frame().iloc[0:0], categories_frame().assign(count=0)):
        fig = charts.failures_chart(frame)
        assert [t.get_text() for ax in fig.axes for t in ax.texts] == ["no failed jobs"] * 3
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["none"]
        assert_png(fig)


def test_charts_leave_no_pyplot_figures_behind():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    charts.success_rate_chart(rates_frame(), baseline_frame())
    charts.latency_chart(latency_frame(), slo=60)
    charts.failures_chart(categories_frame())
    assert plt.get_fignums() == before


def test_markers_outside_the_charted_time_are_left_out():
    start = NOW - timedelta(hours=2)  # long before this 60-minute frame
    inside = NOW - timedelta(minutes=3)
    fig = charts.success_rate_chart(
        rates_frame(),
        None,
        incident_start=start,
        mitigations=[(inside, "retry"), (NOW + timedelta(hours=1), "later")],
    )
    ax = fig.axes[0]
    assert legend_texts(ax) == [
        "Success rate",
        "Threshold 98%",
        "retry 14:27",
        "Attempts per minute",
    ]
    left, _ = ax.get_xlim()
    assert left > mdates.date2num(NOW - timedelta(minutes=70))  # not stretched to the start
