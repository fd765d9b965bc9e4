"""The API's error contract: every error is JSON ``{"detail": "<one readable sentence>"}``, declared in OpenAPI.

What a caller may see, and what stays in the server's log:

- 401 no or unknown key; 403 a key outside its role or scope; 404 an unknown id; 422 a bad parameter, naming it;
  429 too many exports at once (with ``Retry-After``).
- 502 InfluxDB refused or failed a query. The caller gets a fixed sentence; the statement and InfluxDB's
  message go to the log only, because they reveal the schema and echo request text.
- 503 a dependency is unusable: InfluxDB unreachable, or the keys file unreadable (then every route that needs
  a key answers 503, and ``/health`` says which). Again no address, path or exception text in the answer.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from api.keys import KeyStoreError
from pilotwatch.influx import InfluxQueryError

log = logging.getLogger("pilotwatch.api")

INFLUX_FAILED = "InfluxDB could not answer this query; the server log has the details"
INFLUX_UNREACHABLE = "InfluxDB is unreachable or too slow; try again later"
KEYS_UNUSABLE = "the API's keys file cannot be read; no key can be checked until an administrator fixes it"


class ErrorPublic(BaseModel):
    """Body of every error response."""

    model_config = ConfigDict(frozen=True)

    detail: str


_DESCRIPTIONS = {
    401: "missing or unknown API key",
    403: "the key's role or scope does not allow this",
    404: "unknown site, device, sensor, city or alert",
    409: "the alert is not in a state that allows this action",
    410: "the acknowledge link has expired or was already used",
    422: "a parameter is invalid; the detail names it",
    429: "too many exports at once; retry after the seconds in Retry-After",
    502: "InfluxDB failed the query",
    503: "InfluxDB unreachable, or the keys file unreadable",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error codes, all with the :class:`ErrorPublic` body. The JSON media type is
    named: on a route whose success is a page (text/html) the errors are still JSON."""
    return {
        code: {
            "model": ErrorPublic,
            "description": _DESCRIPTIONS[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}},
        }
        for code in codes
    }


KEYED = (401, 503)
"""Every route that takes a key can answer these."""
READS = (*KEYED, 403, 404, 422, 502)
"""A route that reads one site or device of the caller's scope from InfluxDB."""


def describe_validation(exc: RequestValidationError) -> str:
    """One clause per problem that names the parameter: ``query parameter 'limit': Input should be ...``."""
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ())]
        where = f"{loc[0]} parameter {loc[-1]!r}" if len(loc) >= 2 else (loc[0] if loc else "request")
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def _declare_true_422(app: FastAPI) -> None:
    """FastAPI documents its own 422 body (a list of errors) on every route with parameters; this API answers 422
    with :class:`ErrorPublic` (see :func:`install`), so the document says that instead."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        ref = {"$ref": "#/components/schemas/ErrorPublic"}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if "422" in responses:
                    responses["422"] = {
                        "description": _DESCRIPTIONS[422],
                        "content": {"application/json": {"schema": ref}},
                    }
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["ErrorPublic"] = ErrorPublic.model_json_schema()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    _declare_true_422(app)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": describe_validation(exc)}
        )

    @app.exception_handler(InfluxQueryError)
    async def influx_error(request: Request, exc: InfluxQueryError) -> JSONResponse:
        log.error("InfluxDB query failed for %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(status_code=status.HTTP_502_BAD_GATEWAY, content={"detail": INFLUX_FAILED})

    @app.exception_handler(httpx.HTTPError)
    async def influx_unreachable(request: Request, exc: httpx.HTTPError) -> JSONResponse:
        log.error("InfluxDB did not answer for %s %s: %r", request.method, request.url.path, exc)
        return JSONResponse(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, content={"detail": INFLUX_UNREACHABLE})

    @app.exception_handler(KeyStoreError)
    async def keys_unusable(request: Request, exc: KeyStoreError) -> JSONResponse:
        log.error("keys file unusable: %s", exc)
        return JSONResponse(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, content={"detail": KEYS_UNUSABLE})
