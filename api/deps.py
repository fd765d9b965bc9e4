"""Dependencies of the routes: settings, manifest, store, the caller's key, and the permission checks.

Permission checks live here, not in the routes: a route that takes :data:`ScopedSite` or :data:`ScopedDevice`
cannot run for a site outside the caller's scope, and one that takes :data:`EvaluatorKey` cannot run for an
operator. Unknown ids get 404, known ones outside the scope 403, each with a detail that says which.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, Security, status
from fastapi.security import APIKeyHeader

from alerts.store import AlertStore
from api.keys import ALL_CITIES, ApiKeyRecord, KeyStore
from api.settings import ApiSettings
from api.store import ReadingStore
from pilotwatch.manifest import AlertKind, City, Device, Manifest, Role, Site

API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="key from `pilotwatch api keys add`")


def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def get_manifest(request: Request) -> Manifest:
    manifest: Manifest = request.app.state.manifest
    return manifest


def get_store(request: Request) -> ReadingStore:
    store: ReadingStore = request.app.state.store
    return store


def get_keys(request: Request) -> KeyStore:
    keys: KeyStore = request.app.state.keys
    return keys


def get_alert_store(request: Request) -> AlertStore:
    """The alert engine's SQLite store, opened on first use (so an API without alerts never creates one)."""
    state = request.app.state
    with state.alerts_lock:
        if state.alerts is None:
            state.alerts = AlertStore(state.alerts_path)
        alerts: AlertStore = state.alerts
    return alerts


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
AlertStoreDep = Annotated[AlertStore, Depends(get_alert_store)]
ManifestDep = Annotated[Manifest, Depends(get_manifest)]
StoreDep = Annotated[ReadingStore, Depends(get_store)]
KeyStoreDep = Annotated[KeyStore, Depends(get_keys)]


def get_current_key(keys: KeyStoreDep, key: Annotated[str | None, Security(_api_key)]) -> ApiKeyRecord:
    if not key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail=f"missing API key: send it in the {API_KEY_HEADER} header"
        )
    record = keys.authenticate(key)
    if record is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="invalid API key")
    return record


CurrentKey = Annotated[ApiKeyRecord, Depends(get_current_key)]


def require_roles(*roles: Role) -> Callable[[ApiKeyRecord], ApiKeyRecord]:
    allowed = " or ".join(r.value for r in roles)

    def check(key: CurrentKey) -> ApiKeyRecord:
        if key.role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"this needs role {allowed}; key {key.name!r} has role {key.role.value}",
            )
        return key

    return check


EvaluatorKey = Annotated[ApiKeyRecord, Depends(require_roles(Role.EVALUATOR, Role.ADMIN))]


@dataclass(frozen=True, slots=True)
class SiteInScope:
    city: City
    site: Site


@dataclass(frozen=True, slots=True)
class DeviceInScope:
    city: City
    site: Site
    device: Device


def site_in_scope(manifest: Manifest, key: ApiKeyRecord, site_id: str) -> SiteInScope:
    try:
        city, site = manifest.site(site_id)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown site {site_id!r}") from None
    if not key.can_read_site(city.id, site.id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"key {key.name!r} has no access to site {site_id!r}")
    return SiteInScope(city, site)


def device_in_scope(manifest: Manifest, key: ApiKeyRecord, device_id: str) -> DeviceInScope:
    placement = manifest.device_index().get(device_id)
    if placement is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown device {device_id!r}")
    if not key.can_read_site(placement.city.id, placement.site.id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"key {key.name!r} has no access to device {device_id!r}")
    return DeviceInScope(placement.city, placement.site, placement.device)


def scoped_site_path(manifest: ManifestDep, key: CurrentKey, site_id: Annotated[str, Path()]) -> SiteInScope:
    return site_in_scope(manifest, key, site_id)


def scoped_device_path(manifest: ManifestDep, key: CurrentKey, device_id: Annotated[str, Path()]) -> DeviceInScope:
    return device_in_scope(manifest, key, device_id)


def scoped_device_query(
    manifest: ManifestDep, key: CurrentKey, device: Annotated[str, Query(description="device id")]
) -> DeviceInScope:
    return device_in_scope(manifest, key, device)


def export_site_query(
    manifest: ManifestDep, key: EvaluatorKey, site: Annotated[str, Query(description="site id")]
) -> SiteInScope:
    return site_in_scope(manifest, key, site)


