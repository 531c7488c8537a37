"""Per-minute success rates and the same-minute-of-day baseline, on constructed stores."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from constructed import NOW, make_world, minutes

from exportnb.core import codec
from exportnb.core.errors import InvalidInput
from exportnb.incident.steps.baseline import (
    as_utc,
    baseline,
    binomial_tail,
    ceil_minute,
    percentile,
    success_rates,
    wilson,
)

DAY = timedelta(days=1)


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    yield w
    w.platform.close()


def test_rates_are_zero_filled_and_exclude_cancelled(world):
    start = NOW.replace(second=0) - minutes(4)
    world.many(start + timedelta(seconds=5), 3)
    world.job(start + timedelta(seconds=20), "failed")
    world.job(start + minutes(2) + timedelta(seconds=1), "cancelled")
    frame = success_rates(world.platform, start, NOW)
    assert list(frame.columns) == ["total", "succeeded", "failed", "rate"]
    assert len(frame) == 5 and str(frame.index.tz) == "UTC" and frame.index.name == "minute"
    assert frame.iloc[0].to_dict() == {"total": 4, "succeeded": 3, "failed": 1, "rate": 0.75}
    assert frame.iloc[2]["total"] == 0 and math.isnan(frame.iloc[2]["rate"])
    assert frame["total"].sum() == 4


def test_rates_with_no_jobs_in_the_window(world):
    frame = success_rates(world.platform, NOW - minutes(10), NOW)
    assert len(frame) == 11 and frame["total"].sum() == 0 and frame["rate"].isna().all()


def test_times_in_another_zone_are_the_same_instants(world):
    world.job(NOW - minutes(1), "failed")
    plus_two = timezone(timedelta(hours=2))
    frame = success_rates(
        world.platform, (NOW - minutes(3)).astimezone(plus_two), NOW.astimezone(plus_two)
    )
    assert frame["failed"].sum() == 1 and str(frame.index.tz) == "UTC"


def test_naive_or_reversed_times_are_refused(world):
    with pytest.raises(InvalidInput, match="timezone-aware"):
        success_rates(world.platform, datetime(2024, 6, 11), NOW)
    with pytest.raises(InvalidInput, match="must be after"):
        success_rates(world.platform, NOW, NOW - minutes(1))
    with pytest.raises(InvalidInput, match="days"):
        baseline(world.platform, NOW - minutes(5), NOW, days=0)


def test_no_history_is_an_empty_baseline_not_an_error(world):
    result = baseline(world.platform, NOW - minutes(15), NOW)
    assert result.days_with_data == 0 and result.overall is None
    assert len(result.points) == 16  # 14:15:30 to 14:30:30 touches 16 minutes
    assert all(p.expected is None and p.low is None for p in result.points)
    frame = result.frame()
    assert list(frame.columns) == ["expected", "low", "high"] and frame.isna().all().all()
    json.dumps(codec.encode(result), allow_nan=False)  # no NaN leaks into the record


def test_baseline_pools_the_same_minute_of_previous_days(world):
    since, until = NOW - minutes(5), NOW
    for day in range(1, 8):  # 20 attempts per day around the window; day 3 had 4 failures
        at = since - day * DAY + minutes(2)
        world.many(at, 20 - (4 if day == 3 else 0))
        if day == 3:
            world.many(at, 4, "failed")
    world.many(since - minutes(30) - DAY, 50, "failed")  # outside the ±15 minute neighbourhood
    world.many(since + minutes(1), 5, "failed")  # today: not history
    result = baseline(world.platform, since, until, days=7)
    assert result.days_with_data == 7
    assert result.overall == pytest.approx(136 / 140)
    point = result.points[0]
    assert point.attempts == 140 and point.days == 7
    assert point.expected == pytest.approx(136 / 140)
    assert point.low == pytest.approx(0.92) and point.high == 1.0  # p10 of 0.8 and six 1.0
    assert result.at(since + timedelta(seconds=20)) == point
    assert result.frame().index[0] == since.replace(second=0)


def test_the_window_counts_only_the_requested_days(world):
    since = NOW - minutes(5)
    world.many(since - 2 * DAY, 10, "failed")
    assert baseline(world.platform, since, NOW, days=1).days_with_data == 0
    two = baseline(world.platform, since, NOW, days=2)
    assert two.days_with_data == 1 and two.overall == 0.0 and two.points[0].expected == 0.0


def test_a_few_attempts_give_a_wide_band(world):
    since = NOW - minutes(3)
    world.many(since - DAY, 3)
    point = baseline(world.platform, since, NOW).points[0]
    assert point.expected == 1.0 and point.high == 1.0 and point.low < 0.6


def test_smoothing_reaches_only_the_neighbourhood(world):
    since = NOW - minutes(1)
    world.many(since.replace(second=0) - DAY + minutes(10), 4, "failed")
    near = baseline(world.platform, since, NOW, smoothing_minutes=15).points[0]
    narrow = baseline(world.platform, since, NOW, smoothing_minutes=5).points[0]
    assert near.expected == 0.0 and narrow.expected is None


def test_statistics():
    low, high = wilson(99, 100)
    assert 0.95 < low < 0.99 < high <= 1.0
    assert percentile([0.1, 0.2, 0.3, 0.4], 50) == pytest.approx(0.25)
    assert percentile([0.5], 90) == 0.5
    assert ceil_minute(NOW) == NOW.replace(second=0) + minutes(1)
    assert ceil_minute(NOW.replace(second=0)) == NOW.replace(second=0)
    assert as_utc(NOW.astimezone(timezone(timedelta(hours=-5)))).tzinfo is UTC


def test_binomial_tail():
    assert binomial_tail(0, 10, 0.1) == 1.0 and binomial_tail(11, 10, 0.1) == 0.0
    assert binomial_tail(3, 3, 0.1) == pytest.approx(0.001)
    exact = 1 - sum(math.comb(20, i) * 0.05**i * 0.95 ** (20 - i) for i in range(2))
    assert binomial_tail(2, 20, 0.05) == pytest.approx(exact)
    assert 0 < binomial_tail(50, 5000, 0.001) < 1e-20
