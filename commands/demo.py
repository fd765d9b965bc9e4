"""``pilotwatch demo``: a whole simulated pilot fleet, end to end, on one machine, in about a minute.

It starts the local stack (real Mosquitto and InfluxDB), runs ingest in this process, runs a simulated edge agent
for every device of the manifest on an accelerated clock (several simulated days straddling the intervention
start, so the data holds a baseline and an intervention period), waits until every reading is acknowledged end
to end, counts what InfluxDB holds, and prints a summary per city and site kind. The stack keeps running so the
data stays queryable; an evaluator key for the API is written on the way.
"""

from __future__ import annotations

import argparse
import datetime as dt
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from commands.stack import LocalStack, load_stack
from pilotwatch.common_cli import common_settings
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest, Role
from pilotwatch.settings import StackConfig, free_port

DAY_MS = 86_400_000


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run a simulated fleet of every pilot city end to end")
    parser.add_argument("--days", type=_positive_days, default=7.0, help="simulated days (default 7)")
    parser.add_argument(
        "--start",
        type=_date,
        default=None,
        help="first simulated day, YYYY-MM-DD (default: days/2 before the earliest intervention start)",
    )
    parser.add_argument("--seed", type=int, default=2026, help="simulation seed; same seed, same data")
    parser.set_defaults(handler=run)


def _positive_days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--days must be a number, got {text!r}") from None
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"--days must be in (0, 60], got {value}")
    return value


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--start must be a date YYYY-MM-DD, got {text!r}") from None


@dataclass(frozen=True)
class DemoWindow:
    start_ms: int
    end_ms: int


def demo_window(manifest: Manifest, days: float, start: dt.date | None, now_ms: int) -> DemoWindow:
    """The simulated time span: in the past (ingest refuses future timestamps), centred on the pilot switch."""
    if start is None:
        switch = min(site.periods.intervention.start for _, site in manifest.iter_sites())
        start_ms = int(dt.datetime.combine(switch, dt.time(), dt.UTC).timestamp() * 1000) - int(days * DAY_MS / 2)
    else:
        start_ms = int(dt.datetime.combine(start, dt.time(), dt.UTC).timestamp() * 1000)
    end_ms = start_ms + int(days * DAY_MS)
    if end_ms > now_ms:
        raise ValueError(
            f"the demo window ends {dt.datetime.fromtimestamp(end_ms / 1000, dt.UTC):%Y-%m-%d %H:%M} UTC, in the "
            "future; choose an earlier --start or fewer --days"
        )
    return DemoWindow(start_ms, end_ms)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _stack_for(root: Path) -> LocalStack:
    """Reuse the stack of this folder if there is one; otherwise the usual ports, or free ones if taken."""
    if (root / "stack.json").exists():
        return load_stack(root)
    mqtt, influx, rpc = (port if _port_is_free(port) else free_port() for port in (1883, 8086, 8088))
    return LocalStack(StackConfig(root=root, mqtt_port=mqtt, influx_port=influx, influx_rpc_port=rpc))


