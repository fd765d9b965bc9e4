"""One sensor's stored readings as arrays, and how they become period samples for the estimators.

Contract:

- :class:`Series` holds a sensor's readings in time order: sample times (epoch ms, UTC), values, and the QC flag
  of each (QARTOD values of :class:`pilotwatch.schema.QartodFlag`; ``UNKNOWN`` where analytics has not flagged
  the reading yet), and the sensor's nominal interval.
- Only readings whose flag is accepted (:class:`QCAcceptance`: good, or good and suspect) enter an estimate.
- A reading belongs to a period by its **local date** in the city's time zone, because the manifest's period
  dates are local dates; the local hour of day is the stratum that balances the daily cycle.
- Impact and control readings are paired on the grid of the impact sensor's interval (a reading belongs to the
  grid cell its time falls in; several in one cell are averaged), so BACI differences are taken at the same time.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from evaluation.estimators import PairedSample, PeriodSample
from pilotwatch.manifest import Period
from pilotwatch.schema import QartodFlag

F8 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

EPOCH_DAY = dt.date(1970, 1, 1)


class QCAcceptance(enum.StrEnum):
    """Which QC verdicts an estimate may use."""

    GOOD = "good"
    GOOD_OR_SUSPECT = "good_or_suspect"

    @property
    def flags(self) -> frozenset[int]:
        if self is QCAcceptance.GOOD:
            return frozenset({int(QartodFlag.GOOD)})
        return frozenset({int(QartodFlag.GOOD), int(QartodFlag.SUSPECT)})


@dataclass(frozen=True, slots=True)
class Series:
    times_ms: I8
    values: F8
    flags: U8
    interval_s: float
    late: npt.NDArray[np.bool_] | None = None
    """Which readings' QC analytics wrote by reconciliation, after its late window (docs/qc.md); None: none."""

    def __post_init__(self) -> None:
        n = self.times_ms.shape[0]
        if self.values.shape != (n,) or self.flags.shape != (n,):
            raise ValueError(
                f"times, values and flags must have the same length: {n}, {self.values.shape}, {self.flags.shape}"
            )
        if self.late is not None and self.late.shape != (n,):
            raise ValueError(f"late must have one entry per reading: {n}, {self.late.shape}")
        if n > 1 and np.any(np.diff(self.times_ms) < 0):
            raise ValueError("series times must be in ascending order")
        if self.interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {self.interval_s}")

    @classmethod
    def empty(cls, interval_s: float) -> Series:
        return cls(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.uint8), interval_s)

    @property
    def n(self) -> int:
        return int(self.times_ms.shape[0])

    @property
    def qc_late(self) -> npt.NDArray[np.bool_]:
        return np.zeros(self.n, dtype=bool) if self.late is None else self.late

    def accepted(self, acceptance: QCAcceptance) -> npt.NDArray[np.bool_]:
        ok: npt.NDArray[np.bool_] = np.isin(self.flags, list(acceptance.flags)) & np.isfinite(self.values)
        return ok

    def local(self, timezone: str) -> tuple[I8, I8]:
        """Local hour of day (0-23) and local day number (days since 1970-01-01, local) of each reading."""
        stamps = pd.to_datetime(self.times_ms, unit="ms", utc=True).tz_convert(timezone)
        hours = np.asarray(stamps.hour, dtype=np.int64)
        local_naive = stamps.tz_localize(None)
        days = np.asarray((local_naive.normalize() - pd.Timestamp("1970-01-01")).days, dtype=np.int64)
        return hours, days


def day_number(day: dt.date) -> int:
    return (day - EPOCH_DAY).days


def in_period(days: I8, period: Period) -> npt.NDArray[np.bool_]:
    inside: npt.NDArray[np.bool_] = (days >= day_number(period.start)) & (days < day_number(period.end))
    return inside


def period_sample(series: Series, period: Period, timezone: str, acceptance: QCAcceptance) -> PeriodSample:
    """The accepted readings of one period, in time order."""
    hours, days = series.local(timezone)
    keep = series.accepted(acceptance) & in_period(days, period)
    return PeriodSample(series.values[keep], hours[keep], days[keep])


def paired_sample(
    impact: Series, control: Series, period: Period, timezone: str, acceptance: QCAcceptance
) -> PairedSample:
    """Impact and control readings of one period that share a grid cell of the impact's interval."""
    cell_ms = int(impact.interval_s * 1000)
    frames = []
    for name, s in (("impact", impact), ("control", control)):
        ok = s.accepted(acceptance)
        frame = pd.DataFrame({"cell": s.times_ms[ok] // cell_ms, name: s.values[ok]})
        frames.append(frame.groupby("cell", sort=True).mean())
    joined = frames[0].join(frames[1], how="inner")
    cells = joined.index.to_numpy(dtype=np.int64)
    grid = Series(
        cells * cell_ms,
        joined["impact"].to_numpy(np.float64),
        np.full(cells.shape[0], int(QartodFlag.GOOD), np.uint8),
        impact.interval_s,
    )
    hours, days = grid.local(timezone)
    keep = in_period(days, period)
    return PairedSample(
        joined["impact"].to_numpy(np.float64)[keep],
        joined["control"].to_numpy(np.float64)[keep],
        hours[keep],
        days[keep],
    )
