"""The API's error paths and effort bounds, each as a careless or hostile caller would meet them (issue findings 6
and 7), against a real InfluxDB and, where the network matters (disconnects, concurrency), a real uvicorn."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.app import create_app
from api.errors import INFLUX_FAILED, INFLUX_UNREACHABLE, KEYS_UNUSABLE
from api.keys import ApiKeyCreate, KeyStore, KeyStoreError
from api.settings import ApiSettings
from api.store import ReadingStore
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest, Role
from pilotwatch.schema import StoredReading
from pilotwatch.settings import free_port
from tests.reliability.conftest import KeyKind, t0_ms

SITE, DEVICE = "bkk-pratunam-pier", "bkk-pratunam-wq1"
EXTREME_TIMES = (
    "0001-01-01T00:00:00+14:00",  # valid ISO, but its UTC instant is before year 1
    "0001-01-01T00:00:00-14:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999+14:00",
    "9999-12-31T23:59:59.999999-14:00",  # after year 9999 in UTC
    "1677-09-21T00:12:43Z",  # InfluxDB's first nanosecond
    "2262-04-11T23:47:17Z",  # and its last
)


def headers(key: str | None) -> dict[str, str]:
    return {"X-API-Key": key} if key else {}


def assert_json_error(response: Any, status: int) -> str:
    """The body of an error answer: JSON with one readable detail (TestClient and httpx responses alike)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail"}
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return str(body["detail"])


# -- 7: extreme datetimes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("when", EXTREME_TIMES)
def test_extreme_datetimes_never_make_a_500(api: TestClient, admin_key: str, when: str) -> None:
    for path, base in (
        ("/series", {"device": DEVICE, "sensor": "ph"}),
        ("/export.csv", {"site": SITE}),
    ):
        for params in ({"start": when}, {"end": when}, {"start": when, "end": "9999-12-31T23:59:59Z"}):
            response = api.get(path, params={**base, **params}, headers=headers(admin_key))
            assert response.status_code in {200, 422}, f"{path} {params}: {response.status_code} {response.text}"
            if response.status_code == 422:
                assert_json_error(response, 422)


def test_the_widest_range_returns_exactly_the_stored_readings(api: TestClient, admin_key: str) -> None:
    wide = {"start": "0001-01-01T00:00:00-14:00", "end": "9999-12-31T23:59:59Z"}
    series = api.get("/series", params={"device": DEVICE, "sensor": "ph", **wide}, headers=headers(admin_key))
    assert series.status_code == 200, series.text
    assert series.json()["count"] == 6
    export = api.get("/export.csv", params={"site": SITE, "param": "ph", **wide}, headers=headers(admin_key))
    assert export.status_code == 200
    assert export.text.rstrip().endswith("# end of export: 6 rows")


# -- 6: effort bounded by the data ----------------------------------------------------------------------------


def test_export_effort_follows_the_data_not_the_range(api: TestClient, admin_key: str) -> None:
    """Years 1 to 9999 in one-day chunks would be 3.6 million chunks; six readings over one hour take a
    handful of queries."""
    store: ReadingStore = api.app.state.store  # type: ignore[attr-defined]
    before = store.queries
    started = time.monotonic()
    response = api.get(
        "/export.csv",
        params={"site": SITE, "param": "ph", "start": "0001-01-01T00:00:00Z", "end": "9999-12-31T00:00:00Z"},
        headers=headers(admin_key),
    )
    assert response.text.rstrip().endswith("# end of export: 6 rows")
    assert store.queries - before <= 5
    assert time.monotonic() - started < 5


