"""The conflicting-sample check: a new message must not silently overwrite a stored sample with another value.

A point's identity in InfluxDB is (measurement, tags, sample time), so a reading that re-uses a stored (device,
sensor, time) replaces the stored value. That is what makes a replay harmless, and it would also let a faulty or
hostile device rewrite history without a trace. :class:`SampleGuard` tells the two apart: the same value (and
flag) is an identical replay and is written as usual; another value is a conflict, which the intake stage
dead-letters as ``conflicting_sample`` with both values, and the stored one stays.

How it stays cheap (the hot path is a device streaming forward in time):

- Per device it keeps the samples this worker accepted recently, bounded to ``per_device``, and a *floor*: every
  stored sample newer than the floor was accepted by this worker and is kept. A message whose oldest sample is
  newer than the floor and than everything accepted so far is therefore new as a whole: one ``min`` and an append,
  no per-reading work (the kept samples are indexed by (sensor, time) only when a later message needs them).
- The floor starts at the newest sample InfluxDB holds for the device (one query, the first time the device is
  seen) and rises to the newest time of whatever is dropped to keep the bound.
- Only a reading at or below the floor that is not kept (a backlog replayed after a restart, say) needs InfluxDB:
  one query per message for the time span of those readings.

Limits, said plainly: two readings of the same sensor and time inside one message are not always compared (the message
is one seq, not a new one; the later line wins in InfluxDB). The cache is per worker, so with a shared
subscription a conflict between two messages that two different workers handled is caught only once the first is
in InfluxDB (it is then found by the query). When InfluxDB cannot answer, the check is skipped for that message
and counted (``conflict_checks_skipped``); the readings are stored as before, because refusing them would turn an
InfluxDB outage into lost data.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pilotwatch.influx import InfluxQueryError, InfluxV1, quote_literal
from pilotwatch.schema import Measurement

Sample = tuple[str, int, float, int | None]
"""(sensor, sample time ms, value, flag) of one reading about to be stored."""
Stored = tuple[float, int | None, int | None]
"""(value, flag, seq) of a stored sample."""


class SampleLookupError(RuntimeError):
    """InfluxDB could not be asked (down, timeout, error)."""


class StoredSamples(Protocol):
    """What the guard needs to know about InfluxDB's content (tests can hand it a dictionary)."""

    def newest(self, device: str) -> dict[str, int]:
        """Sensor -> newest stored sample time of the device; raises SampleLookupError when it cannot tell."""
        ...

    def between(self, device: str, start_ms: int, end_ms: int) -> dict[tuple[str, int], Stored]:
        """(sensor, time) -> stored sample of the device in [start_ms, end_ms]; SampleLookupError on failure."""
        ...


class InfluxSamples:
    """:class:`StoredSamples` over InfluxQL (the ``reading`` measurement of :mod:`pilotwatch.schema`)."""

    def __init__(self, influx: InfluxV1) -> None:
        self.influx = influx

    def _rows(self, q: str) -> list[dict[str, object]]:
        try:
            return self.influx.query(q, epoch="ms")
        except (InfluxQueryError, OSError, ValueError) as exc:  # httpx errors are OSError subclasses or ValueError
            raise SampleLookupError(str(exc)[:200]) from None
        except Exception as exc:  # noqa: BLE001 - httpx.HTTPError is neither; any failure means "cannot tell"
            raise SampleLookupError(f"{type(exc).__name__}: {str(exc)[:200]}") from None

    def newest(self, device: str) -> dict[str, int]:
        where = f"device = {quote_literal(device)}"
        rows = self._rows(f"SELECT last(value) FROM {Measurement.READING.value} WHERE {where} GROUP BY sensor")  # noqa: S608
        return {str(r["sensor"]): int(r["time"]) for r in rows}  # type: ignore[call-overload]

    def between(self, device: str, start_ms: int, end_ms: int) -> dict[tuple[str, int], Stored]:
        rows = self._rows(
            f"SELECT value, flag, seq FROM {Measurement.READING.value} WHERE device = {quote_literal(device)}"  # noqa: S608
            f" AND time >= {int(start_ms)}ms AND time <= {int(end_ms)}ms GROUP BY sensor"
        )
        out: dict[tuple[str, int], Stored] = {}
        for r in rows:
            flag, seq = r.get("flag"), r.get("seq")
            out[(str(r["sensor"]), int(r["time"]))] = (  # type: ignore[call-overload]
                float(r["value"]),  # type: ignore[arg-type]
                None if flag is None else int(flag),  # type: ignore[call-overload]
                None if seq is None else int(seq),  # type: ignore[call-overload]
            )
        return out

    def close(self) -> None:
        self.influx.close()


@dataclass(frozen=True, slots=True)
class Conflict:
    """Reading ``position`` (in the samples handed to :meth:`SampleGuard.check`) contradicts a stored sample."""

    position: int
    sensor: str
    t_ms: int
    value: float
    stored_value: float
    stored_seq: int | None

    def detail(self, seq: int) -> str:
        was = "an earlier message" if self.stored_seq is None else f"seq {self.stored_seq}"
        return (
            f"sensor {self.sensor!r} at t={self.t_ms} is already stored with value {self.stored_value!r} ({was});"
            f" seq {seq} says {self.value!r}: kept here, the stored value stays"
        )


