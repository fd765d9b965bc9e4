"""Sites the caller may read, and the latest reading of each sensor at a site."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api.deps import CurrentKey, ManifestDep, ScopedSite, StoreDep, from_ms
from api.errors import READS, error_responses
from api.models import (
    DevicePublic,
    LatestReadingPublic,
    LimitPublic,
    LocationPublic,
    PeriodsPublic,
    SensorPublic,
    SiteLatestPublic,
    SitePublic,
    SitesPublic,
)
from pilotwatch.manifest import City, Manifest, Site

router = APIRouter(prefix="/sites", tags=["sites"])


def site_public(manifest: Manifest, city: City, site: Site) -> SitePublic:
    limits = [
        LimitPublic(
            limit_set=name,
            standard=manifest.limits[name].standard,
            citation=manifest.limits[name].citation,
            param=param,
            min=limit.min,
            max=limit.max,
            statistic=limit.statistic,
            confirmed=limit.confirmed,
            note=limit.note,
        )
        for name in site.limits
        for param, limit in manifest.limits[name].parameters.items()
    ]
    devices = [
        DevicePublic(
            id=d.id,
            model=d.model,
            commissioned=d.commissioned,
            sensors=[
                SensorPublic(id=s.id, param=s.param, unit=s.unit, interval_s=s.interval_s, valid_range=s.valid_range)
                for s in d.sensors
            ],
        )
        for d in site.devices
    ]
    return SitePublic(
        id=site.id,
        name=site.name,
        city=city.id,
        city_name=city.name,
        timezone=city.timezone,
        kind=site.kind,
        role=site.role,
        location=LocationPublic(**site.location.model_dump()),
        periods=PeriodsPublic(baseline=site.periods.baseline, intervention=site.periods.intervention),
        limits=limits,
        devices=devices,
    )


@router.get("", response_model=SitesPublic, responses=error_responses(404, 422))
def list_sites(
    manifest: ManifestDep,
    key: CurrentKey,
    city: Annotated[str | None, Query(description="only sites of this city id")] = None,
) -> SitesPublic:
    if city is not None and city not in {c.id for c in manifest.cities}:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown city {city!r}")
    data = [
        site_public(manifest, c, s)
        for c, s in manifest.iter_sites()
        if key.can_read_site(c.id, s.id) and (city is None or c.id == city)
    ]
    return SitesPublic(data=data, count=len(data))


@router.get("/{site_id}", response_model=SitePublic, responses=error_responses(403, 404))
def get_site(manifest: ManifestDep, scoped: ScopedSite) -> SitePublic:
    return site_public(manifest, scoped.city, scoped.site)


@router.get("/{site_id}/latest", response_model=SiteLatestPublic, responses=error_responses(*READS))
def latest(store: StoreDep, scoped: ScopedSite) -> SiteLatestPublic:
    rows = store.latest_for_site(scoped.site.id)
    data = [
        LatestReadingPublic(
            device=r.device,
            sensor=r.sensor,
            param=r.param,
            value=r.value,
            unit=r.unit,
            time=from_ms(r.t_ms),
            qc_flag=r.qc_flag,
            edge_flag=r.edge_flag,
        )
        for r in rows
    ]
    return SiteLatestPublic(site=scoped.site.id, data=data, count=len(data))
