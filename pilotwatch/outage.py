"""Riding through an InfluxDB outage: the services that read and write InfluxDB in passes (analytics, the alert
engine) keep running while it is away, instead of dying and leaving the restart to a supervisor.

The contract: a pass either completes or changes nothing that is not already durable. Analytics' QC state is
checkpointed after each window it writes, so a pass that failed half-way is undone by ``reset`` (drop what is in
memory, reopen from the checkpoint) and done again; the alert engine commits its decisions to SQLite and keeps
alerts InfluxDB has not yet taken as unsynced rows, so it needs no reset. Only "InfluxDB is away" is ridden
through (:func:`pilotwatch.influx.is_unavailable`: refused or timed-out connections, 429 and 5xx answers); a
refused query or write is a bug or a misconfiguration and still stops the service with its message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pilotwatch.influx import is_unavailable

T = TypeVar("T")

FIRST_WAIT_S = 1.0
"""The first wait after a failed pass; it doubles on every further failure up to :data:`LONGEST_WAIT_S`."""

LONGEST_WAIT_S = 60.0
"""The longest wait between two tries: a city's InfluxDB back after a restart is seen within a minute."""


@dataclass(frozen=True, slots=True)
class Outage:
    """How an outage went so far, for the service's log line."""

    error: BaseException
    failures: int
    down_s: float
    next_try_s: float

    def describe(self, service: str) -> str:
        reason = f"{type(self.error).__name__}: {str(self.error)[:200]}"
        return (
            f"{service}: InfluxDB unavailable ({reason}); try {self.failures} failed, down {self.down_s:.0f} s, "
            f"next try in {self.next_try_s:g} s. Nothing is lost: the pass resumes from what is stored."
        )


@dataclass(frozen=True, slots=True)
class Recovery:
    failures: int
    down_s: float

    def describe(self, service: str) -> str:
        return f"{service}: InfluxDB is back after {self.down_s:.0f} s and {self.failures} failed tries"


OutageEvent = Outage | Recovery
"""What :func:`ride_through` reports: each failed try, and the end of the outage. Both say ``describe(service)``."""


def ride_through(
    attempt: Callable[[], T],
    stop: threading.Event,
    *,
    reset: Callable[[], None] = lambda: None,
    on_event: Callable[[OutageEvent], None] = lambda _event: None,
    first_wait_s: float = FIRST_WAIT_S,
    longest_wait_s: float = LONGEST_WAIT_S,
    monotonic: Callable[[], float] = time.monotonic,
) -> T | None:
    """``attempt()`` until it returns, waiting with doubling backoff while InfluxDB is unavailable; ``reset()``
    after each failed try. Returns ``None`` when ``stop`` is set during an outage. Other errors propagate."""
    if not 0 < first_wait_s <= longest_wait_s:
        raise ValueError(f"need 0 < first_wait_s <= longest_wait_s, got {first_wait_s} and {longest_wait_s}")
    failures = 0
    began = 0.0
    wait = first_wait_s
    while True:
        try:
            result = attempt()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            reset()
            if failures == 0:
                began = monotonic()
            failures += 1
            on_event(Outage(exc, failures, monotonic() - began, wait))
            if stop.wait(wait):
                return None
            wait = min(wait * 2, longest_wait_s)
            continue
        if failures:
            on_event(Recovery(failures, monotonic() - began))
        return result
