"""Ingest's counters and their Prometheus view.

:class:`Stats` is plain counters updated by the service's threads (each counter has one writer thread, so no
lock is needed for increments; readers may see a value one update old). :class:`StatsCollector` turns a
snapshot into Prometheus metric families at scrape time, so /metrics and the status file never disagree.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass
class Stats:
    messages: int = 0
    readings_received: int = 0
    readings_written: int = 0
    readings_spooled: int = 0
    readings_drained: int = 0
    statuses_written: int = 0
    messages_rejected: Counter[str] = field(default_factory=Counter)
    readings_rejected: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    write_batches: int = 0
    write_retries: int = 0
    write_rejected_lines: int = 0
    acks_published: int = 0
    lag_s: float = 0.0
    """Seconds from the device's send time of the newest message in the last safe batch to that batch being safe."""
    connected: bool = False
    connected_since: float | None = None
    last_message_at: float | None = None
    fatal: str | None = None
    spool_pending_batches: int = 0
    spool_pending_bytes: int = 0
    device_last_seen: dict[str, float] = field(default_factory=dict)
    conflict_checks_skipped: int = 0
    """Messages stored without the conflicting-sample check because InfluxDB could not be asked."""
    deadletters_dropped: int = 0
    """Dead letters deleted to keep the store within its retention and size bounds."""
    heartbeats: dict[str, float] = field(default_factory=dict)
    """Per thread, the unix time it last went round its loop (each thread beats at least every second)."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def beat(self, thread: str, now: float | None = None) -> None:
        self.heartbeats[thread] = time.time() if now is None else now

    def last_progress_at(self) -> float | None:
        """The oldest of the threads' last heartbeats: when the slowest thread last made progress."""
        beats = list(self.heartbeats.values())
        return min(beats) if beats else None

    def stale(self, stale_after_s: float, now: float | None = None) -> bool:
        """A thread has not gone round its loop for ``stale_after_s``: stuck, or dead."""
        last = self.last_progress_at()
        if last is None:
            return False
        now = time.time() if now is None else now
        return now - last > stale_after_s

    def silent(self, silence_after_s: float, now: float | None = None) -> bool:
        """Connected but nothing arrived for ``silence_after_s`` (a broken subscription or a dead fleet)."""
        if not self.connected:
            return False
        now = time.time() if now is None else now
        since = max(self.last_message_at or 0.0, self.connected_since or 0.0)
        return now - since > silence_after_s

    def snapshot(self, silence_after_s: float, stale_after_s: float = 60.0) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "readings_received": self.readings_received,
            "readings_written": self.readings_written,
            "readings_spooled": self.readings_spooled,
            "readings_drained": self.readings_drained,
            "statuses_written": self.statuses_written,
            "messages_rejected": dict(self.messages_rejected),
            "readings_rejected": dict(self.readings_rejected),
            "rejected_total": sum(self.messages_rejected.values()) + sum(self.readings_rejected.values()),
            "duplicates": self.duplicates,
            "write_batches": self.write_batches,
            "write_retries": self.write_retries,
            "write_rejected_lines": self.write_rejected_lines,
            "acks_published": self.acks_published,
            "lag_s": round(self.lag_s, 3),
            "connected": self.connected,
            "silent": self.silent(silence_after_s),
            "last_message_at": self.last_message_at,
            "fatal": self.fatal,
            "spool_pending_batches": self.spool_pending_batches,
            "spool_pending_bytes": self.spool_pending_bytes,
            "device_last_seen": dict(self.device_last_seen),
            "conflict_checks_skipped": self.conflict_checks_skipped,
            "deadletters_dropped": self.deadletters_dropped,
            "last_progress_at": self.last_progress_at(),
            "stale": self.stale(stale_after_s),
        }


class StatsCollector(Collector):
    def __init__(self, stats: Stats, worker: str, silence_after_s: float, stale_after_s: float = 60.0) -> None:
        self.stats = stats
        self.worker = worker
        self.silence_after_s = silence_after_s
        self.stale_after_s = stale_after_s

    def collect(self) -> Iterator[Metric]:
        s = self.stats.snapshot(self.silence_after_s, self.stale_after_s)
        w = [self.worker]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(f"pilotwatch_ingest_{name}", doc, labels=["worker"])
            family.add_metric(w, value)
            return family

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"pilotwatch_ingest_{name}", doc, labels=["worker"])
            family.add_metric(w, value)
            return family

        yield counter("messages", "MQTT messages received", s["messages"])
        yield counter("readings_received", "readings that passed validation", s["readings_received"])
        yield counter(
            "readings_written",
            "readings written to InfluxDB (directly or drained from the spool)",
            s["readings_written"],
        )
        yield counter(
            "readings_spooled", "readings put in the disk spool while InfluxDB was unreachable", s["readings_spooled"]
        )
        yield counter(
            "duplicates", "re-sent messages recognised by (device, seq) and not written again", s["duplicates"]
        )
        yield counter("write_retries", "InfluxDB writes that will be retried (429, 5xx, timeouts)", s["write_retries"])
        yield counter("acks_published", "end-to-end acknowledgements published to devices", s["acks_published"])
        rejected = CounterMetricFamily(
            "pilotwatch_ingest_rejected",
            "messages and readings dead-lettered, by reason",
            labels=["worker", "level", "reason"],
        )
        for reason, n in sorted(s["messages_rejected"].items()):
            rejected.add_metric([self.worker, "message", reason], n)
        for reason, n in sorted(s["readings_rejected"].items()):
            rejected.add_metric([self.worker, "reading", reason], n)
        yield rejected
        yield gauge("connected", "1 while connected to the broker", 1.0 if s["connected"] else 0.0)
        yield gauge("silent", "1 while connected but receiving nothing", 1.0 if s["silent"] else 0.0)
        yield gauge("fatal", "1 after a fatal error (ingest stopped writing)", 1.0 if s["fatal"] else 0.0)
        yield gauge(
            "last_progress_seconds",
            "unix time the slowest ingest thread last went round its loop (liveness)",
            s["last_progress_at"] or 0.0,
        )
        yield gauge("stale", "1 while a thread has made no progress for stale_after_s", 1.0 if s["stale"] else 0.0)
        yield counter(
            "conflict_checks_skipped",
            "messages stored without the conflicting-sample check (InfluxDB could not be asked)",
            s["conflict_checks_skipped"],
        )
        yield counter(
            "deadletters_dropped", "dead letters deleted by retention or the size bound", s["deadletters_dropped"]
        )
        yield gauge("lag_seconds", "device send time to safely stored, newest batch", s["lag_s"])
        yield gauge("spool_pending_batches", "batches waiting in the disk spool", s["spool_pending_batches"])
        yield gauge("spool_pending_bytes", "bytes waiting in the disk spool", s["spool_pending_bytes"])
        seen = GaugeMetricFamily(
            "pilotwatch_ingest_device_last_seen_seconds",
            "unix time of the last message per device",
            labels=["worker", "device"],
        )
        for device, when in sorted(s["device_last_seen"].items()):
            seen.add_metric([self.worker, device], when)
        yield seen
