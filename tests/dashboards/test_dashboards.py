"""Every generated dashboard's every query runs against a real InfluxDB holding data for every device."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from commands.cli import main
from dashboards.build import FLEET_UID, build_all, city_uid, panel_queries, write_all
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.schema import SCHEMA, Measurement, StoredReading, line

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "deploy" / "grafana" / "dashboards"
T0 = dt.datetime(2026, 9, 1, 0, 0, tzinfo=dt.UTC)
T0_MS = (T0 - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)
STEP_MS = 300_000


def grafana_macros(query: str, start_ms: int, end_ms: int, interval: str) -> str:
    """What Grafana's InfluxDB datasource puts in place of its macros before sending a raw InfluxQL query."""
    return query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms").replace("$__interval", interval)


def seed_every_sensor(influx: InfluxV1, manifest: Manifest) -> None:
    lines = []
    for city, site, device in manifest.iter_devices():
        for k in range(6):
            for sensor in device.sensors:
                low, high = sensor.valid_range
                value = low + (high - low) * (0.3 + 0.05 * k)
                reading = StoredReading(
                    city.id,
                    site.id,
                    device.id,
                    sensor.id,
                    sensor.param.value,
                    value,
                    sensor.unit,
                    T0_MS + k * STEP_MS,
                    k,
                )
                lines.append(reading.to_line())
        fields: dict[str, float | int | str] = {
            "state": "online",
            "battery_pct": 77.0,
            "signal_dbm": -71.0,
            "uptime_s": 100.0,
            "buffer_depth": 3,
            "oldest_unsent_ms": T0_MS,
            "disk_free_mb": 512.0,
            "last_seq": 5,
        }
        tags = {"city": city.id, "site": site.id, "device": device.id}
        lines.append(line("device_status", tags, fields, T0_MS + 10 * 60_000))
        delivery = {"stored": 6, "last_seen_ms": T0_MS + 25 * 60_000, "clock_offset_ms": -3_600_250}
        lines.append(line("delivery", tags, delivery, T0_MS + 26 * 60_000))
        sensor = device.sensors[0]
        alert_tags = {**tags, "sensor": sensor.id, "kind": "device", "rule": "device.sensor_fault"}
        alert_fields: dict[str, float | int | str] = {
            "alert_id": f"a-{device.id}",
            "title": f"sensor fault at {device.id}/{sensor.id}",
            "severity": "warning",
            "status": "open",
            "firing": 1,
            "silenced": 0,
        }
        lines.append(line("alert", alert_tags, alert_fields, T0_MS + 20 * 60_000))
    response = influx.write_lines(lines)
    assert response.status_code == 204, response.text


def test_every_panel_query_returns_rows(influx: InfluxV1, manifest: Manifest) -> None:
    seed_every_sensor(influx, manifest)
    dashboards = build_all(manifest)
    assert set(dashboards) == {FLEET_UID} | {city_uid(c) for c in manifest.cities}
    ran = 0
    for uid, dashboard in dashboards.items():
        queries = panel_queries(dashboard)
        assert queries, f"{uid} has no queries"
        for title, query in queries:
            assert "$timeFilter" in query
            sql = grafana_macros(query, T0_MS - 3_600_000, T0_MS + 3_600_000, "5m")
            rows = influx.query(sql)
            assert rows, f"{uid} / {title}: no rows for {sql}"
            ran += 1
    # A panel per parameter measured at each site, a device table per city (three queries), an alert table and
    # an alert annotation per city, and the fleet's five queries, alert table and annotation.
    per_site = sum(len({s.param for d in site.devices for s in d.sensors}) for _, site in manifest.iter_sites())
    assert ran == per_site + 5 * len(manifest.cities) + 7


def test_alert_table_and_annotation_show_the_citys_alerts_only(influx: InfluxV1, manifest: Manifest) -> None:
    seed_every_sensor(influx, manifest)
    dashboard = build_all(manifest)[city_uid(manifest.cities[0])]
    city_devices = {d.id for d in manifest.cities[0].sites[0].devices} | {
        d.id for s in manifest.cities[0].sites for d in s.devices
    }
    queries = dict(panel_queries(dashboard))
    for title in ("Alerts", "annotation: alerts"):
        rows = influx.query(grafana_macros(queries[title], T0_MS - 3_600_000, T0_MS + 3_600_000, "5m"))
        assert rows, title
        assert {str(r["title"]).split(" at ")[1].split("/")[0] for r in rows} == city_devices
    annotation = dashboard["annotations"]["list"][0]
    assert annotation["textColumn"] == "title"
    assert annotation["datasource"] == {"type": "influxdb", "uid": "pilotwatch-influxdb"}


def test_the_device_table_shows_each_devices_clock_offset(influx: InfluxV1, manifest: Manifest) -> None:
    seed_every_sensor(influx, manifest)
    city = manifest.cities[0]
    dashboard = build_all(manifest)[city_uid(city)]
    (table,) = [p for p in dashboard["panels"] if p["title"] == "Devices"]
    (query,) = [t["query"] for t in table["targets"] if "clock_offset_ms" in t["query"]]
    rows = influx.query(grafana_macros(query, T0_MS - 3_600_000, T0_MS + 3_600_000, "5m"))
    assert {str(r["device"]): r["clock offset s"] for r in rows} == {
        d.id: -3600.25 for s in city.sites for d in s.devices
    }


