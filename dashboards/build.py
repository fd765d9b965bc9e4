"""Build Grafana dashboard JSON from the manifest: one dashboard per city and a fleet overview.

Every query is InfluxQL (``rawQuery``) with Grafana's ``$timeFilter`` and ``$__interval`` macros; identifiers
and literals are quoted with :func:`pilotwatch.influx.quote_ident` / ``quote_literal`` even though they come
from the manifest, so an odd site id cannot break a panel.
"""

# ruff: noqa: S608  (every identifier and literal below goes through quote_ident / quote_literal)

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pilotwatch.influx import quote_ident, quote_literal
from pilotwatch.manifest import City, Manifest, Parameter, ParameterLimit, Site
from pilotwatch.schema import Measurement

DATASOURCE_UID = "pilotwatch-influxdb"
DATASOURCE_NAME = "pilotwatch InfluxDB"
DATASOURCE = {"type": "influxdb", "uid": DATASOURCE_UID}
SCHEMA_VERSION = 39
FLEET_UID = "pw-fleet"
UID_MAX = 40  # Grafana refuses longer dashboard and folder uids

# Grafana's own unit ids where one exists; anything else is shown as a suffix.
GRAFANA_UNITS = {"degC": "celsius", "%": "percent", "mV": "mvolt", "m": "lengthm", "cm": "lengthcm"}

Json = dict[str, Any]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def city_uid(city: City) -> str:
    return f"pw-city-{city.id}"[:UID_MAX]


def folder_uid(manifest: Manifest) -> str:
    return f"pw-{slug(manifest.programme.name)}"[:UID_MAX].rstrip("-")


def _eq(tag: str, value: str) -> str:
    return f"{quote_ident(tag)} = {quote_literal(value)}"


def _target(ref: str, query: str, result_format: str = "time_series", alias: str = "") -> Json:
    target: Json = {
        "refId": ref,
        "datasource": DATASOURCE,
        "rawQuery": True,
        "query": query,
        "resultFormat": result_format,
    }
    if alias:
        target["alias"] = alias
    return target


def param_query(site_id: str, param: Parameter) -> str:
    return (
        f"SELECT mean({quote_ident('value')}) FROM {quote_ident(Measurement.READING)} "
        f"WHERE {_eq('site', site_id)} AND {_eq('param', param.value)} AND $timeFilter "
        f"GROUP BY time($__interval), {quote_ident('device')}, {quote_ident('sensor')} fill(none)"
    )


def strictest(limits: list[tuple[str, ParameterLimit]]) -> tuple[float | None, float | None]:
    """The tightest bounds of several limit sets: the highest minimum and the lowest maximum."""
    mins = [lim.min for _, lim in limits if lim.min is not None]
    maxes = [lim.max for _, lim in limits if lim.max is not None]
    return (max(mins) if mins else None, min(maxes) if maxes else None)


def thresholds(low: float | None, high: float | None) -> Json:
    """Red outside the limit, green inside, as Grafana absolute threshold steps (the first step has no value)."""
    if low is None and high is None:
        steps: list[Json] = [{"color": "green", "value": None}]
    elif low is None:
        steps = [{"color": "green", "value": None}, {"color": "red", "value": high}]
    elif high is None:
        steps = [{"color": "red", "value": None}, {"color": "green", "value": low}]
    else:
        steps = [{"color": "red", "value": None}, {"color": "green", "value": low}, {"color": "red", "value": high}]
    return {"mode": "absolute", "steps": steps}


def _limit_description(
    manifest: Manifest, site: Site, param: Parameter
) -> tuple[list[tuple[str, ParameterLimit]], str]:
    found: list[tuple[str, ParameterLimit]] = []
    lines = []
    for name in site.limits:
        limit_set = manifest.limits[name]
        limit = limit_set.parameters.get(param)
        if limit is None:
            continue
        found.append((name, limit))
        bounds = ", ".join(
            part
            for part in (
                f"min {limit.min:g}" if limit.min is not None else "",
                f"max {limit.max:g}" if limit.max is not None else "",
            )
            if part
        )
        line = f"Limit ({limit.statistic.value}): {bounds} {param.unit} — {limit_set.standard}."
        line += f" Source: {limit_set.citation}."
        if not limit.confirmed:
            line += " Not confirmed by the reference."
        if limit.note:
            line += f" Note: {limit.note}."
        lines.append(line)
    if not lines:
        lines.append("No limit applies to this parameter at this site in the manifest.")
    return found, "\n\n".join(lines)


def _unit(param: Parameter) -> str:
    return GRAFANA_UNITS.get(param.unit, f"suffix: {param.unit}")


