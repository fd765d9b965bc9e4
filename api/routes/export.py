"""``GET /export.csv``: evaluators' export of one site, streamed.

Each row carries the sample time (UTC), the site's role, the period of the sample (``baseline``,
``intervention`` or ``outside``, judged on the local date in the city's time zone, as the manifest's dates are
local), the QC flag (2 = not evaluated where analytics has not flagged it) and the edge's own flag. Comment
lines (``#``) before the header say where the numbers come from; a closing comment gives the row count, or
says that the export stopped early and why, so a truncated file is never mistaken for a complete one.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import zoneinfo
from collections.abc import Iterator
from typing import Annotated

import httpx
from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import StreamingResponse

from api.deps import ExportSite, ManifestDep, SettingsDep, StoreDep, check_range, from_ms, parse_time, to_ms
from api.store import ExportRow
from pilotwatch import __version__
from pilotwatch.influx import InfluxQueryError
from pilotwatch.manifest import Manifest, Parameter, Periods

router = APIRouter(tags=["export"])

COLUMNS = (
    "time",
    "city",
    "site",
    "site_role",
    "device",
    "sensor",
    "param",
    "value",
    "unit",
    "qc_flag",
    "edge_flag",
    "period",
)
ROWS_PER_WRITE = 500


def period_of(periods: Periods, local_day: dt.date) -> str:
    if periods.baseline.contains(local_day):
        return "baseline"
    if periods.intervention.contains(local_day):
        return "intervention"
    return "outside"


def manifest_digest(manifest: Manifest) -> str:
    return hashlib.sha256(manifest.model_dump_json().encode()).hexdigest()


def _local_midnight_utc(day: dt.date, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.UTC)


@router.get("/export.csv", response_class=StreamingResponse)
def export_csv(
    *,
    settings: SettingsDep,
    manifest: ManifestDep,
    store: StoreDep,
    scoped: ExportSite,
    param: Annotated[str | None, Query(description="parameter, e.g. cod; default: every parameter")] = None,
    start: Annotated[str | None, Query(description="ISO 8601 with offset; default: baseline start")] = None,
    end: Annotated[str | None, Query(description="ISO 8601 with offset, exclusive; default: intervention end")] = None,
) -> StreamingResponse:
    city, site = scoped.city, scoped.site
    measured = sorted({s.param.value for d in site.devices for s in d.sensors})
    if param is not None:
        if param not in {p.value for p in Parameter}:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"query parameter 'param': {param!r} is not a parameter; expected one of "
                + ", ".join(p.value for p in Parameter),
            )
        if param not in measured:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"query parameter 'param': {param!r} is not measured at site {site.id!r}; measured: "
                + ", ".join(measured),
            )
    tz = zoneinfo.ZoneInfo(city.timezone)
    start_t = parse_time("start", start) if start else _local_midnight_utc(site.periods.baseline.start, tz)
    end_t = parse_time("end", end) if end else _local_midnight_utc(site.periods.intervention.end, tz)
    check_range(start_t, end_t)
    generated = dt.datetime.now(dt.UTC).replace(microsecond=0)
    rows = store.export_rows(
        site.id,
        param,
        to_ms(start_t),
        to_ms(end_t),
        chunk_ms=settings.export_chunk_s * 1000,
        page_rows=settings.export_page_rows,
    )
    header = [
        "# pilotwatch export (CSV; lines starting with # are provenance, not data)",
        f"# pilotwatch: {__version__}",
        f"# programme: {manifest.programme.name}",
        f"# manifest: version {manifest.version}, sha256 {manifest_digest(manifest)}",
        f"# generated: {generated.isoformat().replace('+00:00', 'Z')}",
        f"# query: site={site.id} param={param or '*'} start={_iso(start_t)} end={_iso(end_t)} (end exclusive)",
        f"# source: InfluxQL on measurements 'reading' and 'qc', read in chunks of {settings.export_chunk_s} s",
        f"# site: {site.id} ({site.name}), city {city.id}, kind {site.kind.value}, role {site.role.value}",
        f"# periods (local dates, {city.timezone}, end exclusive): baseline {site.periods.baseline.start} to "
        f"{site.periods.baseline.end}, intervention {site.periods.intervention.start} to "
        f"{site.periods.intervention.end}",
        "# qc_flag: QARTOD 1 good, 2 not evaluated, 3 suspect, 4 fail, 9 missing; edge_flag: flag sent by the device",
    ]
    filename = f"pilotwatch-{site.id}-{param or 'all'}-{start_t:%Y%m%dT%H%MZ}-{end_t:%Y%m%dT%H%MZ}.csv"
    return StreamingResponse(
        _stream(header, rows, site.role.value, site.periods, tz),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _iso(when: dt.datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stream(
    header: list[str], rows: Iterator[ExportRow], role: str, periods: Periods, tz: zoneinfo.ZoneInfo
) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    yield "\n".join(header) + "\n"
    writer.writerow(COLUMNS)
    count = 0
    try:
        for row in rows:
            when = from_ms(row.t_ms)
            writer.writerow(
                (
                    _iso(when),
                    row.city,
                    row.site,
                    role,
                    row.device,
                    row.sensor,
                    row.param,
                    repr(row.value),
                    row.unit,
                    row.qc_flag,
                    "" if row.edge_flag is None else row.edge_flag,
                    period_of(periods, when.astimezone(tz).date()),
                )
            )
            count += 1
            if count % ROWS_PER_WRITE == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    except (InfluxQueryError, httpx.HTTPError) as exc:
        # The status line went out with the first chunk; the only honest signal left is in the file itself.
        yield buffer.getvalue() + f"# export stopped early after {count} rows: {exc}\n"
        return
    yield buffer.getvalue() + f"# end of export: {count} rows\n"
