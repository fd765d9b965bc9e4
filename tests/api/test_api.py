"""The API against a real InfluxDB: scopes, roles, answers and the exact error details."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from api.settings import ApiSettings
from api.store import ReadingStore
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.settings import free_port
from tests.api.conftest import N_POINTS, STEP, T0, Keys, Seeded

H = "X-API-Key"


def auth(key: str) -> dict[str, str]:
    return {H: key}


def test_health_needs_no_key_and_pings_influxdb(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["influxdb"] == "ok"


def test_health_says_degraded_when_influxdb_is_unreachable(keys_file: Path, manifest: Manifest) -> None:
    settings = ApiSettings(influx={"url": f"http://127.0.0.1:{free_port()}"}, keys_file=keys_file)
    with TestClient(create_app(settings, manifest=manifest)) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["influxdb"] == "unreachable"


def test_requests_without_a_valid_key_get_401(client: TestClient) -> None:
    assert client.get("/sites").json() == {"detail": "missing API key: send it in the X-API-Key header"}
    assert client.get("/sites").status_code == 401
    response = client.get("/sites", headers=auth("pw_not-a-real-key"))
    assert response.status_code == 401
    assert response.json() == {"detail": "invalid API key"}


def test_sites_list_only_what_the_key_may_read(client: TestClient, keys: Keys, manifest: Manifest) -> None:
    operator = client.get("/sites", headers=auth(keys.operator_bkk)).json()
    assert [s["id"] for s in operator["data"]] == ["bkk-pratunam-pier", "bkk-asok-pier"]
    assert operator["count"] == 2
    staff = client.get("/sites", headers=auth(keys.staff_site)).json()
    assert [s["id"] for s in staff["data"]] == ["mlk-kampung-morten"]
    admin = client.get("/sites", headers=auth(keys.admin)).json()
    assert admin["count"] == sum(1 for _ in manifest.iter_sites())
    assert client.get("/sites?city=melaka", headers=auth(keys.operator_bkk)).json()["count"] == 0
    unknown = client.get("/sites?city=atlantis", headers=auth(keys.admin))
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "unknown city 'atlantis'"}


def test_site_carries_role_periods_and_limits_with_citation(client: TestClient, keys: Keys) -> None:
    site = client.get("/sites/bkk-pratunam-pier", headers=auth(keys.operator_bkk)).json()
    assert site["role"] == "intervention"
    assert site["kind"] == "water"
    assert site["periods"]["baseline"] == {"start": "2026-03-01", "end": "2026-09-01"}
    do_limit = next(limit for limit in site["limits"] if limit["param"] == "do")
    assert do_limit["min"] == 2.0
    assert do_limit["statistic"] == "p20"
    assert do_limit["citation"].startswith("[TH1]")
    assert site["location"]["lat"] == pytest.approx(13.7503)


def test_operator_never_reaches_another_city(client: TestClient, keys: Keys, seeded: Seeded) -> None:
    site = client.get("/sites/mlk-kampung-morten/latest", headers=auth(keys.operator_bkk))
    assert site.status_code == 403
    assert site.json() == {"detail": "key 'op-bkk' has no access to site 'mlk-kampung-morten'"}
    device = client.get("/devices/mlk-morten-wq1/health", headers=auth(keys.operator_bkk))
    assert device.status_code == 403
    assert device.json() == {"detail": "key 'op-bkk' has no access to device 'mlk-morten-wq1'"}
    series = client.get("/series?device=mlk-morten-wq1&sensor=ph", headers=auth(keys.operator_bkk))
    assert series.status_code == 403
    assert series.json() == {"detail": "key 'op-bkk' has no access to device 'mlk-morten-wq1'"}
    unknown = client.get("/sites/nowhere/latest", headers=auth(keys.operator_bkk))
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "unknown site 'nowhere'"}


def test_latest_gives_newest_reading_per_sensor_with_flags(client: TestClient, keys: Keys, seeded: Seeded) -> None:
    body = client.get("/sites/bkk-pratunam-pier/latest", headers=auth(keys.operator_bkk)).json()
    assert body["count"] == 2
    by_sensor = {r["sensor"]: r for r in body["data"]}
    assert by_sensor["ph"]["value"] == pytest.approx(seeded.ph_values[-1])
    assert by_sensor["ph"]["unit"] == "pH"
    assert by_sensor["ph"]["time"] == (T0 + (N_POINTS - 1) * STEP).isoformat().replace("+00:00", "Z")
    assert by_sensor["ph"]["edge_flag"] == 1
    assert by_sensor["ph"]["qc_flag"] is None  # analytics flagged only the first 30 pH readings
    assert by_sensor["do"]["qc_flag"] == 4
    assert by_sensor["do"]["edge_flag"] is None


def test_series_returns_points_in_order_with_qc_flags(client: TestClient, keys: Keys, seeded: Seeded) -> None:
    response = client.get(
        "/series",
        params={
            "device": "bkk-pratunam-wq1",
            "sensor": "ph",
            "start": "2026-08-31T16:00:00Z",
            "end": "2026-08-31T23:07:00+07:00",
        },
        headers=auth(keys.operator_bkk),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    # 16:00 to 16:07 UTC holds the samples at 16:00 and 16:05.
    assert body["count"] == 2
    assert body["truncated"] is False
    assert [p["value"] for p in body["data"]] == pytest.approx(seeded.ph_values[:2])
    assert [p["qc_flag"] for p in body["data"]] == [3, 1]
    assert [p["qc_late"] for p in body["data"]] == [False, False]
    assert body["param"] == "ph"
    assert body["unit"] == "pH"


def test_series_limit_truncates_and_says_so(client: TestClient, keys: Keys, seeded: Seeded) -> None:
    response = client.get(
        "/series",
        params={
            "device": "bkk-pratunam-wq1",
            "sensor": "do",
            "start": "2026-08-31T00:00:00Z",
            "end": "2026-09-02T00:00:00Z",
            "limit": 10,
        },
        headers=auth(keys.admin),
    )
    body = response.json()
    assert body["count"] == 10
    assert body["truncated"] is True
    assert [p["qc_flag"] for p in body["data"]] == [None] * 10


@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        ({"device": "nope", "sensor": "ph"}, 404, "unknown device 'nope'"),
        (
            {"device": "bkk-pratunam-wq1", "sensor": "cod"},
            404,
            "unknown sensor 'cod' on device 'bkk-pratunam-wq1'; known: temp, ph, do, ec, turb, orp",
        ),
        ({"device": "bkk-pratunam-wq1"}, 422, "query parameter 'sensor': Field required"),
        (
            {"device": "bkk-pratunam-wq1", "sensor": "ph", "start": "yesterday"},
            422,
            "query parameter 'start': 'yesterday' is not an ISO 8601 time, e.g. 2026-03-01T00:00:00Z",
        ),
        (
            {"device": "bkk-pratunam-wq1", "sensor": "ph", "end": "2026-09-01T00:00:00"},
            422,
            "query parameter 'end': '2026-09-01T00:00:00' has no UTC offset; add Z or an offset such as +07:00",
        ),
        (
            {
                "device": "bkk-pratunam-wq1",
                "sensor": "ph",
                "start": "2026-09-02T00:00:00Z",
                "end": "2026-09-01T00:00:00Z",
            },
            422,
            "query parameter 'end' (2026-09-01T00:00:00+00:00) must be after 'start' (2026-09-02T00:00:00+00:00)",
        ),
        (
            {"device": "bkk-pratunam-wq1", "sensor": "ph", "limit": 0},
            422,
            "query parameter 'limit': must be between 1 and 10000, got 0",
        ),
        (
            {"device": "bkk-pratunam-wq1", "sensor": "ph", "limit": 10001},
            422,
            "query parameter 'limit': must be between 1 and 10000, got 10001",
        ),
        (
            {"device": "bkk-pratunam-wq1", "sensor": "ph", "limit": "many"},
            422,
            "query parameter 'limit': Input should be a valid integer, unable to parse string as an integer",
        ),
    ],
)
def test_series_bad_parameters_get_a_clear_detail(
    client: TestClient, keys: Keys, params: dict[str, str | int], status: int, detail: str
) -> None:
    response = client.get("/series", params=params, headers=auth(keys.operator_bkk))
    assert response.status_code == status
    assert response.json() == {"detail": detail}


def test_device_health_reports_the_latest_status(client: TestClient, keys: Keys, seeded: Seeded) -> None:
    body = client.get("/devices/bkk-pratunam-wq1/health", headers=auth(keys.operator_bkk)).json()
    assert body["state"] == "online"
    assert body["battery_pct"] == 79.0
    assert body["buffer_depth"] == 13
    assert body["last_seq"] == 31
    assert body["signal_dbm"] == -70.0
    assert body["city"] == "bangkok"
    # The newest reading (last sample) is a minute later than the newest status point.
    assert body["last_seen"] == body["last_reading_time"]
    assert body["status_time"] < body["last_seen"]
    never = client.get("/devices/bkk-asok-wq1/health", headers=auth(keys.operator_bkk)).json()
    assert never["state"] == "never_seen"
    assert never["last_seen"] is None


def _read_export(text: str) -> tuple[list[str], list[dict[str, str]], list[str]]:
    lines = text.splitlines()
    head = [ln for ln in lines if ln.startswith("#")]
    body = [ln for ln in lines if not ln.startswith("#")]
    return head, list(csv.DictReader(io.StringIO("\n".join(body)))), lines


def test_export_streams_rows_with_flags_role_period_and_provenance(
    influx: InfluxV1, keys_file: Path, manifest: Manifest, keys: Keys, seeded: Seeded
) -> None:
    # One-hour chunks and pages of 7 rows: three hours of data take many small queries, never one big one.
    settings = ApiSettings(
        influx={"url": influx.url, "database": influx.database},
        keys_file=keys_file,
        export_chunk_s=3600,
        export_page_rows=7,
    )
    with TestClient(create_app(settings, manifest=manifest)) as client:
        params = {
            "site": "bkk-pratunam-pier",
            "param": "ph",
            "start": "2026-08-31T00:00:00Z",
            "end": "2026-09-01T06:00:00Z",
        }
        with client.stream("GET", "/export.csv", params=params, headers=auth(keys.evaluator)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/csv")
            pieces = list(response.iter_text())
        store: ReadingStore = client.app.state.store  # type: ignore[attr-defined]
    head, rows, lines = _read_export("".join(pieces))
    assert len(rows) == N_POINTS
    assert [float(r["value"]) for r in rows] == pytest.approx(seeded.ph_values)
    assert [int(r["qc_flag"]) for r in rows] == [seeded.qc_flagged.get(t, 2) for t in seeded.times_ms]
    assert [int(r["qc_late"]) for r in rows] == [int(t in seeded.qc_late) for t in seeded.times_ms]
    assert {r["site_role"] for r in rows} == {"intervention"}
    assert {r["edge_flag"] for r in rows} == {"1"}
    # Bangkok's intervention period starts at local midnight 2026-09-01 = 2026-08-31T17:00Z.
    periods = [(r["time"], r["period"]) for r in rows]
    assert all(p == ("baseline" if t < "2026-08-31T17:00" else "intervention") for t, p in periods)
    assert periods[0] == ("2026-08-31T16:00:00.000Z", "baseline")
    assert periods[12] == ("2026-08-31T17:00:00.000Z", "intervention")
    assert any(h.startswith("# manifest: version 1, sha256 ") for h in head)
    assert any(h.startswith("# generated: ") for h in head)
    assert (
        "# query: site=bkk-pratunam-pier param=ph start=2026-08-31T00:00:00.000Z end=2026-09-01T06:00:00.000Z "
        "(end exclusive)" in head
    )
    assert lines[-1] == f"# end of export: {N_POINTS} rows"
    # 30 h in 1 h chunks, 3 of them hold data (12 rows each: pages of 7 and 5, each with its QC look-up). The
    # empty hours before and after are jumped over with one look-up each, so the queries follow the data.
    assert 3 * 4 <= store.queries <= 3 * 4 + 3


def test_export_defaults_to_the_sites_periods(client: TestClient, keys: Keys, seeded: Seeded) -> None:
    response = client.get("/export.csv", params={"site": "bkk-pratunam-pier"}, headers=auth(keys.admin))
    head, rows, _ = _read_export(response.text)
    assert len(rows) == 2 * N_POINTS  # ph and do
    assert (
        "# query: site=bkk-pratunam-pier param=* start=2026-02-28T17:00:00.000Z end=2027-02-28T17:00:00.000Z "
        "(end exclusive)" in head
    )


@pytest.mark.parametrize(
    ("params", "key", "status", "detail"),
    [
        (
            {"site": "bkk-pratunam-pier"},
            "operator_bkk",
            403,
            "this needs role evaluator or admin; key 'op-bkk' has role operator",
        ),
        ({"site": "mlk-kampung-morten"}, "evaluator", 403, "key 'eval-bkk' has no access to site 'mlk-kampung-morten'"),
        ({"site": "atlantis"}, "evaluator", 404, "unknown site 'atlantis'"),
        ({}, "evaluator", 422, "query parameter 'site': Field required"),
        (
            {"site": "bkk-pratunam-pier", "param": "cod"},
            "evaluator",
            422,
            "query parameter 'param': 'cod' is not measured at site 'bkk-pratunam-pier'; measured: "
            "conductivity, do, orp, ph, temperature, turbidity",
        ),
        (
            {"site": "bkk-pratunam-pier", "param": "ph'; DROP DATABASE x"},
            "evaluator",
            422,
            "query parameter 'param': \"ph'; DROP DATABASE x\" is not a parameter; expected one of "
            "temperature, ph, do, conductivity, turbidity, orp, ammonia, colour, uv254, cod, flow, tds, distance, "
            "fill, water_level",
        ),
        (
            {"site": "bkk-pratunam-pier", "start": "2026-09-01T00:00:00Z", "end": "2026-09-01T00:00:00Z"},
            "evaluator",
            422,
            "query parameter 'end' (2026-09-01T00:00:00+00:00) must be after 'start' (2026-09-01T00:00:00+00:00)",
        ),
    ],
)
def test_export_refuses_with_a_clear_detail(
    client: TestClient, keys: Keys, params: dict[str, str], key: str, status: int, detail: str
) -> None:
    response = client.get("/export.csv", params=params, headers=auth(getattr(keys, key)))
    assert response.status_code == status
    assert response.json() == {"detail": detail}


def test_store_quotes_hostile_input(influx: InfluxV1, seeded: Seeded) -> None:
    store = ReadingStore(influx)
    rows, truncated = store.series("bkk-pratunam-wq1' OR 'a'='a", "ph", 0, 2**52, 10)
    assert rows == []
    assert truncated is False
    assert store.latest_for_site('bkk-pratunam-pier" ,x') == []
    assert len(store.latest_for_site("bkk-pratunam-pier")) == 2


def test_settings_refuse_placeholder_secrets() -> None:
    with pytest.raises(ValueError, match="influx token is a placeholder value"):
        ApiSettings(influx={"token": SecretStr("changethis")})
    with pytest.raises(ValueError, match="influx url must start with http"):
        ApiSettings(influx={"url": "localhost:8086"})


def test_series_marks_readings_whose_qc_came_late(client: TestClient, keys: Keys, seeded: Seeded) -> None:
    """A reading that arrived after analytics' late window carries its reconciliation's flag, marked late."""
    response = client.get(
        "/series",
        params={
            "device": "bkk-pratunam-wq1",
            "sensor": "ph",
            "start": "2026-08-31T18:15:00Z",
            "end": "2026-08-31T18:35:00Z",
        },
        headers=auth(keys.operator_bkk),
    )
    assert response.status_code == 200, response.text
    points = {p["time"]: (p["qc_flag"], p["qc_late"]) for p in response.json()["data"]}
    # Samples 27 to 30 (18:15 to 18:30): 28 and 29 QC'd late, 30 never QC'd.
    assert list(points.values()) == [(1, False), (1, True), (1, True), (None, False)]
