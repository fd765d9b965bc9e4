"""The application factory: ``create_app(settings)`` builds the FastAPI app; nothing happens at import.

The InfluxDB client comes from ``influx_factory`` (default: :class:`pilotwatch.influx.InfluxV1` from the
settings) and is made when the app starts serving and closed when it stops, so building an app never touches
the network.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from api import errors
from api.evaluation_cache import EvaluationCache
from api.keys import KeyStore
from api.routes import ack_link, alerts, devices, evaluation, export, health, inbox, series, sites
from api.settings import ApiSettings
from api.store import ReadingStore
from pilotwatch import __version__
from pilotwatch.alerting import ALERT_STORE_FILE
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest, load_manifest

InfluxFactory = Callable[[ApiSettings], InfluxV1]


def influx_from_settings(settings: ApiSettings) -> InfluxV1:
    return settings.influx.client()


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
            if app.state.alerts is not None:
                app.state.alerts.close()
                app.state.alerts = None
            influx.close()

    # FastAPIOffline serves /docs with Swagger UI from the package itself: FastAPI's own page loads it from a CDN,
    # and a city server or an operator's laptop on a site network often has no internet. No /redoc: its bundle
    # still fetches a logo from its CDN.
    app = FastAPIOffline(
        redoc_url=None,
        title="pilotwatch API",
        version=__version__,
        description="Live site data, device health, alerts (with an inbox page at /inbox) and evaluations of the "
        "city pilots. Send the key from `pilotwatch api keys add` in the X-API-Key header.",
        lifespan=lifespan,
        # No redirect from /sites/ to /sites: Starlette builds that Location from the Host header, so a forged
        # Host would make the API send clients elsewhere. A path with a trailing slash is simply unknown (404).
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.manifest = loaded
    app.state.keys = KeyStore(settings.keys_file)
    app.state.alerts = None  # the alert engine's store, opened by the first request that needs it
    app.state.alerts_lock = threading.Lock()
    app.state.alerts_path = settings.alerts_state_dir / ALERT_STORE_FILE
    app.state.evaluations = EvaluationCache[object](settings.evaluation_cache_s)

    errors.install(app)
    app.include_router(health.router)
    for module in (sites, series, devices, export):
        # Every keyed route can answer 401 and 503 (keys file unreadable); each route adds its own codes.
        app.include_router(module.router, responses=errors.error_responses(*errors.KEYED))
    app.include_router(evaluation.router, responses=errors.error_responses(*errors.READS))
    # The alert routes: a role or city outside the key's scope (403), an unknown alert, silence or city (404), an
    # action the alert's state refuses (409), a malformed body or filter (422).
    app.include_router(alerts.router, responses=errors.error_responses(*errors.KEYED, 403, 404, 409, 422))
    app.include_router(inbox.router, responses=errors.error_responses(*errors.KEYED, 403, 404, 422))
    # Acknowledge links need no key: a signed token is their credential (docs/alerts.md).
    app.include_router(ack_link.router, responses=errors.error_responses(403, 404, 410, 503))
    return app
