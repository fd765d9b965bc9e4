"""Reads for the API: InfluxQL over :class:`pilotwatch.influx.InfluxV1`, nothing else.

Every identifier goes through ``quote_ident`` and every literal through ``quote_literal``; times are integers
this module computes (milliseconds since the epoch, written ``<n>ms``). No text from a request reaches a query
unquoted. QC flags live in measurement ``qc`` (field ``flag``, the same tags and time as the reading, written
by analytics); a reading that has none is reported as not evaluated.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from pilotwatch.influx import InfluxV1, quote_ident, quote_literal
from pilotwatch.schema import DEVICE_STATUS_FIELDS, Measurement, QartodFlag

Key = tuple[str, str, int]
"""(device, sensor, time in ms): a reading's identity inside one site."""


def eq(tag: str, value: str) -> str:
    return f"{quote_ident(tag)} = {quote_literal(value)}"


def time_range(start_ms: int, end_ms: int) -> str:
    """Half-open [start, end) in milliseconds; both are ints, never request text."""
    return f"time >= {int(start_ms)}ms AND time < {int(end_ms)}ms"


def fields(*names: str) -> str:
    return ", ".join(quote_ident(n) for n in names)


@dataclass(frozen=True, slots=True)
class LatestRow:
    device: str
    sensor: str
    param: str
    t_ms: int
    value: float
    unit: str
    edge_flag: int | None
    qc_flag: int | None


@dataclass(frozen=True, slots=True)
class SeriesRow:
    t_ms: int
    value: float
    edge_flag: int | None
    qc_flag: int | None
    qc_late: bool = False
    """The QC point was written by analytics' reconciliation, after the late window (docs/qc.md)."""


@dataclass(frozen=True, slots=True)
class ExportRow:
    t_ms: int
    city: str
    site: str
    device: str
    sensor: str
    param: str
    value: float
    unit: str
    edge_flag: int | None
    qc_flag: int
    qc_late: bool = False


class QcMark(NamedTuple):
    """A reading's ``qc`` point as the API shows it: the aggregate flag, and whether it was written late."""

    flag: int | None
    late: bool


NO_QC = QcMark(None, False)


def _qc_mark(row: Mapping[str, Any]) -> QcMark:
    return QcMark(_int_or_none(row.get("flag")), bool(row.get("late")))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