def test_sparse_data_is_jumped_over(
    influx: InfluxV1, api_settings: ApiSettings, manifest: Manifest, admin_key: str
) -> None:
    """Four readings ten years apart, one-hour chunks: 87,600 chunks of time, a dozen queries."""
    year_ms = 365 * 86_400_000
    lines = [
        StoredReading("bangkok", SITE, DEVICE, "ph", "ph", 7.0, "pH", t0_ms() - k * 10 * year_ms // 4, seq=k).to_line()
        for k in range(4)
    ]
    assert influx.write_lines(lines).status_code == 204
    settings = api_settings.model_copy(update={"export_chunk_s": 3600})
    with TestClient(create_app(settings, manifest=manifest)) as client:
        response = client.get(
            "/export.csv",
            params={"site": SITE, "start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"},
            headers=headers(admin_key),
        )
        store: ReadingStore = client.app.state.store  # type: ignore[attr-defined]
        assert response.text.rstrip().endswith("# end of export: 4 rows")
        assert store.queries <= 4 * 4 + 1


class Server:
    """The app under a real uvicorn on a free loopback port, in a thread of this process (so the test can read
    the store's query counter)."""

    def __init__(self, settings: ApiSettings, manifest: Manifest) -> None:
        self.app = create_app(settings, manifest=manifest)
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def store(self) -> ReadingStore:
        store: ReadingStore = self.app.state.store
        return store

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive(), "uvicorn did not shut down within 15 s"


@pytest.fixture
def dense_server(influx: InfluxV1, api_settings: ApiSettings, manifest: Manifest) -> Iterator[Server]:
    """2,000 readings a minute apart, exported in one-minute chunks of one row: thousands of queries in all."""
    lines = [
        StoredReading("bangkok", SITE, DEVICE, "ph", "ph", 7.0 + i / 1000, "pH", t0_ms() + i * 60_000, seq=i).to_line()
        for i in range(2000)
    ]
    assert influx.write_lines(lines).status_code == 204
    settings = api_settings.model_copy(update={"export_chunk_s": 60, "export_page_rows": 1, "export_max_concurrent": 2})
    server = Server(settings, manifest)
    yield server
    server.stop()


def test_an_abandoned_export_stops_querying(dense_server: Server, admin_key: str) -> None:
    params = {"site": SITE, "param": "ph", "start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"}
    with (
        httpx.Client(base_url=dense_server.url, timeout=30) as client,
        client.stream("GET", "/export.csv", params=params, headers=headers(admin_key)) as response,
    ):
        assert response.status_code == 200
        first = next(response.iter_bytes())
        assert first.startswith(b"# pilotwatch export")
    # The connection is closed; at most the piece in progress finishes.
    time.sleep(1.0)
    settled = dense_server.store.queries
    time.sleep(1.5)
    assert dense_server.store.queries == settled, "the export kept querying InfluxDB after the client left"
    assert settled < 1000, f"{settled} queries: the export ran far past the client"


def test_exports_are_capped_and_health_answers_while_they_run(dense_server: Server, admin_key: str) -> None:
    params = {"site": SITE, "param": "ph", "start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"}
    clients = [httpx.Client(base_url=dense_server.url, timeout=30) for _ in range(3)]
    streams: list[Any] = []
    try:
        for client in clients[:2]:
            stream = client.stream("GET", "/export.csv", params=params, headers=headers(admin_key))
            response = stream.__enter__()
            streams.append(stream)
            assert response.status_code == 200
            next(response.iter_bytes())
        third = clients[2].get("/export.csv", params=params, headers=headers(admin_key))
        detail = assert_json_error(third, 429)
        assert "retry" in detail
        assert third.headers["retry-after"] == "30"
        started = time.monotonic()
        health = clients[2].get("/health")
        assert health.status_code == 200
        assert time.monotonic() - started < 2
    finally:
        for stream in streams:
            stream.__exit__(None, None, None)
        for client in clients:
            client.close()
    # The slots come back when the clients leave: a new export is served.
    time.sleep(1.0)
    with httpx.Client(base_url=dense_server.url, timeout=30) as client:
        short = {**params, "start": "2026-08-31T16:00:00Z", "end": "2026-08-31T16:05:00Z"}
        again = client.get("/export.csv", params=short, headers=headers(admin_key))
        assert again.status_code == 200
        assert again.text.rstrip().endswith("# end of export: 5 rows")


def test_forty_abandoned_exports_leave_the_server_healthy(dense_server: Server, admin_key: str) -> None:
    """The reported attack: forty exports over the widest range, each abandoned after its first bytes. Two are
    served (the fixture's cap), the rest refused at once; afterwards no export is still querying, ``/health``
    answers at once, and the server shuts down in time (the fixture's teardown asserts it)."""
    params = {"site": SITE, "start": "0001-01-01T00:00:00Z", "end": "9999-12-31T00:00:00Z"}

    async def one(client: httpx.AsyncClient) -> int:
        async with client.stream("GET", "/export.csv", params=params, headers=headers(admin_key)) as response:
            if response.status_code == 200:
                async for _ in response.aiter_bytes():
                    break  # the first bytes, then gone
            return response.status_code

    async def attack() -> list[int]:
        clients = [httpx.AsyncClient(base_url=dense_server.url, timeout=30) for _ in range(40)]
        try:
            return list(await asyncio.gather(*(one(c) for c in clients)))
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    statuses = asyncio.run(attack())
    assert sorted(set(statuses)) == [200, 429]
    assert statuses.count(200) <= 2
    time.sleep(1.0)
    settled = dense_server.store.queries
    started = time.monotonic()
    health = httpx.get(f"{dense_server.url}/health", timeout=10)
    assert health.status_code == 200
    assert time.monotonic() - started < 2
    time.sleep(1.0)
    assert dense_server.store.queries == settled, "abandoned exports kept querying InfluxDB"


def test_sigterm_during_a_long_export_stops_the_server_in_time(
    dense_server: Server, api_settings: ApiSettings, keys_file: Path, admin_key: str, tmp_path: Path
) -> None:
    """``pilotwatch api serve`` as deployed, an export still streaming to a client that reads nothing, SIGTERM:
    the server exits promptly. Uvicorn tells the stream the connection is going, the export's thread stops at its
    next row; ``SHUTDOWN_TIMEOUT_S`` bounds whatever else might still run (the data is the dense fixture's)."""
    port = free_port()
    env = {
        **os.environ,
        "PILOTWATCH_API_INFLUX__URL": api_settings.influx.url,
        "PILOTWATCH_API_INFLUX__DATABASE": api_settings.influx.database,
        "PILOTWATCH_API_KEYS_FILE": str(keys_file),
        "PILOTWATCH_API_PORT": str(port),
        "PILOTWATCH_API_EXPORT_CHUNK_S": "60",
        "PILOTWATCH_API_EXPORT_PAGE_ROWS": "1",
        "PILOTWATCH_API_SHUTDOWN_TIMEOUT_S": "2",
        "PILOTWATCH_HOME": str(tmp_path / "home"),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "commands.cli", "api", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "pilotwatch api serve did not start"
            assert server.poll() is None, "pilotwatch api serve exited at start"
            time.sleep(0.2)
        params = {"site": SITE, "param": "ph", "start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"}
        with (
            httpx.Client(base_url=url, timeout=30) as client,
            client.stream("GET", "/export.csv", params=params, headers=headers(admin_key)) as response,
        ):
            assert response.status_code == 200
            next(response.iter_bytes())  # the export is running; this client reads nothing more
            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            server.wait(15)
            assert time.monotonic() - started < 10
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)


def test_an_export_past_its_time_limit_says_so_in_the_file(
    influx: InfluxV1, api_settings: ApiSettings, manifest: Manifest, admin_key: str
) -> None:
    lines = [
        StoredReading("bangkok", SITE, DEVICE, "ph", "ph", 7.0, "pH", t0_ms() + i * 1000, seq=i).to_line()
        for i in range(3000)
    ]
    assert influx.write_lines(lines).status_code == 204
    settings = api_settings.model_copy(update={"export_timeout_s": 0.05, "export_page_rows": 10})
    with TestClient(create_app(settings, manifest=manifest)) as client:
        response = client.get("/export.csv", params={"site": SITE, "param": "ph"}, headers=headers(admin_key))
    last = response.text.rstrip().splitlines()[-1]
    assert re.fullmatch(r"# export stopped early after \d+ rows: the server's limit of 0.05 s per export .*", last)


# -- 7: InfluxDB errors are not echoed ------------------------------------------------------------------------


def test_an_influxdb_error_is_a_502_without_the_statement(
    api_settings: ApiSettings, manifest: Manifest, admin_key: str, key_kinds: list[KeyKind]
) -> None:
    settings = api_settings.model_copy(
        update={"influx": api_settings.influx.model_copy(update={"database": "no_such_database_here"})}
    )
    with TestClient(create_app(settings, manifest=manifest)) as client:
        for path, params in (
            ("/series", {"device": DEVICE, "sensor": "ph"}),
            (f"/sites/{SITE}/latest", {}),
            (f"/devices/{DEVICE}/health", {}),
        ):
            response = client.get(path, params=params, headers=headers(admin_key))
            assert assert_json_error(response, 502) == INFLUX_FAILED
            for leak in ("SELECT", "no_such_database_here", "database not found", "reading"):
                assert leak not in response.text
        export = client.get("/export.csv", params={"site": SITE}, headers=headers(admin_key))
        assert export.text.rstrip().splitlines()[-1] == f"# export stopped early after 0 rows: {INFLUX_FAILED}"
        assert "SELECT" not in export.text


def test_an_unreachable_influxdb_is_a_503_without_its_address(
    api_settings: ApiSettings, manifest: Manifest, admin_key: str
) -> None:
    port = free_port()
    influx = api_settings.influx.model_copy(update={"url": f"http://127.0.0.1:{port}", "timeout_s": 2.0})
    settings = api_settings.model_copy(update={"influx": influx})
    with TestClient(create_app(settings, manifest=manifest)) as client:
        response = client.get(f"/sites/{SITE}/latest", headers=headers(admin_key))
        assert assert_json_error(response, 503) == INFLUX_UNREACHABLE
        assert str(port) not in response.text
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["influxdb"] == "unreachable"


# -- 7: redirects, keys ---------------------------------------------------------------------------------------


def test_no_redirect_is_built_from_the_host_header(api: TestClient, admin_key: str) -> None:
    for path in ("/sites/", f"/sites/{SITE}/", "/me/", "/health/"):
        response = api.get(path, headers={**headers(admin_key), "Host": "evil.example"}, follow_redirects=False)
        assert response.status_code == 404, f"{path}: {response.status_code}"
        assert "location" not in response.headers
        assert "evil.example" not in response.text


def test_an_admin_key_with_a_scope_is_refused_at_creation(keys_file: Path, manifest: Manifest) -> None:
    store = KeyStore(keys_file)
    for cities, sites in ((("bangkok",), ()), ((), (SITE,)), (("*",), ())):
        with pytest.raises(KeyStoreError, match="an admin key reads every city and site"):
            store.add(ApiKeyCreate(name="scoped-admin", role=Role.ADMIN, cities=cities, sites=sites), manifest)
    assert all(r.name != "scoped-admin" for r in store.records())


@pytest.mark.parametrize(
    "name", ["a\nb", "ops\x1b[31m", "tab\there", "nul\x00", "del\x7f", "ls\u2028x", " padded", "bidi\u202e"]
)
def test_key_names_with_control_characters_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="control characters"):
        ApiKeyCreate(name=name, role=Role.OPERATOR, cities=("bangkok",))