def run(args: argparse.Namespace) -> int:
    # Heavy parts are imported here so `pilotwatch --help` stays fast.
    from alerts.demo import run_alerts_for_demo  # noqa: PLC0415
    from analytics.service import evaluate_window  # noqa: PLC0415
    from api.keys import ApiKeyCreate, KeyStore  # noqa: PLC0415
    from firmware_sim.agents import FleetProgress, run_fleet  # noqa: PLC0415
    from ingest.service import IngestService  # noqa: PLC0415
    from ingest.settings import IngestSettings  # noqa: PLC0415

    console = Console()
    settings = common_settings(args)
    manifest = settings.load_manifest()
    home = settings.home.resolve()
    window = demo_window(manifest, args.days, args.start, int(time.time() * 1000))
    run_id = time.strftime("%Y%m%dT%H%M%S")

    stack = _stack_for(settings.stack_root.resolve())
    with console.status("starting Mosquitto and InfluxDB"):
        stack.up()
    config = stack.config
    console.print(f"[green]stack[/] MQTT {config.mqtt_url} · InfluxDB {config.influx_url} · data in {config.root}")

    ingest = IngestService(
        IngestSettings.for_local_stack(config, home / "ingest", "pilotwatch-demo-ingest", manifest=settings.manifest),
        manifest,
    )
    ingest.start()
    devices = sum(1 for _ in manifest.iter_devices())
    started = time.perf_counter()
    try:
        ingest.wait_connected(30)
        console.print(
            f"[green]ingest[/] running · simulating {devices} devices in {len(manifest.cities)} cities, "
            f"{args.days:g} days from {_fmt(window.start_ms)} UTC (seed {args.seed})"
        )
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[sim]}"),
            TextColumn("sampled {task.fields[sampled]:,} · acknowledged {task.fields[acked]:,}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("fleet", total=1.0, sim="", sampled=0, acked=0)

            def on_progress(p: FleetProgress) -> None:
                progress.update(task, completed=p.fraction, sim=_fmt(p.sim_ms), sampled=p.sampled, acked=p.acknowledged)

            counts = run_fleet(
                manifest,
                config.host,
                config.mqtt_port,
                home / "edge" / run_id,
                window.start_ms,
                window.end_ms,
                args.seed,
                on_progress,
            )
            progress.update(task, completed=1.0)
    finally:
        ingest.stop()
    elapsed = time.perf_counter() - started

    with InfluxV1(config.influx_url, config.database) as influx:
        stored = _stored_by_site(influx, window)
    _print_summary(
        console, manifest, counts=counts, stored=stored, rejected=ingest.stats.readings_rejected, elapsed_s=elapsed
    )

    with console.status("quality control, anomaly detection and fault/event labels over the stored readings"):
        qc_started = time.perf_counter()
        report = evaluate_window(
            manifest, config.influx_url, config.database, window.start_ms, window.end_ms, home / "analytics" / run_id
        )
    flags = report.flags
    console.print(
        f"QC in {time.perf_counter() - qc_started:.1f} s: {sum(flags.values()):,} readings flagged "
        f"(good {flags[1]:,}, not evaluated {flags[2]:,}, suspect {flags[3]:,}, fail {flags[4]:,}, "
        f"missing {flags[9]:,}); {report.anomalies:,} anomalous, labelled fault {report.labels['fault']:,} / "
        f"event {report.labels['event']:,}; written beside the readings as measurement 'qc'"
    )

    run_alerts_for_demo(
        manifest, config.influx_url, config.database, home / "alerts", window.start_ms, window.end_ms, console
    )

    keys_file = home / "api-keys.yaml"
    store = KeyStore(keys_file)
    name = f"demo-evaluator-{run_id}"
    _, key = store.add(ApiKeyCreate(name=name, role=Role.EVALUATOR, cities=("*",)), manifest)
    console.print(
        "\nThe stack keeps running. Serve the API on this data (its keys and InfluxDB come from --home):\n"
        f"  .venv/bin/pilotwatch --home {settings.home} api serve\n"
        f"  curl -H 'X-API-Key: {key}' http://127.0.0.1:8000/sites\n"
        f"Stop the stack with: .venv/bin/pilotwatch --home {settings.home} stack down"
    )
    held = sum(c.held for c in counts.values())
    return 0 if held == 0 else 1


def _fmt(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _stored_by_site(influx: InfluxV1, window: DemoWindow) -> dict[str, int]:
    rows = influx.query(
        f"SELECT count(value) FROM reading WHERE time >= {window.start_ms}ms AND time < {window.end_ms}ms "  # noqa: S608
        "GROUP BY site"
    )
    return {row["site"]: int(row["count"]) for row in rows}


def _print_summary(
    console: Console,
    manifest: Manifest,
    *,
    counts: dict[str, Any],
    stored: dict[str, int],
    rejected: Counter[str],
    elapsed_s: float,
) -> None:
    table = Table(title="pilotwatch demo: readings per city and site kind")
    for column in ("city", "kind", "devices", "sampled", "published", "acknowledged", "stored", "dropped"):
        table.add_column(column, justify="right" if column not in ("city", "kind") else "left")
    totals = Counter[str]()
    for city in manifest.cities:
        kinds = sorted({site.kind for site in city.sites})
        for kind in kinds:
            sites = [s for s in city.sites if s.kind is kind]
            device_ids = [d.id for s in sites for d in s.devices]
            row = Counter[str]()
            for device_id in device_ids:
                c = counts.get(device_id)
                if c is not None:
                    row.update(sampled=c.sampled, published=c.published, acknowledged=c.acknowledged, dropped=c.dropped)
            row["stored"] = sum(stored.get(s.id, 0) for s in sites)
            row["devices"] = len(device_ids)
            totals.update(row)
            table.add_row(
                city.name,
                kind.value,
                *(f"{row[k]:,}" for k in ("devices", "sampled", "published", "acknowledged", "stored", "dropped")),
            )
    table.add_section()
    table.add_row(
        "all",
        "",
        *(f"{totals[k]:,}" for k in ("devices", "sampled", "published", "acknowledged", "stored", "dropped")),
        style="bold",
    )
    console.print(table)
    rate = totals["stored"] / elapsed_s if elapsed_s > 0 else 0.0
    console.print(f"{totals['stored']:,} readings stored in {elapsed_s:.1f} s ({rate:,.0f} readings/s end to end)")
    if rejected:
        console.print(f"dead-lettered by ingest: {dict(rejected)} (see `pilotwatch ingest deadletter list`)")
