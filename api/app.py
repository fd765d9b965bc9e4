"""The application factory: ``create_app(settings)`` builds the FastAPI app; nothing happens at import.

The InfluxDB client comes from ``influx_factory`` (default: :class:`pilotwatch.influx.InfluxV1` from the
settings) and is made when the app starts serving and closed when it stops, so building an app never touches
the network.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.keys import KeyStore
from api.routes import devices, evaluation, export, health, series, sites
from api.settings import ApiSettings
from api.store import ReadingStore
from pilotwatch import __version__
from pilotwatch.influx import InfluxQueryError, InfluxV1
from pilotwatch.manifest import Manifest, load_manifest

InfluxFactory = Callable[[ApiSettings], InfluxV1]


def influx_from_settings(settings: ApiSettings) -> InfluxV1:
    return InfluxV1(
        settings.influx_url,
        settings.influx_database,
        token=settings.influx_token.get_secret_value() if settings.influx_token else None,
        username=settings.influx_username,
        password=settings.influx_password.get_secret_value() if settings.influx_password else None,
        timeout_s=settings.influx_timeout_s,
    )


def _describe_validation(exc: RequestValidationError) -> str:
    """One line per problem that names the parameter: ``query parameter 'limit': Input should be ...``."""
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ())]
        where = f"{loc[0]} parameter {loc[-1]!r}" if len(loc) >= 2 else (loc[0] if loc else "request")
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(
    settings: ApiSettings,
    *,
    manifest: Manifest | None = None,
    influx_factory: InfluxFactory = influx_from_settings,
) -> FastAPI:
    loaded = manifest if manifest is not None else load_manifest(settings.manifest)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        influx = influx_factory(settings)
        app.state.store = ReadingStore(influx)
        try:
            yield
        finally:
            influx.close()

    app = FastAPI(
        title="pilotwatch API",
        version=__version__,
        description="Live site data, device health and evaluation exports of the city pilots. "
        "Send the key from `pilotwatch api keys add` in the X-API-Key header.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.manifest = loaded
    app.state.keys = KeyStore(settings.keys_file)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": _describe_validation(exc)}
        )

    @app.exception_handler(InfluxQueryError)
    async def influx_error(request: Request, exc: InfluxQueryError) -> JSONResponse:
        return JSONResponse(status_code=status.HTTP_502_BAD_GATEWAY, content={"detail": f"InfluxDB: {exc}"})

    @app.exception_handler(httpx.HTTPError)
    async def influx_unreachable(request: Request, exc: httpx.HTTPError) -> JSONResponse:
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            content={"detail": f"InfluxDB at {settings.influx_url} did not answer: {exc}"},
        )

    for module in (health, sites, series, devices, export, evaluation):
        app.include_router(module.router)
    return app
