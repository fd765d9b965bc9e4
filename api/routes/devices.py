"""``GET /devices/{device_id}/health``: the latest ``device_status`` point and the last reading stored.
``GET /devices/{device_id}/delivery``: the device's gap ledger, read from ingest's state folder."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status

from api.deps import ScopedDevice, SettingsDep, StoreDep, from_ms
from api.errors import READS, error_responses, log
from api.models import DeliveryPublic, DeviceHealthPublic
from ingest.ledger import read_ledger

router = APIRouter(prefix="/devices", tags=["devices"])
LEDGER_UNREADABLE = "ingest's delivery ledger cannot be read; the server log names the file"


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


@router.get("/{device_id}/delivery", response_model=DeliveryPublic, responses=error_responses(403, 404))
def device_delivery(settings: SettingsDep, scoped: ScopedDevice) -> DeliveryPublic:
    device_id = scoped.device.id
    try:
        ledgers = read_ledger(settings.ingest_state_dir)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # A damaged or foreign file in ingest's folder: say so in one sentence, keep the path for the log.
        log.error("cannot read ingest's ledger in %s: %s", settings.ingest_state_dir, exc)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=LEDGER_UNREADABLE) from None
    ledger = next((entry for entry in ledgers if entry.device == device_id), None)
    placement = {"device": device_id, "city": scoped.city.id, "site": scoped.site.id}
    if ledger is None:
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
        )
    return DeliveryPublic(
        **placement,
        seen=True,
        stored=ledger.stored,
        stored_through=ledger.stored_through,
        missing=ledger.missing,
        gaps=list(ledger.gaps),
        recovered=ledger.recovered,
        duplicates=ledger.duplicates,
        dead_lettered=ledger.dead_lettered,
        buffered_on_device=ledger.buffered_on_device,
        oldest_unsent=from_ms(ledger.oldest_unsent_ms) if ledger.oldest_unsent_ms is not None else None,
        device_last_seq=ledger.device_last_seq,
        last_seen=from_ms(ledger.last_seen_ms) if ledger.last_seen_ms is not None else None,
    )