def param_panel(manifest: Manifest, site: Site, param: Parameter, grid: Json, panel_id: int) -> Json:
    limits, description = _limit_description(manifest, site, param)
    low, high = strictest(limits)
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": f"{param.value} ({param.unit})",
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": grid,
        "targets": [_target("A", param_query(site.id, param), alias="$tag_device $tag_sensor")],
        "fieldConfig": {
            "defaults": {
                "unit": _unit(param),
                "thresholds": thresholds(low, high),
                "custom": {
                    "drawStyle": "line",
                    "spanNulls": False,
                    "thresholdsStyle": {"mode": "off" if low is None and high is None else "line+area"},
                },
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
    }


def _status_table_targets(where: str) -> list[Json]:
    status_fields = (
        ("state", "state"),
        ("battery_pct", "battery %"),
        ("signal_dbm", "signal dBm"),
        ("buffer_depth", "buffer depth"),
        ("disk_free_mb", "disk free MB"),
    )
    selects = ", ".join(f"last({quote_ident(f)}) AS {quote_ident(alias)}" for f, alias in status_fields)
    group = f"GROUP BY {quote_ident('city')}, {quote_ident('site')}, {quote_ident('device')}"
    return [
        _target(
            "A",
            f"SELECT {selects} FROM {quote_ident(Measurement.DEVICE_STATUS)} WHERE {where}$timeFilter {group}",
            "table",
        ),
        # One selector alone returns the time of the point it picked: the time of the newest reading.
        _target(
            "B",
            f"SELECT last({quote_ident('seq')}) AS {quote_ident('last seq')} FROM {quote_ident(Measurement.READING)} "
            f"WHERE {where}$timeFilter {group}",
            "table",
        ),
        # Ingest's estimate of the device clock's error (ingest.clock), what device.clock_off alerts on.
        _target(
            "C",
            f"SELECT last({quote_ident('clock_offset_ms')}) / 1000 AS {quote_ident('clock offset s')} "
            f"FROM {quote_ident(Measurement.DELIVERY)} WHERE {where}$timeFilter {group}",
            "table",
        ),
    ]


def device_table(title: str, where: str, grid: Json, panel_id: int) -> Json:
    """Latest status per device joined with the time of its newest reading ("last seen")."""
    return {
        "id": panel_id,
        "type": "table",
        "title": title,
        "description": "Latest device_status point of each device in the time range, when its newest "
        "reading was stored, and how far its clock is from ingest's (seconds, positive: ahead). A device missing "
        "here has none of them in the range.",
        "datasource": DATASOURCE,
        "gridPos": grid,
        "targets": _status_table_targets(where),
        "transformations": [
            {"id": "joinByField", "options": {"byField": "device", "mode": "outer"}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {
                        "Time 1": True,
                        "city 2": True,
                        "site 2": True,
                        "Time 3": True,
                        "city 3": True,
                        "site 3": True,
                    },
                    "renameByName": {"Time 2": "last seen", "city 1": "city", "site 1": "site"},
                },
            },
        ],
        "fieldConfig": {
            "defaults": {"thresholds": thresholds(None, None)},
            "overrides": [
                {
                    "matcher": {"id": "byName", "options": "buffer depth"},
                    "properties": [
                        {"id": "thresholds", "value": thresholds(None, 1000)},
                        {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                    ],
                }
            ],
        },
    }


ALERT_TABLE_FIELDS = ("title", "kind", "severity", "status", "silenced", "alert_id")


def alert_table(title: str, where: str, grid: Json, panel_id: int) -> Json:
    """The alerts the alert engine stored (measurement ``alert``, one point per alert at its firing time)."""
    selects = ", ".join(quote_ident(f) for f in ALERT_TABLE_FIELDS)
    group = ", ".join(quote_ident(t) for t in ("site", "device", "sensor"))
    return {
        "id": panel_id,
        "type": "table",
        "title": title,
        "description": "Alerts decided by the alert engine, newest first: city staff's pollution and limit alerts, "
        "operators' device and bin alerts. Work them in the API's alert inbox (/inbox); silenced alerts are "
        "recorded and marked.",
        "datasource": DATASOURCE,
        "gridPos": grid,
        "targets": [
            _target(
                "A",
                f"SELECT {selects} FROM {quote_ident(Measurement.ALERT)} WHERE {where}$timeFilter GROUP BY {group}",
                "table",
            )
        ],
        "options": {"sortBy": [{"displayName": "Time", "desc": True}]},
        "fieldConfig": {"defaults": {"thresholds": thresholds(None, None)}, "overrides": []},
    }


def alert_annotation(where: str) -> Json:
    """Every stored alert as an annotation on the time series panels of the dashboard."""
    return {
        "name": "alerts",
        "datasource": DATASOURCE,
        "enable": True,
        "iconColor": "red",
        "query": f"SELECT {quote_ident('title')}, {quote_ident('kind')}, {quote_ident('severity')} "
        f"FROM {quote_ident(Measurement.ALERT)} WHERE {where}$timeFilter",
        "textColumn": "title",
        "tagsColumn": "kind,severity",
    }


def _dashboard(
    *,
    uid: str,
    title: str,
    tags: list[str],
    timezone: str,
    panels: list[Json],
    description: str,
    annotation: Json | None = None,
) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": tags,
        "timezone": timezone,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": [annotation] if annotation else []},
        "panels": panels,
    }


