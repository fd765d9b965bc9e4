"""``pilotwatch edge run|buffer``: run the agent of one device on its sensors, or look into its buffer.

``edge run --device ID`` reads the device from the manifest and its local settings from ``--config`` (TOML) and
``PILOTWATCH_EDGE_*``; drivers talk to the Pi's buses. SIGTERM / Ctrl-C stop it cleanly (status ``offline``);
anything harder loses nothing, because the buffer is on disk. The same agent on simulated sensors is
``pilotwatch sim run`` (:mod:`firmware_sim.cli`): the simulator plugs into the agent through the driver
interface, and this package never imports it. The helpers here (:func:`agent_arguments`, :func:`edge_settings`,
:func:`open_buffer`, :func:`run_agent`) are what both commands share.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from edge.agent import EdgeAgent
from edge.buffer import SqliteBuffer
from edge.clock import SystemClock
from edge.drivers import Hardware, build_driver
from edge.sampler import Sampler
from edge.settings import EdgeSettings, load_edge_settings
from pilotwatch.common_cli import common_settings
from pilotwatch.manifest import Device, Manifest


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("edge", help="run an edge agent, or inspect its store-and-forward buffer")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="sample, buffer on disk and publish for one device")
    agent_arguments(run)
    run.set_defaults(handler=_run)
    buffer = actions.add_parser("buffer", help="depth, oldest unsent reading and counters of a device's buffer")
    device_arguments(buffer)
    buffer.set_defaults(handler=_buffer)


def device_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags naming a device and where its agent connects and buffers."""
    parser.add_argument("--device", required=True, help="device id from the manifest")
    parser.add_argument("--config", type=Path, default=None, help="local TOML settings (edge/local.sample.toml)")
    parser.add_argument("--mqtt-host", default=None)
    parser.add_argument("--mqtt-port", type=int, default=None)
    parser.add_argument("--buffer-dir", type=Path, default=None, help="default: <home>/edge")


def agent_arguments(parser: argparse.ArgumentParser) -> None:
    device_arguments(parser)
    parser.add_argument("--verbose", "-v", action="store_true")


def edge_settings(args: argparse.Namespace) -> EdgeSettings:
    settings = load_edge_settings(
        args.config, device=args.device, mqtt_host=args.mqtt_host, mqtt_port=args.mqtt_port, buffer_dir=args.buffer_dir
    )
    if "buffer_dir" not in settings.model_fields_set:
        settings = settings.model_copy(update={"buffer_dir": common_settings(args).home / "edge"})
    return settings


def manifest_device(args: argparse.Namespace, settings: EdgeSettings) -> tuple[Manifest, Device]:
    """The manifest in force and the device the settings name in it (ValueError naming both if absent)."""
    common = common_settings(args)
    manifest = common.load_manifest()
    placement = manifest.device_index().get(settings.device)
    if placement is None:
        raise ValueError(f"device {settings.device!r} is not in the manifest {common.manifest or '(default)'}")
    return manifest, placement.device


def _run(args: argparse.Namespace) -> int:
    settings = edge_settings(args)
    _, device = manifest_device(args, settings)
    hardware = Hardware.linux(settings.i2c_bus, settings.counters, settings.w1_dir)
    try:
        drivers = {s.id: build_driver(s, hardware) for s in device.sensors}
        buffer = open_buffer(settings)
        clock = SystemClock()
        agent = EdgeAgent(settings, Sampler(device, drivers, clock, resume_after=buffer.last_slots()), buffer)
        return run_agent(agent, args.verbose)
    finally:
        hardware.close()


def run_agent(agent: EdgeAgent, verbose: bool, until: Callable[[EdgeAgent, threading.Event], int] | None = None) -> int:
    """Run ``agent`` until SIGTERM / Ctrl-C (or until ``until`` returns its exit code), then stop it cleanly."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
        format="%(message)s",
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    agent.start()
    try:
        if until is not None:
            return until(agent, stop)
        agent.run(stop)
        return 0
    finally:
        agent.stop()
        agent.sampler.close()
        agent.buffer.close()


def open_buffer(settings: EdgeSettings) -> SqliteBuffer:
    return SqliteBuffer(
        settings.buffer_path(), capacity=settings.max_buffer_readings, min_free_mb=settings.min_free_disk_mb
    )


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="seconds")


def _buffer(args: argparse.Namespace) -> int:
    settings = edge_settings(args)
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