class ReadingStore:
    """The queries the API runs. One instance per application; the InfluxDB client is injected."""

    def __init__(self, influx: InfluxV1) -> None:
        self.influx = influx
        self.queries = 0
        """How many InfluxQL statements this store sent (tests use it to see chunking)."""

    def _query(self, q: str) -> list[dict[str, Any]]:
        self.queries += 1
        return self.influx.query(q, epoch="ms")

    # -- latest ----------------------------------------------------------------------------------------------
    def latest_for_site(self, site_id: str) -> list[LatestRow]:
        site = eq("site", site_id)
        group = f"GROUP BY {fields('device', 'sensor', 'param')} ORDER BY time DESC LIMIT 1"
        readings = self._query(
            f"SELECT {fields('value', 'unit', 'flag')} FROM {quote_ident(Measurement.READING)} "  # noqa: S608
            f"WHERE {site} {group}"
        )
        flags = self._query(
            f"SELECT {fields('flag')} FROM {quote_ident(Measurement.QC)} WHERE {site} {group}"  # noqa: S608
        )
        latest_qc = {(r["device"], r["sensor"], int(r["time"])): _int_or_none(r["flag"]) for r in flags}
        rows = [
            LatestRow(
                device=r["device"],
                sensor=r["sensor"],
                param=r["param"],
                t_ms=int(r["time"]),
                value=float(r["value"]),
                unit=r["unit"],
                edge_flag=_int_or_none(r.get("flag")),
                # The newest QC point belongs to this reading only if its time matches; analytics may lag behind.
                qc_flag=latest_qc.get((r["device"], r["sensor"], int(r["time"]))),
            )
            for r in readings
            if r.get("value") is not None
        ]
        return sorted(rows, key=lambda row: (row.device, row.sensor))

    # -- series ----------------------------------------------------------------------------------------------
    def series(self, device: str, sensor: str, start_ms: int, end_ms: int, limit: int) -> tuple[list[SeriesRow], bool]:
        """Up to ``limit`` points in time order, and whether more exist in the range."""
        where = f"{eq('device', device)} AND {eq('sensor', sensor)} AND {time_range(start_ms, end_ms)}"
        readings = self._query(
            f"SELECT {fields('value', 'flag')} FROM {quote_ident(Measurement.READING)} "  # noqa: S608
            f"WHERE {where} ORDER BY time ASC LIMIT {int(limit) + 1}"
        )
        truncated = len(readings) > limit
        readings = readings[:limit]
        qc: dict[Key, QcMark] = {}
        if readings:
            first, last = int(readings[0]["time"]), int(readings[-1]["time"])
            qc = self._qc_flags(f"{eq('device', device)} AND {eq('sensor', sensor)}", first, last + 1)
        rows = []
        for r in readings:
            if r.get("value") is None:
                continue
            mark = qc.get((device, sensor, int(r["time"])), NO_QC)
            rows.append(
                SeriesRow(
                    t_ms=int(r["time"]),
                    value=float(r["value"]),
                    edge_flag=_int_or_none(r.get("flag")),
                    qc_flag=mark.flag,
                    qc_late=mark.late,
                )
            )
        return rows, truncated

    # -- device health ---------------------------------------------------------------------------------------
    def device_status(self, device: str) -> dict[str, Any] | None:
        rows = self._query(
            f"SELECT {fields(*DEVICE_STATUS_FIELDS)} FROM {quote_ident(Measurement.DEVICE_STATUS)} "  # noqa: S608
            f"WHERE {eq('device', device)} ORDER BY time DESC LIMIT 1"
        )
        return rows[0] if rows else None

    def last_reading_ms(self, device: str) -> int | None:
        # A single selector returns the time of the point it selected: the newest reading of the device.
        rows = self._query(
            f"SELECT last({quote_ident('seq')}) FROM {quote_ident(Measurement.READING)} "  # noqa: S608
            f"WHERE {eq('device', device)}"
        )
        return int(rows[0]["time"]) if rows else None

    # -- export ----------------------------------------------------------------------------------------------
    def export_rows(
        self,
        site_id: str,
        param: str | None,
        start_ms: int,
        end_ms: int,
        *,
        chunk_ms: int,
        page_rows: int,
    ) -> Iterator[ExportRow]:
        """Readings of a site in time order with their QC flag, read ``chunk_ms`` of time at a time.

        Inside a chunk, rows come ``page_rows`` at a time (LIMIT/OFFSET), so neither a long range nor a busy
        chunk is ever held in memory whole.
        """
        if chunk_ms < 1 or page_rows < 1:
            raise ValueError(f"chunk_ms and page_rows must be positive, got {chunk_ms} and {page_rows}")
        base = eq("site", site_id) + (f" AND {eq('param', param)}" if param else "")
        columns = fields("value", "unit", "flag", "city", "device", "sensor", "param")
        chunk_start = self._next_time(base, start_ms, end_ms)
        while chunk_start is not None and chunk_start < end_ms:
            chunk_end = min(chunk_start + chunk_ms, end_ms)
            offset = 0
            stored = False
            while True:
                page = self._query(
                    f"SELECT {columns} FROM {quote_ident(Measurement.READING)} "  # noqa: S608
                    f"WHERE {base} AND {time_range(chunk_start, chunk_end)} "
                    f"ORDER BY time ASC LIMIT {int(page_rows)} OFFSET {int(offset)}"
                )
                if not page:
                    break
                stored = True
                flags = self._qc_flags(base, int(page[0]["time"]), int(page[-1]["time"]) + 1)
                for r in page:
                    if r.get("value") is None:
                        continue
                    t_ms = int(r["time"])
                    mark = flags.get((r["device"], r["sensor"], t_ms), NO_QC)
                    yield ExportRow(
                        t_ms=t_ms,
                        city=r["city"],
                        site=site_id,
                        device=r["device"],
                        sensor=r["sensor"],
                        param=r["param"],
                        value=float(r["value"]),
                        unit=r["unit"],
                        edge_flag=_int_or_none(r.get("flag")),
                        qc_flag=int(QartodFlag.UNKNOWN) if mark.flag is None else mark.flag,
                        qc_late=mark.late,
                    )
                if len(page) < page_rows:
                    break
                offset += page_rows
            # After an empty chunk, jump to the next stored reading: the number of queries follows the data, not
            # the length of the range (years 2000 to 2100 over one week of data cost about a week of chunks).
            # Dense data never pays for the jump.
            chunk_start = chunk_end if stored else self._next_time(base, chunk_end, end_ms)

    def _next_time(self, base: str, start_ms: int, end_ms: int) -> int | None:
        """Time of the first reading in [start, end), or None when there is none."""
        if start_ms >= end_ms:
            return None
        rows = self._query(
            f"SELECT first({quote_ident('value')}) FROM {quote_ident(Measurement.READING)} "  # noqa: S608
            f"WHERE {base} AND {time_range(start_ms, end_ms)}"
        )
        return int(rows[0]["time"]) if rows else None

    def _qc_flags(self, base: str, start_ms: int, end_ms: int) -> dict[Key, QcMark]:
        rows = self._query(
            f"SELECT {fields('flag', 'late', 'device', 'sensor')} FROM {quote_ident(Measurement.QC)} "  # noqa: S608
            f"WHERE {base} AND {time_range(start_ms, end_ms)}"
        )
        return {(r["device"], r["sensor"], int(r["time"])): _qc_mark(r) for r in rows}
