"""Evaluation for evaluators: a city's estimates as JSON, and its evidence pack as a streamed zip.

``GET /evaluation/{city_id}/estimates`` answers what ``summary.json`` of the pack holds (one record per site x
parameter x estimate: estimate, interval, method, n, coverage per period; compliance; coverage).
``GET /evaluation/{city_id}/pack.zip`` builds the pack (:func:`evaluation.report.write_pack`) in a temporary
folder and streams it as a zip in chunks; the folder is removed when the stream ends.

Both need the evaluator (or admin) role and a key that may read **every** site of the city, since an evaluation
compares the city's sites with each other (impact against control). Unknown city: 404; a site out of scope: 403
naming it. The numbers come from :func:`evaluation.evaluate.evaluate_city`, the evaluation service's public
function, reading InfluxDB through the API's own client, computed once per ``evaluation_cache_s``
(:mod:`api.evaluation_cache`); ``as_of`` in the estimates says when.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse

from api.deps import EvaluatorKey, ManifestDep, SettingsDep, StoreDep, site_in_scope
from api.evaluation_cache import EvaluationCache
from evaluation.bootstrap import BlockScheme
from evaluation.estimators import BootstrapConfig
from evaluation.evaluate import DEFAULT_MIN_COVERAGE, CityEvaluation, evaluate_city
from evaluation.report import write_pack, zip_stream
from evaluation.series import QCAcceptance
from evaluation.settings import influx_loader
from pilotwatch.manifest import City

router = APIRouter(prefix="/evaluation", tags=["evaluation"])


def evaluator_city(manifest: ManifestDep, key: EvaluatorKey, city_id: str) -> City:
    try:
        city = manifest.city(city_id)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown city {city_id!r}") from None
    for site in city.sites:
        site_in_scope(manifest, key, site.id)  # 403 naming the first site the key may not read
    return city


ScopedCity = Annotated[City, Depends(evaluator_city)]
Replicates = Annotated[int, Query(ge=99, le=10_000, description="bootstrap replicates (2000 by default)")]
QC = Annotated[QCAcceptance, Query(description="which QC verdicts count: good (default) or good_or_suspect")]
Scheme = Annotated[BlockScheme, Query(description="block bootstrap: stationary (default) or circular")]


def _evaluate(
    request: Request,
    *,
    manifest: ManifestDep,
    store: StoreDep,
    city: City,
    qc: QCAcceptance,
    replicates: int,
    scheme: BlockScheme,
) -> CityEvaluation:
    cache: EvaluationCache[CityEvaluation] = request.app.state.evaluations
    return cache.get(
        (city.id, qc, replicates, scheme),
        lambda: evaluate_city(
            manifest,
            city.id,
            influx_loader(store.influx),
            acceptance=qc,
            config=BootstrapConfig(replicates=replicates, scheme=scheme),
            min_coverage=DEFAULT_MIN_COVERAGE,
        ),
    )


@router.get("/{city_id}/estimates")
def estimates(
    request: Request,
    *,
    manifest: ManifestDep,
    store: StoreDep,
    city: ScopedCity,
    qc: QC = QCAcceptance.GOOD,
    replicates: Replicates = 2000,
    scheme: Scheme = BlockScheme.STATIONARY,
) -> dict[str, Any]:
    ev = _evaluate(request, manifest=manifest, store=store, city=city, qc=qc, replicates=replicates, scheme=scheme)
    return {
        "city": city.id,
        "as_of": dt.datetime.fromtimestamp(ev.as_of_ms / 1000, dt.UTC).isoformat(timespec="milliseconds"),
        "qc_flags_used": sorted(ev.acceptance.flags),
        "bootstrap": {"scheme": scheme.value, "replicates": replicates, "seed": ev.config.seed},
        "coverage_threshold": ev.min_coverage,
        "estimates": ev.records,
        "compliance": ev.compliance,
        "coverage": ev.coverage,
    }


@router.get("/{city_id}/pack.zip", response_class=StreamingResponse)
def pack(
    request: Request,
    *,
    manifest: ManifestDep,
    store: StoreDep,
    settings: SettingsDep,
    city: ScopedCity,
    qc: QC = QCAcceptance.GOOD,
    replicates: Replicates = 2000,
    scheme: Scheme = BlockScheme.STATIONARY,
) -> StreamingResponse:
    ev = _evaluate(request, manifest=manifest, store=store, city=city, qc=qc, replicates=replicates, scheme=scheme)
    folder = Path(tempfile.mkdtemp(prefix=f"pilotwatch-pack-{city.id}-"))
    try:
        write_pack(
            ev, manifest, folder / "pack", f"InfluxDB {settings.influx.url}, database {settings.influx.database}"
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise

    def chunks() -> Iterator[bytes]:
        try:
            yield from zip_stream(folder / "pack", f"pilotwatch-{city.id}")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return StreamingResponse(
        chunks(),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="pilotwatch-{city.id}-evidence.zip"'},
    )
