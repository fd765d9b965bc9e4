"""``pilotwatch manifest check|show``: validate a manifest and list what it describes."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from pilotwatch.common_cli import common_settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("manifest", help="validate the pilot manifest and show its sites and devices")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("check", help="validate; exit 2 with every problem listed").set_defaults(handler=_check)
    actions.add_parser("show", help="table of cities, sites, devices and sensors").set_defaults(handler=_show)


def _check(args: argparse.Namespace) -> int:
    manifest = common_settings(args).load_manifest()
    devices = sum(1 for _ in manifest.iter_devices())
    Console().print(f"manifest ok: {len(manifest.cities)} cities, {devices} devices")
    return 0


def _show(args: argparse.Namespace) -> int:
    manifest = common_settings(args).load_manifest()
    table = Table(title=manifest.programme.name)
    for column in ("city", "site", "kind", "role", "device", "sensors"):
        table.add_column(column)
    for city, site, device in manifest.iter_devices():
        sensors = ", ".join(f"{s.id}({s.unit})" for s in device.sensors)
        table.add_row(city.name, site.id, site.kind.value, site.role.value, device.id, sensors)
    Console().print(table)
    return 0
