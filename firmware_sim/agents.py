"""Simulated agents in one process: the whole fleet of a manifest on a simulated clock, against a real broker.

:func:`run_fleet` is what ``pilotwatch demo`` calls. Every device gets a real :class:`~edge.agent.EdgeAgent`
(its own SQLite buffer under ``buffer_dir``, its own MQTT connection) fed by :mod:`firmware_sim` drivers on a
:class:`~edge.clock.SimulatedClock` of its own. One thread steps all clocks through ``[start_ms, end_ms)`` in
chunks, as fast as the pipeline takes it: a device whose buffer holds more than ``max_backlog`` unformed readings
waits, and simulated time never passes the wall clock (past ``now`` it follows the wall clock). Then it pumps
until every reading is acknowledged end to end, or ``drain_timeout_s`` passes, and returns per-device counts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.agent import ClientFactory, EdgeAgent, paho_client
from edge.buffer import SqliteBuffer
from edge.clock import SimulatedClock, SystemClock
from edge.sampler import Sampler
from edge.settings import EdgeSettings
from firmware_sim.fleet import SimulatedDevice, SimulatedFleet
from pilotwatch.manifest import Manifest


@dataclass(frozen=True, slots=True)
class DeviceCounts:
    device: str
    sampled: int  # readings stored in the buffer by this run
    published: int  # readings published for the first time by this run
    acknowledged: int  # readings deleted by end-to-end acks during this run
    dropped: int  # readings the full buffer had to drop during this run
    held: int  # readings still in the buffer at the end (0 when everything was delivered)
    resent: int  # messages re-sent after an ack timeout or a restart


@dataclass(frozen=True, slots=True)
class FleetProgress:
    sim_ms: int
    start_ms: int
    end_ms: int
    sampled: int
    acknowledged: int
    held: int

    @property
    def fraction(self) -> float:
        return min(1.0, (self.sim_ms - self.start_ms) / max(1, self.end_ms - self.start_ms))


def simulated_agent(
    settings: EdgeSettings,
    device: SimulatedDevice,
    start_ms: int,
    *,
    client_factory: ClientFactory = paho_client,
) -> EdgeAgent:
    """An agent for one simulated device with its clock at ``start_ms`` (or after its last stored slot)."""
    buffer = SqliteBuffer(
        settings.buffer_path(device.id), capacity=settings.max_buffer_readings, min_free_mb=settings.min_free_disk_mb
    )
    slots = buffer.last_slots()
    clock = SimulatedClock(start_ms)
    sampler = Sampler(
        device.device, device.drivers(clock), clock, stamp_clock=device.device_clock(clock), resume_after=slots
    )
    return EdgeAgent(
        settings,
        sampler,
        buffer,
        client_factory=client_factory,
        battery_pct=device.battery_pct,
        signal_dbm=device.signal_dbm,
    )


def drive(
    agents: Iterable[EdgeAgent],
    end_ms: int,
    *,
    stop: threading.Event | None = None,
    chunk_ms: int = 3_600_000,
    max_backlog: int = 20_000,
    drain_timeout_s: float | None = 300.0,
    progress: Callable[[FleetProgress], None] | None = None,
    progress_every_s: float = 0.5,
) -> bool:
    """Sample simulated agents through ``[their clock, end_ms)`` and pump until all is acknowledged; True when
    everything was.

    ``drain_timeout_s`` None keeps pumping after the end until ``stop`` is set (a simulated device that stays up).
    """
    agents = list(agents)
    if not agents:
        raise ValueError("drive() needs at least one agent")
    stop = stop or threading.Event()
    start_ms = min(a.clock.now_ms() for a in agents)
    added0 = {a.device_id: a.buffer.stats().added for a in agents}
    acked0 = {a.device_id: a.buffer.stats().acked for a in agents}
    wall = SystemClock()
    last_progress = 0.0

    def report(sim_ms: int, *, final: bool = False) -> None:
        nonlocal last_progress
        if progress is None or (not final and time.monotonic() - last_progress < progress_every_s):
            return
        last_progress = time.monotonic()
        stats = [a.buffer.stats() for a in agents]
        progress(
            FleetProgress(
                sim_ms=sim_ms,
                start_ms=start_ms,
                end_ms=end_ms,
                sampled=sum(s.added - added0[a.device_id] for a, s in zip(agents, stats, strict=True)),
                acknowledged=sum(s.acked - acked0[a.device_id] for a, s in zip(agents, stats, strict=True)),
                held=sum(s.depth for s in stats),
            )
        )

    last = end_ms - 1  # the window is [start, end): a slot at end_ms belongs to the next window
    while not stop.is_set():
        behind = [a for a in agents if a.clock.now_ms() < last]
        if not behind:
            break
        moved = False
        for agent in behind:
            if agent.buffer.unformed >= max_backlog:
                continue  # the pipeline is behind: let it catch up before sampling more
            target = min(agent.clock.now_ms() + chunk_ms, last, wall.now_ms())
            if target > agent.clock.now_ms():
                agent.sample(until_ms=target)
                moved = True
        for agent in agents:
            agent.pump()
        report(min(a.clock.now_ms() for a in agents))
        if not moved:
            stop.wait(0.005)
    deadline = None if drain_timeout_s is None else time.monotonic() + drain_timeout_s
    while not stop.is_set():
        for agent in agents:
            agent.pump()
        report(end_ms)
        if drain_timeout_s is not None and all(a.idle for a in agents):
            break
        if deadline is not None and time.monotonic() > deadline:
            break
        stop.wait(0.01)
    report(end_ms, final=True)
    return all(a.idle for a in agents)


def run_fleet(  # noqa: PLR0917 - the positional signature `pilotwatch demo` calls
    manifest: Manifest,
    mqtt_host: str,
    mqtt_port: int,
    buffer_dir: Path,
    start_ms: int,
    end_ms: int,
    seed: int,
    progress: Callable[[FleetProgress], None] | None = None,
    *,
    devices: Iterable[str] | None = None,
    drain_timeout_s: float = 300.0,
    client_factory: ClientFactory = paho_client,
    **settings: Any,
) -> dict[str, DeviceCounts]:
    """Run every device (or ``devices``) of ``manifest`` from ``start_ms`` to ``end_ms`` of simulated time.

    ``settings`` are extra :class:`~edge.settings.EdgeSettings` values for every agent (e.g. ``ack_timeout_s``).
    Returns per-device counts; ``held`` > 0 means the drain timed out with readings still unacknowledged.
    """
    if end_ms <= start_ms:
        raise ValueError(f"end_ms {end_ms} must be after start_ms {start_ms}")
    fleet = SimulatedFleet(manifest, seed)
    wanted = list(devices) if devices is not None else [d.id for d in fleet.devices]
    agents: list[EdgeAgent] = []
    try:
        for device_id in wanted:
            device_settings = EdgeSettings(
                device=device_id, mqtt_host=mqtt_host, mqtt_port=mqtt_port, buffer_dir=buffer_dir, **settings
            )
            agents.append(
                simulated_agent(device_settings, fleet.device(device_id), start_ms, client_factory=client_factory)
            )
        before = {a.device_id: a.buffer.stats() for a in agents}
        for agent in agents:
            agent.start()
        drive(agents, end_ms, drain_timeout_s=drain_timeout_s, progress=progress)
        counts = {}
        for agent in agents:
            stats, first = agent.buffer.stats(), before[agent.device_id]
            counts[agent.device_id] = DeviceCounts(
                device=agent.device_id,
                sampled=stats.added - first.added,
                published=agent.counters.published_readings,
                acknowledged=stats.acked - first.acked,
                dropped=stats.dropped - first.dropped,
                held=stats.depth,
                resent=agent.counters.resent_messages,
            )
        return counts
    finally:
        for agent in agents:
            agent.stop()
            agent.sampler.close()
            agent.buffer.close()
