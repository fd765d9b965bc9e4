"""The application factory: ``create_app(settings)`` builds the FastAPI app; nothing happens at import.

The InfluxDB client comes from ``influx_factory`` (default: :class:`pilotwatch.influx.InfluxV1` from the
settings) and is made when the app starts serving and closed when it stops, so building an app never touches
the network.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.keys import KeyStore
from api.routes import devices, export, health, series, sites
from api.settings import ApiSettings
from api.store import ReadingStore
from pilotwatch import __version__
from pilotwatch.influx import InfluxV1
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
        # No redirect from /sites/ to /sites: Starlette builds that Location from the Host header, so a forged
        # Host would make the API send clients elsewhere. A path with a trailing slash is simply unknown (404).
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.manifest = loaded
    app.state.keys = KeyStore(settings.keys_file)

    errors.install(app)
    app.include_router(health.router)
    for module in (sites, series, devices, export):
        # Every keyed route can answer 401 and 503 (keys file unreadable); each route adds its own codes.
        app.include_router(module.router, responses=errors.error_responses(*errors.KEYED))
    return app