ScopedSite = Annotated[SiteInScope, Depends(scoped_site_path)]
ScopedDevice = Annotated[DeviceInScope, Depends(scoped_device_path)]
ScopedDeviceQuery = Annotated[DeviceInScope, Depends(scoped_device_query)]
ExportSite = Annotated[SiteInScope, Depends(export_site_query)]


def parse_time(name: str, value: str) -> dt.datetime:
    """An ISO 8601 time with a UTC offset (``Z`` or ``+07:00``); naive times are refused, not guessed."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"query parameter {name!r}: {value!r} is not an ISO 8601 time, e.g. 2026-03-01T00:00:00Z",
        ) from None
    if parsed.tzinfo is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"query parameter {name!r}: {value!r} has no UTC offset; add Z or an offset such as +07:00",
        )
    return parsed.astimezone(dt.UTC)


def check_range(start: dt.datetime, end: dt.datetime) -> None:
    if end <= start:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"query parameter 'end' ({end.isoformat()}) must be after 'start' ({start.isoformat()})",
        )


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_ms(when: dt.datetime) -> int:
    return (when - EPOCH) // dt.timedelta(milliseconds=1)


def from_ms(t_ms: int) -> dt.datetime:
    return EPOCH + dt.timedelta(milliseconds=t_ms)


# ------------------------------------------------------------------------------------------------ alerts
@dataclass(frozen=True, slots=True)
class AlertScope:
    """Which alerts a key sees: the kinds the manifest's alert routes give its role, per city, within the
    cities and sites of its scope (an admin sees all). ``can_act``: evaluators read only."""

    key: ApiKeyRecord
    kinds: dict[AlertKind, frozenset[str] | None]  # kind -> the cities it is routed in to this role (None: all)

    @property
    def can_act(self) -> bool:
        return self.key.role is not Role.EVALUATOR

    def sees(self, kind: str, city: str, site: str) -> bool:
        if self.key.role is Role.ADMIN:
            return True
        try:
            cities = self.kinds.get(AlertKind(kind), frozenset())
        except ValueError:
            return False
        if cities is not None and city not in cities:
            return False
        return self.key.can_read_site(city, site)

    def sql(self) -> tuple[str, tuple[str, ...]]:
        """The same rule as :meth:`sees`, as a WHERE clause over the ``alerts`` table (fixed column names)."""
        if self.key.role is Role.ADMIN:
            return "1 = 1", ()
        parts: list[str] = []
        params: list[str] = []
        unrestricted = ALL_CITIES in self.key.cities
        for kind, cities in sorted(self.kinds.items()):
            clause = ["kind = ?"]
            params.append(kind.value)
            if cities is not None:
                clause.append(f"city IN ({', '.join('?' * len(cities))})")
                params += sorted(cities)
            if not unrestricted:
                key_cities = ", ".join("?" * len(self.key.cities))
                key_sites = ", ".join("?" * len(self.key.sites))
                clause.append(f"(city IN ({key_cities}) OR site IN ({key_sites}))")
                params += [*self.key.cities, *self.key.sites]
            parts.append("(" + " AND ".join(clause) + ")")
        return ("(" + " OR ".join(parts) + ")") if parts else "1 = 0", tuple(params)


def alert_scope(manifest: ManifestDep, key: CurrentKey) -> AlertScope:
    kinds: dict[AlertKind, set[str] | None] = {}
    for route in manifest.alerts:
        if key.role not in route.roles:
            continue
        if route.city == ALL_CITIES:
            kinds[route.alert] = None
        elif kinds.get(route.alert, set()) is not None:
            kinds.setdefault(route.alert, set()).add(route.city)  # type: ignore[union-attr]
    return AlertScope(key, {k: (None if v is None else frozenset(v)) for k, v in kinds.items()})


AlertScopeDep = Annotated[AlertScope, Depends(alert_scope)]


def scoped_alert(alerts: AlertStoreDep, scope: AlertScopeDep, alert_id: Annotated[str, Path()]) -> dict[str, object]:
    found = alerts.get(alert_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown alert {alert_id!r}")
    if not scope.sees(str(found["kind"]), str(found["city"]), str(found["site"])):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"key {scope.key.name!r} has no access to alert {alert_id!r}"
        )
    return found


def acting_scope(scope: AlertScopeDep) -> AlertScope:
    if not scope.can_act:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"this needs role operator, city_staff or admin; key {scope.key.name!r} has role "
            f"{scope.key.role.value} (read only)",
        )
    return scope


ScopedAlert = Annotated[dict[str, object], Depends(scoped_alert)]
ActingScope = Annotated[AlertScope, Depends(acting_scope)]
