"""``pilotwatch edge run|buffer``: run the agent of one device, or look into its buffer.

``edge run --device ID`` reads the device from the manifest and its local settings from ``--config`` (TOML) and
``PILOTWATCH_EDGE_*``; drivers talk to the Pi's buses. ``--simulate --seed N`` swaps the drivers for
:mod:`firmware_sim` sensors: in real time, or with ``--sim-start`` on a simulated clock from that moment to
``--sim-end`` (default: now) as fast as the pipeline allows, then delivering until stopped (or, with
``--exit-when-delivered``, until every reading is acknowledged). SIGTERM / Ctrl-C stop it cleanly (status
``offline``); anything harder loses nothing, because the buffer is on disk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from edge.agent import EdgeAgent
from edge.buffer import SqliteBuffer
from edge.clock import SystemClock
from edge.drivers import Hardware, build_driver
from edge.fleet import drive, simulated_agent
from edge.sampler import Sampler
from edge.settings import EdgeSettings, load_edge_settings
from firmware_sim.fleet import SimulatedFleet
from pilotwatch.common_cli import common_settings


def moment(text: str) -> int:
    """argparse type: an ISO 8601 time (UTC when no offset is given) → epoch ms."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO time like 2026-05-01T00:00, got {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("edge", help="run an edge agent, or inspect its store-and-forward buffer")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="sample, buffer on disk and publish for one device")
    _common(run)
    run.add_argument("--simulate", action="store_true", help="simulated sensors (firmware_sim) instead of hardware")
    run.add_argument("--seed", type=int, default=0, help="seed of the simulation (default 0)")
    run.add_argument("--sim-start", type=moment, default=None, help="simulate from this time on a fast clock")
    run.add_argument("--sim-end", type=moment, default=None, help="end of the simulated window (default: now)")
    run.add_argument("--exit-when-delivered", action="store_true", help="with --sim-start: exit once all is acked")
    run.add_argument("--verbose", "-v", action="store_true")
    run.set_defaults(handler=_run)
    buffer = actions.add_parser("buffer", help="depth, oldest unsent reading and counters of a device's buffer")
    _common(buffer)
    buffer.set_defaults(handler=_buffer)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", required=True, help="device id from the manifest")
    parser.add_argument("--config", type=Path, default=None, help="local TOML settings (edge/local.sample.toml)")
    parser.add_argument("--mqtt-host", default=None)
    parser.add_argument("--mqtt-port", type=int, default=None)
    parser.add_argument("--buffer-dir", type=Path, default=None, help="default: <home>/edge")


def _settings(args: argparse.Namespace) -> EdgeSettings:
    settings = load_edge_settings(
        args.config, device=args.device, mqtt_host=args.mqtt_host, mqtt_port=args.mqtt_port, buffer_dir=args.buffer_dir
    )
    if "buffer_dir" not in settings.model_fields_set:
        settings = settings.model_copy(update={"buffer_dir": common_settings(args).home / "edge"})
    return settings


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
        format="%(message)s",
    )
    common = common_settings(args)
    manifest = common.load_manifest()
    settings = _settings(args)
    placement = manifest.device_index().get(settings.device)
    if placement is None:
        raise ValueError(f"device {settings.device!r} is not in the manifest {common.manifest or '(default)'}")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    hardware: Hardware | None = None
    if args.simulate:
        device = SimulatedFleet(manifest, args.seed).device(settings.device)
        if args.sim_start is not None:
            agent = simulated_agent(settings, device, args.sim_start)
        else:
            clock = SystemClock()
            buffer = _open_buffer(settings)
            sampler = Sampler(
                device.device,
                device.drivers(clock),
                clock,
                stamp_clock=device.device_clock(clock),
                resume_after=buffer.last_slots(),
            )
            agent = EdgeAgent(settings, sampler, buffer, battery_pct=device.battery_pct, signal_dbm=device.signal_dbm)
    else:
        if args.sim_start is not None:
            raise ValueError("--sim-start needs --simulate: real sensors cannot be read in the past")
        hardware = Hardware.linux(settings.i2c_bus, settings.counters, settings.w1_dir)
        drivers = {s.id: build_driver(s, hardware) for s in placement.device.sensors}
        buffer = _open_buffer(settings)
        clock = SystemClock()
        agent = EdgeAgent(settings, Sampler(placement.device, drivers, clock, resume_after=buffer.last_slots()), buffer)
    agent.start()
    try:
        if args.simulate and args.sim_start is not None:
            end = args.sim_end if args.sim_end is not None else SystemClock().now_ms()
            done = drive([agent], end, stop=stop, drain_timeout_s=None if not args.exit_when_delivered else 1e9)
            return 0 if done or not args.exit_when_delivered else 1
        agent.run(stop)
        return 0
    finally:
        agent.stop()
        agent.sampler.close()
        agent.buffer.close()
        if hardware is not None:
            hardware.close()


def _open_buffer(settings: EdgeSettings) -> SqliteBuffer:
    return SqliteBuffer(
        settings.buffer_path(), capacity=settings.max_buffer_readings, min_free_mb=settings.min_free_disk_mb
    )


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="seconds")


def _buffer(args: argparse.Namespace) -> int:
    settings = _settings(args)
    path = settings.buffer_path()
    if not path.exists():
        raise ValueError(f"no buffer for {settings.device!r} at {path}")
    with SqliteBuffer(path, capacity=settings.max_buffer_readings) as buffer:
        stats = buffer.stats()
    table = Table(title=f"buffer of {settings.device} ({path})", show_header=False)
    rows = [
        ("depth (readings not yet acknowledged)", f"{stats.depth:,}"),
        ("  of which not yet in a message", f"{stats.unformed:,}"),
        ("messages awaiting acknowledgement", f"{stats.messages:,}"),
        ("oldest unsent reading", _when(stats.oldest_unsent_ms)),
        ("last seq", str(stats.last_seq)),
        ("added", f"{stats.added:,}"),
        ("acknowledged", f"{stats.acked:,}"),
        ("dropped (buffer full), readings", f"{stats.dropped:,}"),
        ("  of which in whole messages", f"{stats.dropped_messages:,} messages"),
        ("capacity", f"{settings.max_buffer_readings:,} readings"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
    return 0
