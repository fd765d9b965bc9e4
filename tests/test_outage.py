"""Riding through an InfluxDB outage (pilotwatch.outage): what is retried, how long it waits, when it gives up."""

from __future__ import annotations

import threading

import httpx
import pytest

from pilotwatch.influx import InfluxQueryError, InfluxUnavailableError
from pilotwatch.outage import Outage, OutageEvent, Recovery, ride_through


class Flaky:
    """Fails with ``error`` the first ``failures`` calls, then returns how many calls it took."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.calls


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), InfluxUnavailableError("503 from InfluxDB")],
    ids=["refused", "timeout", "5xx"],
)
def test_an_outage_is_waited_out_with_doubling_waits_and_a_reset_after_each_failure(error: Exception) -> None:
    attempt, events, resets = Flaky(5, error), [], []
    waits: list[float] = []

    class Clockless(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(float(timeout or 0))
            return False

    result = ride_through(
        attempt,
        Clockless(),
        reset=lambda: resets.append(1),
        on_event=events.append,
        first_wait_s=1,
        longest_wait_s=4,
    )
    outages = [e for e in events if isinstance(e, Outage)]
    recoveries = [e for e in events if isinstance(e, Recovery)]
    assert events == [*outages, *recoveries]  # every failed try first, the recovery last
    assert result == 6
    assert waits == [1, 2, 4, 4, 4]
    assert len(resets) == 5
    assert [o.failures for o in outages] == [1, 2, 3, 4, 5]
    assert all(o.error is error for o in outages)
    assert len(recoveries) == 1
    assert recoveries[0].failures == 5
    assert "InfluxDB unavailable" in outages[0].describe("analytics")
    assert "next try in 1 s" in outages[0].describe("analytics")


def test_a_stop_during_an_outage_returns_none_without_another_try() -> None:
    attempt = Flaky(100, httpx.ConnectError("refused"))
    stop = threading.Event()
    stop.set()
    assert ride_through(attempt, stop, first_wait_s=0.01) is None
    assert attempt.calls == 1


@pytest.mark.parametrize(
    "error", [InfluxQueryError("InfluxQL error: bad statement"), ValueError("a bug")], ids=["bad-query", "bug"]
)
def test_errors_that_are_not_an_outage_stop_the_service(error: Exception) -> None:
    attempt = Flaky(1, error)
    with pytest.raises(type(error)):
        ride_through(attempt, threading.Event(), first_wait_s=0.01)
    assert attempt.calls == 1


def test_no_recovery_is_reported_when_nothing_failed() -> None:
    events: list[OutageEvent] = []
    assert ride_through(lambda: "done", threading.Event(), on_event=events.append) == "done"
    assert events == []


def test_waits_must_be_positive_and_ordered() -> None:
    with pytest.raises(ValueError, match="first_wait_s"):
        ride_through(lambda: 1, threading.Event(), first_wait_s=5, longest_wait_s=1)
