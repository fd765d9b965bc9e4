"""How far each device's clock is from ingest's: a robust estimate from the ``sent`` stamp of every message.

In: per message, ingest's receive time and the message's ``sent`` (the device clock when it published; an edge
stamps it at every publish, so a buffer replayed after an outage carries a fresh ``sent`` and old sample times).
Out: the device clock's offset from ingest's clock, ms (positive: the device is ahead), published as the
``delivery`` field ``clock_offset_ms``.

Why the minimum: with ``theta`` the true offset and ``d >= 0`` the time from publish to receipt (network, broker,
ingest's own queue), each message gives ``lag = received - sent = d - theta``. Delay only ever adds, so the
smallest lag over a window is the best evidence, and ``offset = -min(lag)`` is ``theta - d_min``: never more than
the true offset and short of it by the smallest transit time in the window (well under a second on a healthy
link, where the alert threshold is minutes). One message delayed by a broker queue (ingest down, a redelivery)
therefore cannot look like a clock that is behind; a window in which *every* message was delayed can, which is
why the window is minutes long and the alert needs the offset to hold for a duration.

The window runs on ingest's receive time and is kept as :data:`BUCKETS` buckets, each holding the smallest lag
received in it, so the memory per device is fixed whatever the message rate, and the state is a short JSON list
in the gap ledger (:mod:`ingest.ledger`). A clock that jumps *ahead* shows at the next message (its lag is the
new minimum); one that jumps *back*, or one set right after running ahead, shows once the buckets from before the
change have left the window (a lag that grows is, message by message, indistinguishable from a slower link).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

DEFAULT_WINDOW_S = 600.0
"""Ten minutes: longer than a broker queue drains after a short ingest restart, shorter than the alert's duration
(``device.clock_off`` in docs/alerts.md)."""
BUCKETS = 10
"""Buckets per window: the window slides in steps of a tenth of its length."""

Bucket = tuple[int, int]
"""(bucket start, smallest lag received in it), ms on ingest's clock."""


def bucket_ms(window_ms: int) -> int:
    if window_ms < BUCKETS:
        raise ValueError(f"the clock window must be at least {BUCKETS} ms, got {window_ms}")
    return window_ms // BUCKETS


def add_lag(buckets: Sequence[Bucket], received_ms: int, lag_ms: int, window_ms: int) -> list[Bucket]:
    """The buckets after one message received at ``received_ms`` with ``lag_ms = received - sent``; buckets that
    left the window (starting ``window_ms`` or more before the newest bucket's start) are dropped."""
    width = bucket_ms(window_ms)
    start = received_ms - received_ms % width
    newest = max([start, *(s for s, _ in buckets)])
    out = [b for b in buckets if b[0] > newest - window_ms]
    for i, (s, low) in enumerate(out):
        if s == start:
            out[i] = (s, min(low, lag_ms))
            return out
    out.append((start, lag_ms))
    out.sort()
    return out


def offset_ms(buckets: Iterable[Bucket], window_ms: int) -> int | None:
    """The device clock's offset (ms, positive = ahead) over the window ending at the newest bucket: minus the
    smallest lag in it; None before any message."""
    items = list(buckets)
    if not items:
        return None
    newest = max(s for s, _ in items)
    return -min(low for s, low in items if s > newest - window_ms)
