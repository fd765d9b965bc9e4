"""Ingest's published delivery state: the gap ledger as ``delivery`` points in InfluxDB, the documented interface
through which anyone else (the API, dashboards) reads it. Nobody outside ingest opens ingest's files.

What is written (schema: ``Measurement.DELIVERY`` in :mod:`pilotwatch.schema`; prose: docs/wire-format.md,
"Storage"): one point per device, tags city/site/device, time = when it was published, fields = the merged view of
:func:`ingest.ledger.read_ledger` over the worker's state folder (all workers that share it): stored,
stored_through, highest_stored, missing, gaps (JSON, the first ranges), recovered, duplicates, dead_lettered,
buffered_on_device, oldest_unsent_ms, device_last_seq, device_state, last_seen_ms, newest_sample_ms,
clock_offset_ms (the device clock minus ingest's, :mod:`ingest.clock`) and clock_checked_ms (when it was last
measured: the device was heard then, even if that message was refused for its time stamp). A device's
newest point is its current state (``SELECT * FROM delivery WHERE device = '...' ORDER BY time DESC LIMIT 1``).

When: the writer thread publishes every ``delivery_interval_s`` the devices whose view changed since the last
publication, and every device once more at shutdown. A failed write is tried again at the next interval (the
ledger files stay the source of truth, so nothing is lost by waiting).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ingest.ledger import DeviceLedger, read_ledger
from pilotwatch.influx_writer import Outcome, Writer
from pilotwatch.schema import FieldValue, Measurement, line

Placement = Mapping[str, tuple[str, str]]
"""device -> (city, site)."""


def delivery_line(view: DeviceLedger, city: str, site: str, t_ms: int) -> str:
    """The ``delivery`` point of one device's merged ledger view."""
    fields: dict[str, FieldValue | None] = {
        "stored": view.stored,
        "stored_through": view.stored_through,
        "highest_stored": view.highest_stored,
        "missing": view.missing,
        "gaps": json.dumps([list(g) for g in view.gaps], separators=(",", ":")),
        "recovered": view.recovered,
        "duplicates": view.duplicates,
        "dead_lettered": view.dead_lettered,
        "buffered_on_device": view.buffered_on_device,
        "oldest_unsent_ms": view.oldest_unsent_ms,
        "device_last_seq": view.device_last_seq,
        "device_state": view.device_state,
        "last_seen_ms": view.last_seen_ms,
        "newest_sample_ms": view.newest_sample_ms,
        "clock_offset_ms": view.clock_offset_ms,
        "clock_checked_ms": view.clock_checked_ms,
    }
    return line(Measurement.DELIVERY, {"city": city, "site": site, "device": view.device}, fields, t_ms)


class DeliveryPublisher:
    """Owned by the writer thread; publishes what changed."""

    def __init__(self, state_dir: Path, placement: Placement, writer: Writer) -> None:
        self.state_dir = state_dir
        self.placement = placement
        self.writer = writer
        self._published: dict[str, DeviceLedger] = {}
        self.points = 0
        self.failures = 0

    def publish(self, t_ms: int, *, everything: bool = False) -> bool:
        """Write the changed (or all) devices' points; True when InfluxDB took them (or nothing was due)."""
        try:
            views = read_ledger(self.state_dir)
        except ValueError:
            # A ledger file another worker is replacing, or a damaged one: `ingest ledger` shows it; try later.
            self.failures += 1
            return False
        due = [v for v in views if v.device in self.placement and (everything or self._published.get(v.device) != v)]
        if not due:
            return True
        lines = [delivery_line(v, *self.placement[v.device], t_ms) for v in due]
        result = self.writer.write(lines)
        if result.outcome is not Outcome.OK:
            self.failures += 1
            return False
        for view in due:
            self._published[view.device] = view
        self.points += len(lines)
        return True
