"""``GET /series``: the time series of one sensor of one device, with QC flags."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api.deps import ScopedDeviceQuery, SettingsDep, StoreDep, check_range, from_ms, minus, parse_time, stored_window
from api.errors import READS, error_responses
from api.models import SeriesPointPublic, SeriesPublic

router = APIRouter(tags=["series"])

DEFAULT_WINDOW = dt.timedelta(hours=24)
DEFAULT_LIMIT = 1000


@router.get("/series", response_model=SeriesPublic, responses=error_responses(*READS))
def series(
    *,
    settings: SettingsDep,
    store: StoreDep,
    scoped: ScopedDeviceQuery,
    sensor: Annotated[str, Query(description="sensor id on the device, e.g. ph")],
    start: Annotated[str | None, Query(description="ISO 8601 with offset; default: end minus 24 h")] = None,
    end: Annotated[str | None, Query(description="ISO 8601 with offset, exclusive; default: now")] = None,
    limit: Annotated[int, Query(description="most points returned")] = DEFAULT_LIMIT,
) -> SeriesPublic:
    device = scoped.device
    found = device.sensor(sensor)
    if found is None:
        known = ", ".join(s.id for s in device.sensors)
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"unknown sensor {sensor!r} on device {device.id!r}; known: {known}"
        )
    if not 1 <= limit <= settings.series_max_limit:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"query parameter 'limit': must be between 1 and {settings.series_max_limit}, got {limit}",
        )
    end_t = parse_time("end", end) if end is not None else dt.datetime.now(dt.UTC)
    start_t = parse_time("start", start) if start is not None else minus(end_t, DEFAULT_WINDOW, "end")
    check_range(start_t, end_t)
    window = stored_window(start_t, end_t)
    rows, truncated = store.series(device.id, sensor, *window, limit) if window is not None else ([], False)
    data = [
        SeriesPointPublic(
            time=from_ms(r.t_ms), value=r.value, qc_flag=r.qc_flag, edge_flag=r.edge_flag, qc_late=r.qc_late
        )
        for r in rows
    ]
    return SeriesPublic(
        device=device.id,
        sensor=sensor,
        param=found.param,
        unit=found.unit,
        start=start_t,
        end=end_t,
        limit=limit,
        truncated=truncated,
        count=len(data),
        data=data,
    )