def city_dashboard(manifest: Manifest, city: City) -> Json:
    panels: list[Json] = []
    next_id = 1
    y = 0
    city_where = f"{_eq('city', city.id)} AND "
    panels.append(device_table("Devices", city_where, {"x": 0, "y": y, "w": 24, "h": 6}, next_id))
    next_id += 1
    y += 6
    panels.append(alert_table("Alerts", city_where, {"x": 0, "y": y, "w": 24, "h": 8}, next_id))
    next_id += 1
    y += 8
    for site in city.sites:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": f"{site.name} · {site.kind.value}, {site.role.value}",
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        params: list[Parameter] = []
        for device in site.devices:
            for sensor in device.sensors:
                if sensor.param not in params:
                    params.append(sensor.param)
        for i, param in enumerate(params):
            grid = {"x": 12 * (i % 2), "y": y + 8 * (i // 2), "w": 12, "h": 8}
            panels.append(param_panel(manifest, site, param, grid, next_id))
            next_id += 1
        y += 8 * ((len(params) + 1) // 2)
    return _dashboard(
        uid=city_uid(city),
        title=f"pilotwatch · {city.name}",
        tags=["pilotwatch", "city", city.id],
        timezone=city.timezone,
        panels=panels,
        description=f"{city.pilot}. Generated from the pilot manifest by `pilotwatch dashboards build`; "
        "edit the manifest, not this dashboard.",
        annotation=alert_annotation(city_where),
    )


def fleet_dashboard(manifest: Manifest) -> Json:
    group_device = quote_ident("device")
    panels = [
        device_table("Every device: last seen, buffer depth, clock offset", "", {"x": 0, "y": 0, "w": 24, "h": 12}, 1),
        {
            "id": 2,
            "type": "timeseries",
            "title": "Edge buffer depth (readings waiting to be sent)",
            "datasource": DATASOURCE,
            "gridPos": {"x": 0, "y": 12, "w": 12, "h": 8},
            "targets": [
                _target(
                    "A",
                    f"SELECT max({quote_ident('buffer_depth')}) FROM {quote_ident(Measurement.DEVICE_STATUS)} "
                    f"WHERE $timeFilter GROUP BY time($__interval), {group_device} fill(none)",
                    alias="$tag_device",
                )
            ],
            "fieldConfig": {"defaults": {"unit": "short", "thresholds": thresholds(None, 1000)}, "overrides": []},
        },
        {
            "id": 3,
            "type": "timeseries",
            "title": "Readings stored per interval, by city",
            "datasource": DATASOURCE,
            "gridPos": {"x": 12, "y": 12, "w": 12, "h": 8},
            "targets": [
                _target(
                    "A",
                    f"SELECT count({quote_ident('value')}) FROM {quote_ident(Measurement.READING)} "
                    f"WHERE $timeFilter GROUP BY time($__interval), {quote_ident('city')} fill(0)",
                    alias="$tag_city",
                )
            ],
            "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
        },
        alert_table("Alerts, every city", "", {"x": 0, "y": 20, "w": 24, "h": 10}, 4),
    ]
    n_devices = sum(1 for _ in manifest.iter_devices())
    return _dashboard(
        uid=FLEET_UID,
        title="pilotwatch · fleet",
        tags=["pilotwatch", "fleet"],
        timezone="utc",
        panels=panels,
        description=f"{n_devices} devices in {len(manifest.cities)} cities. Generated from the pilot manifest.",
        annotation=alert_annotation(""),
    )


def build_all(manifest: Manifest) -> dict[str, Json]:
    """Every dashboard by uid: the fleet overview first, then one per city in manifest order."""
    dashboards = {FLEET_UID: fleet_dashboard(manifest)}
    for city in manifest.cities:
        dashboards[city_uid(city)] = city_dashboard(manifest, city)
    return dashboards


def dumps(dashboard: Json) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def write_all(manifest: Manifest, out: Path) -> list[Path]:
    """Write ``<uid>.json`` per dashboard into ``out``; stale ``pw-*.json`` from removed cities are deleted."""
    out.mkdir(parents=True, exist_ok=True)
    dashboards = build_all(manifest)
    written = []
    for uid, dashboard in dashboards.items():
        path = out / f"{uid}.json"
        path.write_text(dumps(dashboard), encoding="utf-8")
        written.append(path)
    for stale in out.glob("pw-*.json"):
        if stale.stem not in dashboards:
            stale.unlink()
    return written


def panel_queries(dashboard: Json) -> list[tuple[str, str]]:
    """(panel title, InfluxQL) for every target of every panel, rows' nested panels included, and every
    annotation query (titled ``annotation: <name>``)."""
    found = [(f"annotation: {a['name']}", str(a["query"])) for a in dashboard.get("annotations", {}).get("list", [])]
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            found.append((str(panel.get("title", "")), str(target["query"])))
    return found
