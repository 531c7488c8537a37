"""Success rates per minute, and the baseline they are judged against.

Every rate here comes from the platform's per-minute counts of finished attempts
(:meth:`Platform.status_counts`, aggregated where the data lives); no job is pulled to
compute a rate.

*Success rate* is ``succeeded / (succeeded + failed)`` of the attempts that finished in a
minute. Cancelled attempts are left out: a cancellation is a user's decision, not an
export that failed. A minute without attempts has no rate (``None``; ``NaN`` in frames).

*The baseline* of a minute is the same minute of the day (UTC) on each of the previous
``days`` days (24-hour steps). Counts are pooled over those days and over a neighbourhood
of ±``smoothing_minutes`` (15) around the minute, so that quiet hours with a handful of
attempts per minute still give a stable rate:

* ``expected``: the pooled success rate (all succeeded / all attempts of the neighbourhood).
* ``low``/``high``: the band a healthy window falls in. It is the wider of two bands: the
  10th-90th percentile of the per-day rates of the neighbourhood (days with at least
  ``MIN_DAY_ATTEMPTS`` attempts; used when at least ``MIN_BAND_DAYS`` days have them),
  which is how much one window varies from day to day, and a 90% Wilson interval on the
  pooled counts, which keeps the band honest when there are few days or few attempts.

With no history at all the points carry ``None`` (the frame is ``NaN``), ``overall`` is
``None`` and ``days_with_data`` is 0; nothing downstream has to special-case it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import TYPE_CHECKING, ClassVar

from exportnb.core.errors import InvalidInput
from exportnb.core.findings import Finding
from exportnb.platform import Platform

if TYPE_CHECKING:
    import pandas as pd

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
SMOOTHING_MINUTES = 15
"""Minutes either side of a minute pooled into its baseline."""
BAND_PERCENTILES = (10.0, 90.0)
"""Percentiles of the per-day rates that bound the band."""
MIN_DAY_ATTEMPTS = 5
"""Attempts a day needs in a neighbourhood for its rate to count towards the band."""
MIN_BAND_DAYS = 3
"""Days with a rate needed before their percentiles are used for the band."""
WILSON_Z = 1.645
"""z of the two-sided 90% Wilson interval on the pooled counts."""


# Times ------------------------------------------------------------------------------
def as_utc(value: datetime, name: str = "time") -> datetime:
    """``value`` in UTC. A naive datetime is refused: its zone would be a guess."""
    if not isinstance(value, datetime):
        raise InvalidInput(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def floor_minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def ceil_minute(value: datetime) -> datetime:
    """The first minute boundary at or after ``value``."""
    floor = floor_minute(value)
    return floor if floor == value else floor + MINUTE


def minute_grid(since: datetime, until: datetime) -> list[datetime]:
    """The minutes ``m`` with ``floor(since) <= m < until``."""
    minute, end = floor_minute(since), until
    grid: list[datetime] = []
    while minute < end:
        grid.append(minute)
        minute += MINUTE
    return grid


def checked_range(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    start, end = as_utc(since, "since"), as_utc(until, "until")
    if end <= start:
        raise InvalidInput(f"until ({end.isoformat()}) must be after since ({start.isoformat()})")
    return start, end


# Per-minute rates ----------------------------------------------------------------------
@dataclass(frozen=True)
class MinuteRate:
    """Finished attempts of one minute, by status."""

    minute: datetime
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        """Attempts that count towards the success rate (cancelled ones do not)."""
        return self.succeeded + self.failed

    @property
    def rate(self) -> float | None:
        return self.succeeded / self.total if self.total else None


def minute_rates(platform: Platform, since: datetime, until: datetime) -> list[MinuteRate]:
    """One :class:`MinuteRate` per minute of ``[since, until)``, zero-filled."""
    start, end = checked_range(since, until)
    counts: dict[datetime, dict[str, int]] = {}
    for row in platform.status_counts(floor_minute(start), end):
        minute = floor_minute(as_utc(row.minute, "minute"))
        by_status = counts.setdefault(minute, {})
        by_status[row.status] = by_status.get(row.status, 0) + row.count
    return [_minute_rate(m, counts.get(m, {})) for m in minute_grid(start, end)]


def _minute_rate(minute: datetime, by_status: dict[str, int]) -> MinuteRate:
    return MinuteRate(
        minute,
        by_status.get("succeeded", 0),
        by_status.get("failed", 0),
        by_status.get("cancelled", 0),
    )


def rates_frame(rates: list[MinuteRate]) -> pd.DataFrame:
    """The rates frame: index ``minute`` (UTC), columns ``total, succeeded, failed, rate``."""
    import pandas as pd  # deferred: pandas is heavy

    return pd.DataFrame(
        {
            "total": [r.total for r in rates],
            "succeeded": [r.succeeded for r in rates],
            "failed": [r.failed for r in rates],
            "rate": [_nan(r.rate) for r in rates],
        },
        index=minute_index([r.minute for r in rates]),
        columns=["total", "succeeded", "failed", "rate"],
    ).astype({"total": "int64", "succeeded": "int64", "failed": "int64", "rate": "float64"})


def success_rates(platform: Platform, since: datetime, until: datetime) -> pd.DataFrame:
    """The success rate of every minute of ``[since, until)`` (zero-filled rates frame)."""
    return rates_frame(minute_rates(platform, since, until))


def minute_index(minutes: list[datetime]) -> pd.DatetimeIndex:
    """A UTC index named ``minute`` (an empty one keeps its time zone)."""
    import pandas as pd  # deferred: pandas is heavy

    if not minutes:
        return pd.DatetimeIndex([], tz="UTC", name="minute")
    return pd.DatetimeIndex(minutes, name="minute").tz_convert("UTC")


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


# The baseline ----------------------------------------------------------------------
@dataclass(frozen=True)
class BaselinePoint:
    """The expected success rate of one minute, and the band a healthy minute falls in."""

    minute: datetime
    expected: float | None
    low: float | None
    high: float | None
    attempts: int = 0  # pooled attempts behind the point
    days: int = 0  # days whose neighbourhood had attempts


@dataclass(frozen=True)
class Baseline:
    KIND: ClassVar[str] = "baseline/v1"
    since: datetime
    until: datetime
    days: int
    days_with_data: int
    points: list[BaselinePoint]
    overall: float | None
    smoothing_minutes: int = SMOOTHING_MINUTES
    findings: list[Finding] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """The baseline frame: index ``minute`` (UTC), columns ``expected, low, high``."""
        import pandas as pd  # deferred: pandas is heavy

        points = self.points
        return pd.DataFrame(
            {
                "expected": [_nan(p.expected) for p in points],
                "low": [_nan(p.low) for p in points],
                "high": [_nan(p.high) for p in points],
            },
            index=minute_index([p.minute for p in points]),
            columns=["expected", "low", "high"],
            dtype="float64",
        )

    def at(self, minute: datetime) -> BaselinePoint | None:
        """The point of the minute holding ``minute``, if the baseline covers it."""
        wanted = floor_minute(as_utc(minute, "minute"))
        return next((p for p in self.points if p.minute == wanted), None)

    def between(self, since: datetime, until: datetime) -> list[BaselinePoint]:
        """The points of the minutes of ``[since, until)`` that have an expected rate."""
        start, end = floor_minute(as_utc(since, "since")), as_utc(until, "until")
        return [p for p in self.points if start <= p.minute < end and p.expected is not None]


def baseline(
    platform: Platform,
    since: datetime,
    until: datetime,
    *,
    days: int = 7,
    smoothing_minutes: int = SMOOTHING_MINUTES,
) -> Baseline:
    """The baseline of every minute of ``[since, until)``: the same minute of the day over
    the previous ``days`` days, pooled over ±``smoothing_minutes``."""
    start, end = checked_range(since, until)
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise InvalidInput(f"days must be a whole number of at least 1, got {days!r}")
    if smoothing_minutes < 0:
        raise InvalidInput("smoothing_minutes must not be negative")
    grid = minute_grid(start, end)
    margin = smoothing_minutes * MINUTE
    history = [
        _DayCounts.of(
            minute_rates(platform, grid[0] - margin - d * DAY, grid[-1] + MINUTE + margin - d * DAY)
        )
        for d in range(1, days + 1)
    ]
    width = 2 * smoothing_minutes + 1
    points = [_point(m, i, i + width, history) for i, m in enumerate(grid)]
    succeeded = sum(day.succeeded[-1] for day in history)
    total = sum(day.total[-1] for day in history)
    return Baseline(
        since=start,
        until=end,
        days=days,
        days_with_data=sum(1 for day in history if day.total[-1]),
        points=points,
        overall=succeeded / total if total else None,
        smoothing_minutes=smoothing_minutes,
    )


@dataclass(frozen=True)
class _DayCounts:
    """Running sums of one day's per-minute counts, so any neighbourhood is two lookups."""

    succeeded: list[int]
    total: list[int]

    @classmethod
    def of(cls, rows: list[MinuteRate]) -> _DayCounts:
        return cls(
            [0, *accumulate(r.succeeded for r in rows)], [0, *accumulate(r.total for r in rows)]
        )

    def pooled(self, first: int, stop: int) -> tuple[int, int]:
        """``(succeeded, total)`` of rows ``first`` up to (not including) ``stop``."""
        return self.succeeded[stop] - self.succeeded[first], self.total[stop] - self.total[first]


