"""Reading stored series from InfluxDB: readings joined with their QC flags, one sensor at a time.

Contract: :func:`load_series` returns a :class:`evaluation.series.Series` of one sensor's readings in
``[start_ms, end_ms)``, in time order, each with the aggregate QC flag analytics stored beside it (measurement
``qc``, same tags and time) and whether that flag was written late (field ``late``: by reconciliation, after the
late window); a reading without one is ``UNKNOWN`` (not evaluated), so it never counts as good.
Queries go through :class:`pilotwatch.influx.InfluxV1`; identifiers and literals are quoted there. The range is
read in chunks (default 30 days) so six months of 5-minute readings never arrive as one response.
"""

from __future__ import annotations

import numpy as np

from evaluation.series import Series
from pilotwatch.influx import InfluxV1, quote_ident, quote_literal
from pilotwatch.schema import Measurement, QartodFlag

CHUNK_MS = 30 * 86_400_000


def _where(site: str, device: str, sensor: str, start_ms: int, end_ms: int) -> str:
    tags = " AND ".join(
        f"{quote_ident(tag)} = {quote_literal(value)}"
        for tag, value in (("site", site), ("device", device), ("sensor", sensor))
    )
    return f"{tags} AND time >= {int(start_ms)}ms AND time < {int(end_ms)}ms"


def load_series(
    influx: InfluxV1,
    *,
    site: str,
    device: str,
    sensor: str,
    start_ms: int,
    end_ms: int,
    interval_s: float,
    chunk_ms: int = CHUNK_MS,
) -> Series:
    """One sensor's readings with QC flags (see the module docstring)."""
    if end_ms <= start_ms:
        return Series.empty(interval_s)
    times: list[int] = []
    values: list[float] = []
    flags: list[int] = []
    late: list[bool] = []
    cursor = start_ms
    while cursor < end_ms:
        upper = min(cursor + chunk_ms, end_ms)
        where = _where(site, device, sensor, cursor, upper)
        readings = influx.query(
            f"SELECT {quote_ident('value')} FROM {quote_ident(Measurement.READING)} WHERE {where}",  # noqa: S608
            epoch="ms",
        )
        qc = {
            int(r["time"]): (r["flag"], bool(r.get("late")))
            for r in influx.query(
                f"SELECT {quote_ident('flag')}, {quote_ident('late')} FROM {quote_ident(Measurement.QC)} "  # noqa: S608
                f"WHERE {where}",
                epoch="ms",
            )
            if r.get("flag") is not None
        }
        for r in readings:
            if r.get("value") is None:
                continue
            t = int(r["time"])
            times.append(t)
            values.append(float(r["value"]))
            flag, was_late = qc.get(t, (QartodFlag.UNKNOWN, False))
            flags.append(int(flag))
            late.append(was_late)
        cursor = upper
    return Series(
        np.asarray(times, dtype=np.int64),
        np.asarray(values, dtype=np.float64),
        np.asarray(flags, dtype=np.uint8),
        interval_s,
        np.asarray(late, dtype=bool),
    )
