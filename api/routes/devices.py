"""``GET /devices/{device_id}/health``: the latest ``device_status`` point and the last reading stored.
``GET /devices/{device_id}/delivery``: the device's gap ledger, as ingest publishes it in InfluxDB (the newest
``delivery`` point of :mod:`pilotwatch.schema`; docs/wire-format.md, "Storage"). The API opens no file of ingest."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter

from api.deps import ScopedDevice, StoreDep, from_ms
from api.errors import READS, error_responses
from api.models import DeliveryPublic, DeviceHealthPublic
from pilotwatch.influx import quote_ident, quote_literal
from pilotwatch.schema import Measurement

router = APIRouter(prefix="/devices", tags=["devices"])


def _float(row: dict[str, Any] | None, name: str) -> float | None:
    value = None if row is None else row.get(name)
    return None if value is None else float(value)


def _int(row: dict[str, Any] | None, name: str) -> int | None:
    value = None if row is None else row.get(name)
    return None if value is None else int(value)


@router.get("/{device_id}/health", response_model=DeviceHealthPublic, responses=error_responses(*READS))
def device_health(store: StoreDep, scoped: ScopedDevice) -> DeviceHealthPublic:
    device_id = scoped.device.id
    status_row = store.device_status(device_id)
    last_reading_ms = store.last_reading_ms(device_id)
    status_ms = _int(status_row, "time")
    oldest_unsent_ms = _int(status_row, "oldest_unsent_ms")
    seen = [t for t in (status_ms, last_reading_ms) if t is not None]
    state = status_row.get("state") if status_row is not None else None
    return DeviceHealthPublic(
        device=device_id,
        city=scoped.city.id,
        site=scoped.site.id,
        state=str(state) if state is not None else "never_seen",
        status_time=from_ms(status_ms) if status_ms is not None else None,
        battery_pct=_float(status_row, "battery_pct"),
        signal_dbm=_float(status_row, "signal_dbm"),
        uptime_s=_float(status_row, "uptime_s"),
        buffer_depth=_int(status_row, "buffer_depth"),
        oldest_unsent=from_ms(oldest_unsent_ms) if oldest_unsent_ms is not None else None,
        disk_free_mb=_float(status_row, "disk_free_mb"),
        last_seq=_int(status_row, "last_seq"),
        last_reading_time=from_ms(last_reading_ms) if last_reading_ms is not None else None,
        last_seen=from_ms(max(seen)) if seen else None,
    )


def _latest_delivery(store: StoreDep, device_id: str) -> dict[str, Any] | None:
    q = (
        f"SELECT * FROM {quote_ident(Measurement.DELIVERY.value)} WHERE device = {quote_literal(device_id)}"  # noqa: S608
        " ORDER BY time DESC LIMIT 1"
    )
    rows = store.influx.query(q, epoch="ms")
    return rows[0] if rows else None


@router.get("/{device_id}/delivery", response_model=DeliveryPublic, responses=error_responses(*READS))
def device_delivery(store: StoreDep, scoped: ScopedDevice) -> DeliveryPublic:
    device_id = scoped.device.id
    row = _latest_delivery(store, device_id)
    placement = {"device": device_id, "city": scoped.city.id, "site": scoped.site.id}
    if row is None:
        return DeliveryPublic(
            **placement,
            seen=False,
            stored=0,
            stored_through=-1,
            missing=0,
            gaps=[],
            recovered=0,
            duplicates=0,
            dead_lettered=0,
            buffered_on_device=None,
            oldest_unsent=None,
            device_last_seq=None,
            last_seen=None,
            clock_offset_s=None,
        )
    through = _int(row, "stored_through")
    oldest_unsent_ms = _int(row, "oldest_unsent_ms")
    last_seen_ms = _int(row, "last_seen_ms")
    clock_offset_ms = _int(row, "clock_offset_ms")
    return DeliveryPublic(
        **placement,
        seen=True,
        stored=_int(row, "stored") or 0,
        stored_through=-1 if through is None else through,
        missing=_int(row, "missing") or 0,
        gaps=[(int(a), int(b)) for a, b in json.loads(str(row.get("gaps") or "[]"))],
        recovered=_int(row, "recovered") or 0,
        duplicates=_int(row, "duplicates") or 0,
        dead_lettered=_int(row, "dead_lettered") or 0,
        buffered_on_device=_int(row, "buffered_on_device"),
        oldest_unsent=from_ms(oldest_unsent_ms) if oldest_unsent_ms is not None else None,
        device_last_seq=_int(row, "device_last_seq"),
        last_seen=from_ms(last_seen_ms) if last_seen_ms is not None else None,
        clock_offset_s=clock_offset_ms / 1000 if clock_offset_ms is not None else None,
    )
