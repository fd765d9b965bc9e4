"""``pilotwatch stack up|down|status``: the one-machine Mosquitto + InfluxDB stack."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from commands.stack import LocalStack, load_stack
from pilotwatch.common_cli import common_settings, port
from pilotwatch.settings import StackConfig


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("stack", help="start, stop or inspect the local Mosquitto + InfluxDB")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="start both services and wait until they answer")
    up.add_argument("--mqtt-port", type=port, default=1883)
    up.add_argument("--influx-port", type=port, default=8086)
    up.add_argument("--influx-rpc-port", type=port, default=8088)
    up.add_argument("--database", default="pilotwatch")
    up.set_defaults(handler=_up)
    actions.add_parser("down", help="stop both services").set_defaults(handler=_down)
    actions.add_parser("status", help="show whether each service runs and answers").set_defaults(handler=_status)


def _up(args: argparse.Namespace) -> int:
    settings = common_settings(args)
    config = StackConfig(
        root=settings.stack_root.resolve(),
        mqtt_port=args.mqtt_port,
        influx_port=args.influx_port,
        influx_rpc_port=args.influx_rpc_port,
        database=args.database,
    )
    LocalStack(config).up()
    Console().print(
        f"stack up: MQTT {config.mqtt_url}, InfluxDB {config.influx_url} (database {config.database}), "
        f"data in {config.root}"
    )
    return 0


def _down(args: argparse.Namespace) -> int:
    root = common_settings(args).stack_root.resolve()
    if not (root / "stack.json").exists():
        Console().print(f"no stack in {root}")
        return 0
    stopped = load_stack(root).down()
    Console().print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


def status_rows(stack: LocalStack) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, info in stack.status().items():
        state = (
            "[green]answers[/]" if info["answers"] else ("[yellow]running[/]" if info["running"] else "[red]down[/]")
        )
        rows.append((name, str(info["pid"] or "-"), str(info["port"]), state))
    return rows


def _status(args: argparse.Namespace) -> int:
    root = common_settings(args).stack_root.resolve()
    console = Console()
    if not (root / "stack.json").exists():
        console.print(f"no stack in {root}; start one with `pilotwatch stack up`")
        return 1
    stack = load_stack(root)
    table = Table(title=f"pilotwatch stack in {root}")
    for column in ("service", "pid", "port", "state"):
        table.add_column(column)
    rows = status_rows(stack)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    # Ingest runs beside the stack, not inside it: its line informs but does not change the exit code.
    from ingest.cli import health_summary, state_dir  # noqa: PLC0415

    console.print(health_summary(state_dir(args)), highlight=False)
    return 0 if all("answers" in row[3] for row in rows) else 1
