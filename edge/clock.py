"""Clocks: where the edge agent gets the time it stamps on readings and the time it schedules by.

``now_ms()`` is wall time in epoch milliseconds (UTC). A real Pi uses :class:`SystemClock`. The demo, the tests
and the benchmarks use :class:`SimulatedClock`, which only moves when told to, so a simulated day takes as long
as the pipeline needs, not a day. :class:`OffsetClock` shifts another clock by a time-dependent offset: that is how
the simulator models a real-time clock that jumps (the environment keeps the true time, the device stamps the
wrong one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall time, epoch milliseconds UTC."""
        ...


class SystemClock:
    """The machine's clock (NTP-disciplined on a Pi with network; see docs/raspberry-pi.md for the RTC)."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class SimulatedClock:
    """A clock that moves only through :meth:`advance_to` / :meth:`advance`. Thread-safe.

    ``wall_limit`` (default: on) refuses to move past the real wall clock, because ingest rejects readings
    stamped in the future; the demo simulates past days, never tomorrow.
    """

    def __init__(self, start_ms: int, *, wall_limit: bool = True) -> None:
        if start_ms < 0:
            raise ValueError(f"start_ms must be epoch milliseconds >= 0, got {start_ms}")
        self._now = int(start_ms)
        self._wall_limit = wall_limit
        self._lock = threading.Lock()
        if wall_limit and self._now > SystemClock().now_ms():
            raise ValueError(f"start_ms {start_ms} is in the future; a simulated clock never runs ahead of wall time")

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def advance_to(self, t_ms: int) -> None:
        """Move to ``t_ms``; moving backwards is an error (a simulated clock is monotonic)."""
        with self._lock:
            if t_ms < self._now:
                raise ValueError(f"cannot move a simulated clock back from {self._now} to {t_ms}")
            if self._wall_limit and t_ms > SystemClock().now_ms():
                raise ValueError(f"{t_ms} is ahead of the wall clock; a simulated clock never runs ahead of it")
            self._now = int(t_ms)

    def advance(self, delta_ms: int) -> None:
        if delta_ms < 0:
            raise ValueError(f"delta_ms must be >= 0, got {delta_ms}")
        self.advance_to(self.now_ms() + delta_ms)


class OffsetClock:
    """``base`` shifted by ``offset_ms(base_now)``: a device clock that can jump while true time flows on."""

    def __init__(self, base: Clock, offset_ms: Callable[[int], int]) -> None:
        self.base = base
        self._offset_ms = offset_ms

    def now_ms(self) -> int:
        now = self.base.now_ms()
        return now + self._offset_ms(now)
