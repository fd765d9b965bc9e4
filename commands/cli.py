"""The ``pilotwatch`` command. Each package contributes its subcommands through a ``register(subparsers)``
function in its ``cli`` module; this module only assembles them and turns known errors into clean exits."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from rich.console import Console

from commands.stack import StackError
from pilotwatch import __version__
from pilotwatch.manifest import ManifestError
from pilotwatch.wire import WireError

# One line per package that adds commands. Order is the order of `pilotwatch --help`.
COMMAND_MODULES = (
    "commands.stack_cli",
    "commands.manifest_cli",
    "commands.demo",
    "api.cli",
    "dashboards.cli",
    "commands.deploy_cli",
    "ingest.cli",
    "firmware_sim.cli",
    "edge.cli",
    "analytics.cli",
    "commands.alerts_cli",
    "commands.evaluation_cli",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pilotwatch", description="Monitor city pilots: sensors, ingest, QC, alerts and evaluation."
    )
    parser.add_argument("--version", action="version", version=f"pilotwatch {__version__}")
    parser.add_argument(
        "--home",
        default=None,
        help="folder of the local stack and edge buffers (env PILOTWATCH_HOME, default .pilotwatch)",
    )
    parser.add_argument(
        "--manifest", default=None, help="pilot manifest YAML (env PILOTWATCH_MANIFEST, default: the shipped one)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    err = Console(stderr=True)
    try:
        return handler(args)
    except (ManifestError, StackError, WireError, ValueError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
