"""``GET /health`` (no key needed) and ``GET /me`` (what the caller's key may do)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.deps import CurrentKey, StoreDep
from api.models import ApiKeyScopePublic, HealthPublic
from pilotwatch import __version__

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic)
def health(store: StoreDep, response: Response) -> HealthPublic:
    if store.influx.ping():
        return HealthPublic(status="ok", influxdb="ok", version=__version__)
    response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthPublic(status="degraded", influxdb="unreachable", version=__version__)


@router.get("/me", response_model=ApiKeyScopePublic)
def me(key: CurrentKey) -> ApiKeyScopePublic:
    return ApiKeyScopePublic(name=key.name, role=key.role, cities=list(key.cities), sites=list(key.sites))
