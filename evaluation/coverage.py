"""Coverage of a series in a period: expected vs received vs accepted readings, and gaps.

Contract: :func:`period_coverage` counts, for one sensor and one period (local dates of the city), the readings the
sensor's interval promises between the period's start and ``min(period end, as_of)`` (nothing is expected from the
future), those received, and those accepted by QC; ``coverage`` is accepted / expected. A gap is a stretch longer
than :data:`GAP_MS` between consecutive received readings (or from the period's start to the first, or from the
last to its end). :func:`daily_coverage` gives accepted / expected per local day, the coverage calendar.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from evaluation.series import QCAcceptance, Series, in_period
from pilotwatch.manifest import Period

GAP_MS = 3_600_000
I8 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class PeriodCoverage:
    expected: int
    received: int
    accepted: int
    gaps: int
    longest_gap_h: float

    @property
    def coverage(self) -> float:
        return self.accepted / self.expected if self.expected else math.nan


def local_midnight_ms(day: dt.date, timezone: str) -> int:
    moment = dt.datetime.combine(day, dt.time(), tzinfo=zoneinfo.ZoneInfo(timezone))
    return int(moment.timestamp() * 1000)


def period_bounds_ms(period: Period, timezone: str, as_of_ms: int) -> tuple[int, int]:
    start = local_midnight_ms(period.start, timezone)
    end = min(local_midnight_ms(period.end, timezone), as_of_ms)
    return start, max(start, end)


def period_coverage(
    series: Series, days: I8, period: Period, timezone: str, *, acceptance: QCAcceptance, as_of_ms: int
) -> PeriodCoverage:
    start, end = period_bounds_ms(period, timezone, as_of_ms)
    expected = int((end - start) // int(series.interval_s * 1000))
    inside = in_period(days, period) & (series.times_ms < end)
    received = int(inside.sum())
    accepted = int((inside & series.accepted(acceptance)).sum())
    if expected == 0:
        return PeriodCoverage(0, received, accepted, 0, 0.0)
    stamps = np.concatenate([[start], series.times_ms[inside], [end]])
    steps = np.diff(stamps)
    long = steps[steps > GAP_MS]
    return PeriodCoverage(
        expected, received, accepted, int(long.shape[0]), float(long.max() / 3_600_000.0) if long.size else 0.0
    )


def daily_coverage(series: Series, days: I8, acceptance: QCAcceptance) -> dict[int, float]:
    """Accepted readings / expected readings per local day that has any reading."""
    per_day = 86_400 / series.interval_s
    ok = series.accepted(acceptance)
    labels, counts = np.unique(days[ok], return_counts=True)
    return {int(d): float(min(c / per_day, 1.0)) for d, c in zip(labels, counts, strict=True)}
