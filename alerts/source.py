"""Reading the engine's input from InfluxDB: ``reading`` joined with ``qc``, ``device_status`` and ``delivery``.

A reading becomes a :class:`alerts.rules.Point` only once the analytics core has written its ``qc`` point
(flag, label, anomaly score): the alert engine never decides on a reading QC has not seen. Verdicts marked
``late`` (written by the reconciliation pass for readings that arrived a late window or more after their time) are
left out: old data is never news. Queries are InfluxQL
over the v1 HTTP API (:class:`pilotwatch.influx.InfluxV1`), built from integers and quoted literals only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol

from alerts.rules import Delivery, Point, Status
from pilotwatch.influx import quote_literal
from pilotwatch.schema import SERIES_TAGS, QartodFlag


class QueryClient(Protocol):
    def query(self, q: str, epoch: str = "ms") -> list[dict[str, Any]]: ...


def _key(row: dict[str, Any], tags: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(row.get(t) or "") for t in tags)


def read_points(
    client: QueryClient, since_ms: int, until_ms: int, *, param: str | None = None, sites: Iterable[str] = ()
) -> list[Point]:
    """Readings with ``since_ms < t <= until_ms`` that have a ``qc`` point, with its verdict; optionally only one
    parameter at some sites (the history a rolling statistic needs after a restart)."""
    window = f"time > {int(since_ms)}ms AND time <= {int(until_ms)}ms"
    if param is not None:
        window += f" AND param = {quote_literal(param)}"
        site_list = sorted(sites)
        if site_list:
            window += " AND (" + " OR ".join(f"site = {quote_literal(s)}" for s in site_list) + ")"
    group = ", ".join(SERIES_TAGS)
    values: dict[tuple[tuple[str, ...], int], float] = {}
    # Built from integers and quote_literal only.
    for row in client.query(f"SELECT value FROM reading WHERE {window} GROUP BY {group}"):  # noqa: S608
        v = row.get("value")
        values[(_key(row, SERIES_TAGS), int(row["time"]))] = math.nan if v is None else float(v)
    out: list[Point] = []
    q = f"SELECT flag, label, anomaly_score, late FROM qc WHERE {window} GROUP BY {group}"  # noqa: S608
    for row in client.query(q):
        if row.get("late"):
            # A verdict the analytics reconciliation wrote hours or days after the reading: history, never news
            # (docs/alerts.md, "Late data"); the engine treats the reading as it did before it had a verdict.
            continue
        key = _key(row, SERIES_TAGS)
        t = int(row["time"])
        value = values.get((key, t))
        if value is None:
            continue
        flag = row.get("flag")
        score = row.get("anomaly_score")
        out.append(
            Point(
                city=key[0],
                site=key[1],
                device=key[2],
                sensor=key[3],
                param=key[4],
                t_ms=t,
                value=value,
                flag=int(QartodFlag.UNKNOWN) if flag is None else int(flag),
                label=str(row.get("label") or "good"),
                anomaly_score=0.0 if score is None else float(score),
            )
        )
    return out


def read_statuses(client: QueryClient, since_ms: int, until_ms: int) -> list[Status]:
    q = (
        f"SELECT battery_pct, buffer_depth FROM device_status WHERE time > {int(since_ms)}ms "  # noqa: S608
        f"AND time <= {int(until_ms)}ms GROUP BY city, site, device"
    )
    out = []
    for row in client.query(q):
        b, d = row.get("battery_pct"), row.get("buffer_depth")
        out.append(
            Status(
                city=str(row.get("city") or ""),
                site=str(row.get("site") or ""),
                device=str(row.get("device") or ""),
                t_ms=int(row["time"]),
                battery_pct=None if b is None else float(b),
                buffer_depth=None if d is None else int(d),
            )
        )
    return out


def read_deliveries(client: QueryClient, since_ms: int, until_ms: int) -> list[Delivery]:
    """``delivery`` points (ingest's clock) with ``since_ms < time <= until_ms``: arrival and clock offset."""
    q = (
        f"SELECT last_seen_ms, clock_offset_ms, clock_checked_ms FROM delivery WHERE time > {int(since_ms)}ms "  # noqa: S608
        f"AND time <= {int(until_ms)}ms GROUP BY city, site, device"
    )
    out = []
    for row in client.query(q):
        seen, offset, checked = row.get("last_seen_ms"), row.get("clock_offset_ms"), row.get("clock_checked_ms")
        out.append(
            Delivery(
                city=str(row.get("city") or ""),
                site=str(row.get("site") or ""),
                device=str(row.get("device") or ""),
                t_ms=int(row["time"]),
                last_seen_ms=None if seen is None else int(seen),
                clock_offset_ms=None if offset is None else int(offset),
                clock_checked_ms=None if checked is None else int(checked),
            )
        )
    return out