def test_a_corrupt_keys_file_makes_every_keyed_route_a_json_503_and_health_says_so(
    api: TestClient, keys_file: Path, key_kinds: list[KeyKind]
) -> None:
    schema = api.get("/openapi.json").json()
    keys_file.write_text("keys: [ {name: broken\n")  # not YAML
    key = next(k.key for k in key_kinds if k.role is Role.ADMIN)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if not operation.get("security"):
                continue
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            for sent in (key, None, "pw_wrong"):
                response = api.request(method.upper(), concrete, headers=headers(sent))
                if sent is None:
                    # No key at all is refused before the file is needed.
                    assert response.status_code == 401
                    continue
                assert assert_json_error(response, 503) == KEYS_UNUSABLE, f"{method} {path}"
    health = api.get("/health")
    assert health.status_code == 503
    assert health.json()["keys"] == "unreadable"
    assert health.json()["status"] == "degraded"
    # Fixed, the file serves keys again without a restart.
    keys_file.unlink()
    assert api.get("/health").json()["keys"] == "ok"


# -- 7: the OpenAPI document says what the API answers ----------------------------------------------------------


def test_openapi_declares_every_error_and_the_true_422_body(api: TestClient, admin_key: str) -> None:
    schema = api.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert components["ErrorPublic"]["properties"]["detail"]["type"] == "string"
    assert "HTTPValidationError" not in components
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            declared = set(operation["responses"])
            if operation.get("security"):
                assert {"401", "503"} <= declared, f"{method} {path} declares {declared}"
            if "{" in path or any(p["in"] == "query" and p["required"] for p in operation.get("parameters", [])):
                assert {"403", "404"} <= declared, f"{method} {path} declares {declared}"
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")) and path != "/health":
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/ErrorPublic", f"{method} {path} {code}"
    for path in ("/series", "/sites/{site_id}/latest", "/export.csv"):
        assert {"502", "503", "422"} <= set(schema["paths"][path]["get"]["responses"])
    # And the 422 body really is what the document says: one string.
    response = api.get(
        "/series", params={"device": DEVICE, "sensor": "ph", "limit": "many"}, headers=headers(admin_key)
    )
    assert "limit" in assert_json_error(response, 422)