NOT_STORED = -(2**62)  # the floor of a device InfluxDB holds nothing for


@dataclass
class _Device:
    floor: int | None = None  # None: InfluxDB not asked yet (or it could not answer)
    next_lookup: float = 0.0
    high: int = NOT_STORED  # the newest sample time this worker accepted from the device
    pending: deque[tuple[int, Sequence[Sample], int]] = field(default_factory=deque)  # (seq, samples, newest t)
    pending_samples: int = 0
    recent: dict[tuple[str, int], Stored] = field(default_factory=dict)  # the index, built on demand


class SampleGuard:
    """Per worker; used by the consumer thread only.

    Per device: a *floor* (every sample at or below it may be in InfluxDB without this worker knowing), the newest
    sample time accepted (*high*), and the samples accepted since, kept per message and indexed by (sensor, time)
    only when a reading at or below *high* needs them. A message whose oldest sample is newer than both floor and
    high (a device streaming forward: nearly every message) costs one ``min`` over its times and an append.
    """

    def __init__(
        self,
        stored: StoredSamples | None,
        *,
        per_device: int = 100_000,
        retry_lookup_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_device < 1:
            raise ValueError(f"per_device must be >= 1, got {per_device}")
        self.stored = stored
        self.per_device = per_device
        self.retry_lookup_s = retry_lookup_s
        self._monotonic = monotonic
        self._devices: dict[str, _Device] = {}
        self.queries = 0
        self.skipped = 0

    def check(self, device: str, seq: int, samples: Sequence[Sample]) -> list[Conflict]:
        """The conflicts among ``samples``; every other sample is remembered as stored from now on."""
        if self.stored is None or not samples:
            return []
        state = self._devices.get(device)
        if state is None:
            state = self._devices[device] = _Device()
        if state.floor is None and not self._lookup_floor(state, device):
            self.skipped += 1
            return []
        assert state.floor is not None
        oldest = min(s[1] for s in samples)
        if oldest > state.high and oldest > state.floor:
            newest = max(s[1] for s in samples)
            state.pending.append((seq, samples, newest))
            state.pending_samples += len(samples)
            state.high = newest
            self._bound(state)
            return []
        return self._check_slow(state, device, seq, samples)

    def _check_slow(self, state: _Device, device: str, seq: int, samples: Sequence[Sample]) -> list[Conflict]:
        self._index(state)
        assert state.floor is not None
        floor = state.floor
        recent = state.recent
        conflicts: list[Conflict] = []
        unknown: list[int] = []
        for position, (sensor, t, value, flag) in enumerate(samples):
            known = recent.get((sensor, t))
            if known is None:
                if t <= floor:
                    unknown.append(position)
                    continue
                recent[(sensor, t)] = (value, flag, seq)
            elif known[0] != value or known[1] != flag:
                conflicts.append(Conflict(position, sensor, t, value, known[0], known[2]))
        if unknown:
            conflicts.extend(self._check_in_influx(state, device, seq, samples, unknown))
            conflicts.sort(key=lambda c: c.position)
        state.high = max(state.high, *(s[1] for s in samples))
        self._bound(state)
        return conflicts

    def _lookup_floor(self, state: _Device, device: str) -> bool:
        now = self._monotonic()
        if now < state.next_lookup:
            return False
        assert self.stored is not None
        self.queries += 1
        try:
            newest = self.stored.newest(device)
        except SampleLookupError:
            state.next_lookup = now + self.retry_lookup_s
            return False
        state.floor = max(newest.values(), default=NOT_STORED)
        return True

    def _index(self, state: _Device) -> None:
        """Move the samples kept per message into the (sensor, time) index."""
        recent = state.recent
        while state.pending:
            seq, samples, _newest = state.pending.popleft()
            for sensor, t, value, flag in samples:
                recent.setdefault((sensor, t), (value, flag, seq))
        state.pending_samples = 0

    def _check_in_influx(
        self, state: _Device, device: str, seq: int, samples: Sequence[Sample], positions: list[int]
    ) -> list[Conflict]:
        assert self.stored is not None
        times = [samples[p][1] for p in positions]
        self.queries += 1
        try:
            stored = self.stored.between(device, min(times), max(times))
        except SampleLookupError:
            self.skipped += 1
            stored = {}
        out = []
        for position in positions:
            sensor, t, value, flag = samples[position]
            known = stored.get((sensor, t))
            if known is not None and (known[0] != value or known[1] != flag):
                out.append(Conflict(position, sensor, t, value, known[0], known[2]))
                state.recent[(sensor, t)] = known
            else:
                state.recent[(sensor, t)] = (value, flag, seq)
        return out

    def _bound(self, state: _Device) -> None:
        """Keep at most ``per_device`` samples: drop the oldest tenth (whole messages first, then index entries);
        the floor rises over everything dropped, so a dropped sample is asked of InfluxDB, never forgotten."""
        if state.pending_samples + len(state.recent) <= self.per_device:
            return
        assert state.floor is not None
        target = self.per_device - self.per_device // 10
        recent = state.recent
        while recent and state.pending_samples + len(recent) > target:
            key = next(iter(recent))
            del recent[key]
            state.floor = max(state.floor, key[1])
        while state.pending and state.pending_samples > target:
            _seq, samples, newest = state.pending.popleft()
            state.pending_samples -= len(samples)
            state.floor = max(state.floor, newest)
