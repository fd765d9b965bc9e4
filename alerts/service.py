"""The live alert engine: every ``interval_s`` read the trailing window from InfluxDB (readings with their ``qc``,
device statuses, and the ``delivery`` points ingest wrote since the last pass), run one engine pass, write changed
alerts back as ``alert`` points.

Restart-safe by construction: the engine's state lives in the store and a pass is one transaction, so after a
``kill -9`` the next pass re-reads the window and decides only what was not yet decided (the state machine
ignores what it has seen; a re-decided episode has the same id and the unique constraint drops it). ``alert``
points are written after the commit and marked synced; a crash between the two rewrites them next pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from alerts.engine import Engine, PassReport, alert_lines
from alerts.settings import AlertSettings
from alerts.source import read_deliveries, read_points, read_statuses
from alerts.store import AlertStore
from pilotwatch.influx_writer import raise_for_write
from pilotwatch.manifest import Manifest
from pilotwatch.outage import OutageEvent, ride_through

DELIVERY_MARGIN_MS = 60_000
"""``delivery`` points are re-read this far behind the last pass: they are stamped by ingest as it writes them, so
one lands in InfluxDB well within a minute of its time (re-reading one changes nothing)."""


class InfluxClient(Protocol):
    def query(self, q: str, epoch: str = "ms") -> list[dict[str, Any]]: ...

    def write_lines(self, lines: Any, precision: str = "ms") -> httpx.Response: ...

    def close(self) -> None: ...


def influx_client(settings: AlertSettings) -> InfluxClient:
    return settings.influx.client()


class AlertService:
    def __init__(
        self,
        settings: AlertSettings,
        manifest: Manifest,
        *,
        client_factory: Callable[[AlertSettings], InfluxClient] = influx_client,
        clock: Callable[[], float] = time.time,
        on_outage: Callable[[OutageEvent], None] = lambda _event: None,
    ) -> None:
        self.settings = settings
        self.on_outage = on_outage
        self.manifest = manifest
        self._client_factory = client_factory
        self._clock = clock
        self._client: InfluxClient | None = None
        self.store: AlertStore | None = None
        self.engine: Engine | None = None
        self._warm = False
        self._deliveries_read_ms: int | None = None

    def open(self) -> None:
        if self.engine is not None:
            return
        self._client = self._client_factory(self.settings)
        self.store = AlertStore(self.settings.store_path)
        self.engine = Engine(self.manifest, self.store, self.settings.rules)

    @property
    def client(self) -> InfluxClient:
        if self._client is None:
            raise RuntimeError("the alert service is not open; call open() first")
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.store is not None:
            self.store.close()
        self._client, self.store, self.engine = None, None, None
        self._warm = False
        self._deliveries_read_ms = None

    def __enter__(self) -> AlertService:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def step(self) -> PassReport:
        """One pass up to now."""
        self.open()
        assert self.engine is not None
        assert self._client is not None
        assert self.store is not None
        now = int(self._clock() * 1000)
        window = round(self.settings.read_window_s * 1000)
        since = now - window
        points = read_points(self._client, since, now)
        if not self._warm:
            # The first pass after a start also replays the history rolling statistics need (their series only).
            for param, sites, context_ms in self.engine.warmups():
                points += read_points(self._client, since - context_ms, since, param=param, sites=sites)
        statuses = read_statuses(self._client, since, now)
        # Ingest writes a delivery point per talking device every 10 s: after the first pass only the new ones; the
        # first reads back max_gap_s (older evidence could not continue an episode: the machine restarts after it).
        if self._deliveries_read_ms is None:
            after = max(since, now - round(self.settings.rules.max_gap_s * 1000))
        else:
            after = max(since, self._deliveries_read_ms - DELIVERY_MARGIN_MS)
        deliveries = read_deliveries(self._client, after, now)
        report = self.engine.process(points, statuses, now, deliveries)
        self._deliveries_read_ms = now
        self._warm = True
        self.sync_influx()
        return report

    def sync_influx(self) -> int:
        """Write alerts changed since their last write as ``alert`` points; return how many."""
        assert self.store is not None
        assert self._client is not None
        rows = self.store.unsynced()
        if not rows:
            return 0
        raise_for_write(self._client.write_lines(alert_lines(rows), precision="ms"), "alert points")
        self.store.mark_synced([(r["alert_id"], r["updated_ms"]) for r in rows])
        return len(rows)

    def run_forever(self, stop: threading.Event, on_pass: Callable[[PassReport], None] | None = None) -> int:
        """Pass every ``interval_s`` until ``stop`` is set, riding through InfluxDB outages: a pass that failed
        is simply run again (its decisions are committed or not at all; unsynced alerts are written next time)."""
        with self:
            while not stop.is_set():
                started = self._clock()
                report = ride_through(self.step, stop, on_event=self.on_outage)
                if report is not None and on_pass is not None:
                    on_pass(report)
                stop.wait(max(0.0, self.settings.interval_s - (self._clock() - started)))
        return 0
