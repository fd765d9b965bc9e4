"""What the demo shows of alerts: run the engine over a window of stored, QC'd readings and print a table of
alerts per city and kind, with the readings the QC gate kept from city staff's alerts, and where the inbox is.

:func:`run_alerts_for_demo` is self-contained (it needs the InfluxDB the demo filled and a folder for the store);
the demo calls it after the analytics pass, e.g.::

    from alerts.demo import run_alerts_for_demo
    run_alerts_for_demo(manifest, config.influx_url, config.database, home / "alerts", window.start_ms,
                        window.end_ms, console, api_url="http://127.0.0.1:8000")
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from alerts.backtest import replay
from alerts.engine import Engine, PassReport
from alerts.service import AlertService
from alerts.settings import AlertSettings
from alerts.source import read_points, read_statuses
from pilotwatch.manifest import AlertKind, Manifest
from pilotwatch.settings import InfluxConnection

DAY_MS = 86_400_000


@dataclass
class DemoAlerts:
    by_city_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    suppressed: int = 0  # readings the QC gate kept from limit and pollution rules
    on_fault_sensors: int = 0  # of those, readings whose sensor raised a device alert in the window
    report: PassReport = field(default_factory=PassReport)
    store: Path = Path()


def run_alerts_for_demo(  # noqa: PLR0917  # the positional form the demo calls
    manifest: Manifest,
    influx_url: str,
    database: str,
    state_dir: Path,
    start_ms: int,
    end_ms: int,
    console: Console,
    *,
    api_url: str = "http://127.0.0.1:8000",
) -> DemoAlerts:
    """Decide the window's alerts hour by hour (as the live engine would have), store them (SQLite in
    ``state_dir`` and the ``alert`` measurement), print the table; returns the counts."""
    settings = AlertSettings(influx=InfluxConnection(url=influx_url, database=database), state_dir=state_dir)
    out = DemoAlerts(store=settings.store_path)
    with AlertService(settings, manifest) as service:
        assert service.engine is not None
        engine: Engine = service.engine
        client = service.client
        for lo in range(start_ms, end_ms, DAY_MS):
            hi = min(lo + DAY_MS, end_ms)
            points = read_points(client, lo - 1, hi - 1)
            out.report.add(replay(engine, points, read_statuses(client, lo - 1, hi - 1), lo, hi))
        service.sync_influx()
        assert service.store is not None
        alerts = service.store.all_alerts()
    out.suppressed = out.report.suppressed
    faulty = {(a["device"], a["sensor"]) for a in alerts if a["rule"] == "device.sensor_fault"}
    for a in alerts:
        out.by_city_kind[(a["city"], a["kind"])] += 1
    out.on_fault_sensors = len(faulty)
    table = Table(title="pilotwatch demo: alerts per city and kind")
    kinds = [k.value for k in AlertKind]
    table.add_column("city")
    for kind in kinds:
        table.add_column(kind, justify="right")
    for city in manifest.cities:
        table.add_row(city.name, *(f"{out.by_city_kind[(city.id, k)]:,}" for k in kinds))
    table.add_section()
    table.add_row("all", *(f"{sum(v for (_, k), v in out.by_city_kind.items() if k == kind):,}" for kind in kinds))
    console.print(table)
    console.print(
        f"QC gate: {out.suppressed:,} readings flagged FAIL or labelled fault were kept from pollution and limit "
        f"alerts; {len(faulty)} sensor(s) raised a device alert for the operators instead."
    )
    console.print(
        f"Alert inbox: {api_url}/inbox once the API serves this home (below); alerts store {settings.store_path}"
    )
    return out
