"""``GET /health`` (no key needed) and ``GET /me`` (what the caller's key may do).

``/health`` is ``async`` and pings InfluxDB on a thread of its own with a deadline, so it answers within
``health_timeout_s`` even while every worker thread is busy with slow queries or exports: a supervisor that
polls it sees "degraded", not a hang. It says ``degraded`` (503) when InfluxDB does not answer or when the keys
file cannot be read (then no key can be checked, and every keyed route answers 503 too).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status

from api.deps import CurrentKey, KeyStoreDep, SettingsDep, StoreDep
from api.errors import KEYED, error_responses
from api.models import ApiKeyScopePublic, HealthPublic
from pilotwatch import __version__

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=HealthPublic,
    responses={503: {"model": HealthPublic, "description": "InfluxDB unreachable or the keys file unreadable"}},
)
async def health(store: StoreDep, keys: KeyStoreDep, settings: SettingsDep, response: Response) -> HealthPublic:
    try:
        influx_ok = await asyncio.wait_for(asyncio.to_thread(store.influx.ping), settings.health_timeout_s)
    except TimeoutError:
        influx_ok = False
    keys_problem = await asyncio.to_thread(keys.check)
    ok = influx_ok and keys_problem is None
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthPublic(
        status="ok" if ok else "degraded",
        influxdb="ok" if influx_ok else "unreachable",
        keys="ok" if keys_problem is None else "unreadable",
        version=__version__,
    )


@router.get("/me", response_model=ApiKeyScopePublic, responses=error_responses(*KEYED))
def me(key: CurrentKey) -> ApiKeyScopePublic:
    return ApiKeyScopePublic(name=key.name, role=key.role, cities=list(key.cities), sites=list(key.sites))
