"""``pilotwatch sim run|truth|schedule``: a device's real edge agent on simulated sensors, the simulator's ground
truth, and its schedule of events and faults.

``sim run --device ID --seed N`` is ``pilotwatch edge run`` with :mod:`firmware_sim` drivers in place of the Pi's
buses: in real time, or with ``--sim-start`` on a simulated clock from that moment to ``--sim-end`` (default:
now) as fast as the pipeline allows, then delivering until stopped (or, with ``--exit-when-delivered``, until
every reading is acknowledged).
"""

from __future__ import annotations

import argparse
import datetime as dt
import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edge.agent import EdgeAgent
from edge.cli import agent_arguments, edge_settings, manifest_device, open_buffer, run_agent
from edge.clock import SystemClock
from edge.sampler import Sampler
from firmware_sim.agents import drive, simulated_agent
from firmware_sim.fleet import SimulatedFleet, write_truth
from pilotwatch.common_cli import common_settings, moment


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sim", help="simulated sensors: a device's agent on them, ground truth, fault/event schedule"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="one device's edge agent on simulated sensors")
    agent_arguments(run)
    run.add_argument("--seed", type=int, default=0, help="seed of the simulation (default 0)")
    run.add_argument("--sim-start", type=moment, default=None, help="simulate from this time on a fast clock")
    run.add_argument("--sim-end", type=moment, default=None, help="end of the simulated window (default: now)")
    run.add_argument("--exit-when-delivered", action="store_true", help="with --sim-start: exit once all is acked")
    run.set_defaults(handler=_run)
    truth = actions.add_parser("truth", help="write the ground truth of every sample to CSV or Parquet")
    _window(truth)
    truth.add_argument("--out", type=Path, required=True, help="a .csv or .parquet file")
    truth.add_argument("--device", action="append", default=None, help="only this device (repeatable)")
    truth.set_defaults(handler=_truth)
    schedule = actions.add_parser("schedule", help="list the events and faults of a window")
    _window(schedule)
    schedule.set_defaults(handler=_schedule)


def _run(args: argparse.Namespace) -> int:
    settings = edge_settings(args)
    manifest, _ = manifest_device(args, settings)
    device = SimulatedFleet(manifest, args.seed).device(settings.device)
    if args.sim_start is None:
        if args.exit_when_delivered or args.sim_end is not None:
            raise ValueError("--sim-end and --exit-when-delivered need --sim-start (a simulated clock)")
        clock = SystemClock()
        buffer = open_buffer(settings)
        sampler = Sampler(
            device.device,
            device.drivers(clock),
            clock,
            stamp_clock=device.device_clock(clock),
            resume_after=buffer.last_slots(),
        )
        agent = EdgeAgent(settings, sampler, buffer, battery_pct=device.battery_pct, signal_dbm=device.signal_dbm)
        return run_agent(agent, args.verbose)
    end = args.sim_end if args.sim_end is not None else SystemClock().now_ms()
    drain_timeout_s = 1e9 if args.exit_when_delivered else None

    def until_delivered(agent: EdgeAgent, stop: threading.Event) -> int:
        done = drive([agent], end, stop=stop, drain_timeout_s=drain_timeout_s)
        return 0 if done or not args.exit_when_delivered else 1

    return run_agent(simulated_agent(settings, device, args.sim_start), args.verbose, until_delivered)


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