def _point(minute: datetime, first: int, stop: int, history: list[_DayCounts]) -> BaselinePoint:
    """Pool rows ``first:stop`` of each day: the minute's neighbourhood."""
    per_day = [day.pooled(first, stop) for day in history]
    succeeded = sum(s for s, _ in per_day)
    total = sum(n for _, n in per_day)
    if not total:
        return BaselinePoint(minute, None, None, None)
    expected = succeeded / total
    low, high = wilson(succeeded, total)
    day_rates = sorted(s / n for s, n in per_day if n >= MIN_DAY_ATTEMPTS)
    if len(day_rates) >= MIN_BAND_DAYS:
        low = min(low, percentile(day_rates, BAND_PERCENTILES[0]))
        high = max(high, percentile(day_rates, BAND_PERCENTILES[1]))
    days_with = sum(1 for _, n in per_day if n)
    return BaselinePoint(minute, expected, low, high, attempts=total, days=days_with)


def wilson(successes: int, total: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion."""
    if total <= 0:
        raise InvalidInput("a Wilson interval needs at least one trial")
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def percentile(ordered: list[float], q: float) -> float:
    """The ``q``-th percentile of sorted values, interpolated linearly (numpy's default)."""
    if not ordered:
        raise InvalidInput("a percentile of no values")
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space."""
    if k <= 0 or p >= 1.0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n = math.lgamma(n + 1)
    return min(
        1.0,
        sum(
            math.exp(
                log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
            )
            for i in range(k, n + 1)
        ),
    )
