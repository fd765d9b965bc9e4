"""``pilotwatch sim truth|schedule``: the simulator's ground truth and its schedule of events and faults."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edge.cli import moment
from firmware_sim.fleet import SimulatedFleet, write_truth
from pilotwatch.common_cli import common_settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("sim", help="simulated sensors: ground truth and fault/event schedule")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    truth = actions.add_parser("truth", help="write the ground truth of every sample to CSV or Parquet")
    _window(truth)
    truth.add_argument("--out", type=Path, required=True, help="a .csv or .parquet file")
    truth.add_argument("--device", action="append", default=None, help="only this device (repeatable)")
    truth.set_defaults(handler=_truth)
    schedule = actions.add_parser("schedule", help="list the events and faults of a window")
    _window(schedule)
    schedule.set_defaults(handler=_schedule)


def _window(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", type=moment, required=True, help="ISO time (UTC without offset)")
    parser.add_argument("--end", type=moment, required=True)
    parser.add_argument("--seed", type=int, default=0)


def _fleet(args: argparse.Namespace) -> SimulatedFleet:
    if args.end <= args.start:
        raise ValueError("--end must be after --start")
    return SimulatedFleet(common_settings(args).load_manifest(), args.seed)


def _truth(args: argparse.Namespace) -> int:
    count = write_truth(_fleet(args).truth(args.start, args.end, args.device), args.out)
    Console().print(f"{count:,} ground-truth rows written to {args.out}")
    return 0


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="minutes")


def _schedule(args: argparse.Namespace) -> int:
    fleet = _fleet(args)
    table = Table(title=f"events and faults, seed {args.seed}")
    for column in ("site", "what", "device / sensor", "start (UTC)", "hours", "magnitude"):
        table.add_column(column)
    for site_id, model in fleet.sites.items():
        for event in model.events_between(args.start, args.end):
            hours = (event.end_ms - event.start_ms) / 3.6e6
            table.add_row(
                site_id,
                f"event:{event.kind}",
                event.device or "(site)",
                _iso(event.start_ms),
                f"{hours:.1f}",
                f"{event.magnitude:.2f}",
            )
    for fault in fleet.faults(args.start, args.end):
        site = fleet.device(fault.device).site.site.id
        hours = (fault.end_ms - fault.start_ms) / 3.6e6
        table.add_row(
            site,
            f"fault:{fault.kind.value}",
            f"{fault.device}/{fault.sensor or '*'}",
            _iso(fault.start_ms),
            f"{hours:.1f}",
            f"{fault.magnitude:.2f}",
        )
    Console().print(table)
    return 0
