"""``pilotwatch dashboards build --out DIR`` and ``pilotwatch dashboards push --url URL --token TOKEN``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from grafana_client.client import GrafanaException
from rich.console import Console

from dashboards.build import write_all
from dashboards.push import PushSettings, close, connect, push
from pilotwatch.common_cli import common_settings

DEFAULT_OUT = Path("deploy/grafana/dashboards")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("dashboards", help="build Grafana dashboards from the manifest, or push them")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="write one JSON file per dashboard")
    build.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder (default {DEFAULT_OUT})")
    build.set_defaults(handler=_build)
    push_parser = actions.add_parser("push", help="create/update the datasource, folder and dashboards in Grafana")
    push_parser.add_argument("--url", default=None, help="Grafana URL (env PILOTWATCH_DASHBOARDS_GRAFANA_URL)")
    push_parser.add_argument("--token", default=None, help="service-account token (env ..._GRAFANA_TOKEN)")
    push_parser.add_argument("--influx-url", default=None, help="InfluxDB URL as Grafana reaches it")
    push_parser.add_argument("--influx-database", default=None, help="InfluxQL database (2.x: the DBRP name)")
    push_parser.add_argument("--influx-token", default=None, help="InfluxDB read token (env ..._INFLUX_TOKEN)")
    push_parser.set_defaults(handler=_push)


def _build(args: argparse.Namespace) -> int:
    manifest = common_settings(args).load_manifest()
    written = write_all(manifest, args.out)
    Console().print(f"wrote {len(written)} dashboards to {args.out}: {', '.join(p.name for p in written)}")
    return 0


def _push(args: argparse.Namespace) -> int:
    overrides = {
        name: value
        for name, value in (
            ("grafana_url", args.url),
            ("grafana_token", args.token),
            ("influx_url", args.influx_url),
            ("influx_database", args.influx_database),
            ("influx_token", args.influx_token),
        )
        if value is not None
    }
    settings = PushSettings(**overrides)
    manifest = common_settings(args).load_manifest()
    grafana = connect(settings)
    try:
        report = push(grafana, manifest, settings)
    except GrafanaException as exc:
        raise ValueError(f"Grafana at {settings.grafana_url} refused the push: {exc}") from None
    finally:
        close(grafana)
    Console().print(
        f"Grafana {settings.grafana_url}: datasource {report.datasource}, folder {report.folder}, "
        f"{len(report.dashboards)} dashboards pushed"
    )
    return 0