def test_queries_outside_the_data_return_nothing(influx: InfluxV1, manifest: Manifest) -> None:
    # The macro really filters: the same queries a day later find no rows (so the test above can fail).
    seed_every_sensor(influx, manifest)
    dashboard = build_all(manifest)[city_uid(manifest.cities[0])]
    for _, query in panel_queries(dashboard):
        later = T0_MS + 86_400_000
        assert influx.query(grafana_macros(query, later, later + 3_600_000, "5m")) == []


def _panel(dashboard: dict[str, object], title_start: str, after_row: str) -> dict[str, object]:
    in_row = False
    for panel in dashboard["panels"]:  # type: ignore[attr-defined]
        if panel["type"] == "row":
            in_row = panel["title"].startswith(after_row)
        elif in_row and panel["title"].startswith(title_start):
            return dict(panel)
    raise AssertionError(f"no panel {title_start!r} under row {after_row!r}")


def test_limits_become_thresholds(manifest: Manifest) -> None:
    dashboards = build_all(manifest)
    bangkok = dashboards["pw-city-bangkok"]
    do = _panel(bangkok, "do ", "Khlong Saen Saep at Pratunam")
    steps = do["fieldConfig"]["defaults"]["thresholds"]["steps"]  # type: ignore[index]
    assert steps == [{"color": "red", "value": None}, {"color": "green", "value": 2.0}]
    assert "[TH1]" in str(do["description"])
    ph = _panel(bangkok, "ph ", "Khlong Saen Saep at Pratunam")
    assert ph["fieldConfig"]["defaults"]["thresholds"]["steps"] == [  # type: ignore[index]
        {"color": "red", "value": None},
        {"color": "green", "value": 5.0},
        {"color": "red", "value": 9.0},
    ]
    colour = _panel(dashboards["pw-city-semarang"], "colour ", "Kampung Batik, workshop switching")
    assert colour["fieldConfig"]["defaults"]["thresholds"]["steps"][-1] == {"color": "red", "value": 200.0}  # type: ignore[index]
    harbour = _panel(dashboards["pw-city-da-nang"], "do ", "Tho Quang fishing port, harbour")
    assert harbour["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] == {"mode": "off"}  # type: ignore[index]


def test_one_row_per_site_and_unique_panel_ids(manifest: Manifest) -> None:
    for city in manifest.cities:
        dashboard = build_all(manifest)[city_uid(city)]
        rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
        assert [r.split(" · ")[0] for r in rows] == [s.name for s in city.sites]
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        assert dashboard["timezone"] == city.timezone


def test_committed_dashboards_match_the_default_manifest(manifest: Manifest) -> None:
    built = build_all(manifest)
    committed = {p.stem: json.loads(p.read_text()) for p in COMMITTED.glob("pw-*.json")}
    assert committed.keys() == built.keys(), "run `pilotwatch dashboards build` and commit deploy/grafana/dashboards"
    for uid, dashboard in built.items():
        assert committed[uid] == dashboard, f"{uid}.json is stale: run `pilotwatch dashboards build`"


def test_build_command_writes_and_prunes(tmp_path: Path, manifest: Manifest) -> None:
    (tmp_path / "pw-city-atlantis.json").write_text("{}")
    (tmp_path / "keep-me.json").write_text("{}")
    assert main(["dashboards", "build", "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "pw-city-atlantis.json" not in names
    assert "keep-me.json" in names
    assert len(names) == len(manifest.cities) + 2
    assert write_all(manifest, tmp_path)[0].name == "pw-fleet.json"


@pytest.mark.parametrize("uid", ["pw-fleet", "pw-city-jakarta"])
def test_every_target_uses_the_provisioned_datasource(uid: str, manifest: Manifest) -> None:
    dashboard = build_all(manifest)[uid]
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "influxdb", "uid": "pilotwatch-influxdb"}
            assert target["rawQuery"] is True


def test_every_query_names_only_what_the_storage_schema_declares(manifest: Manifest) -> None:
    """A panel reading a field or tag no writer produces would show 'no data' for ever; here it fails."""
    identifier = re.compile(r'(\bAS\s+)?"((?:[^"\\]|\\.)*)"')
    checked = 0
    for dashboard in build_all(manifest).values():
        for title, query in panel_queries(dashboard):
            found = re.search(r'\bFROM\s+"([^"]+)"', query)
            assert found, f"{title}: no measurement in {query}"
            spec = SCHEMA[Measurement(found.group(1))]
            for alias, name in identifier.findall(query):
                if alias or name == found.group(1):
                    continue
                assert name in spec.fields or name in spec.tags, f"{title}: {name!r} is not in {spec.measurement}"
                checked += 1
    assert checked > 100
