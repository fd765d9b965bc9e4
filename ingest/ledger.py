"""The gap ledger: per device, which sequence numbers are safely stored, which are missing, what was recovered.

Each ingest worker keeps a :class:`Ledger` in memory and saves it to ``<state_dir>/ledger-<worker>.json``
(atomically) after every batch is safe and before that batch is acknowledged to anyone. A sequence number enters
the ledger only once its readings are safe (written to InfluxDB or spooled to ingest's disk: ``stored``), or once
the message was refused as a whole and kept in the dead-letter store (``refused``, kept apart: it is settled, so
the device may forget it, but it is not stored and never raises the highest seq). The ledger never claims what is
not kept, and a crash cannot leave it missing a number the edge has already deleted on ingest's word.

:func:`read_ledger` merges the files of all workers of a state folder (with a shared subscription each worker
sees only some of a device's messages) and needs no running ingest, so ``pilotwatch ingest ledger`` reads it
directly; everyone else (the API) reads its published form, the ``delivery`` measurement (:mod:`ingest.delivery`).
Sequence numbers start at 0 (wire contract: ``stored_through`` is -1 before anything is stored).
For each device it reports: stored, missing (not stored, at or below the highest number stored or announced by
the device's status), recovered (arrived after a higher number had been stored, i.e. a gap that closed), what the
device says it still buffers and its oldest unsent sample.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.clock import Bucket, add_lag, offset_ms

LEDGER_VERSION = 1
MAX_GAPS_SHOWN = 20


class SeqSet:
    """A set of non-negative integers kept as sorted, disjoint, non-adjacent inclusive ranges."""

    __slots__ = ("_highs", "_lows")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._lows: list[int] = []
        self._highs: list[int] = []
        for low, high in ranges:
            self.add_range(low, high)

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self._lows, seq) - 1
        return i >= 0 and seq <= self._highs[i]

    def __len__(self) -> int:
        return sum(h - l + 1 for l, h in zip(self._lows, self._highs, strict=True))  # noqa: E741

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._lows, self._highs, strict=True))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeqSet) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return list(self)

    @property
    def highest(self) -> int:
        return self._highs[-1] if self._highs else -1

    def add(self, seq: int) -> bool:
        """Add one number; True when it was not there before."""
        highs = self._highs
        if highs and seq == highs[-1] + 1:  # the common case: the next number in order
            highs[-1] = seq
            return True
        if seq in self:
            return False
        self.add_range(seq, seq)
        return True

    def add_range(self, low: int, high: int) -> None:
        if low > high or low < 0:
            raise ValueError(f"range [{low}, {high}] must have 0 <= low <= high")
        lows, highs = self._lows, self._highs
        # First range that could touch [low, high] (ends at or after low - 1) and the last that starts by high + 1.
        i = bisect.bisect_left(highs, low - 1)
        j = bisect.bisect_right(lows, high + 1)
        if i < j:
            low = min(low, lows[i])
            high = max(high, highs[j - 1])
        lows[i:j] = [low]
        highs[i:j] = [high]

    def update(self, other: SeqSet) -> None:
        for low, high in other:
            self.add_range(low, high)

    def through(self, origin: int = 0) -> int:
        """Highest n such that every number in origin..n is present; origin - 1 when origin itself is missing."""
        if self._lows and self._lows[0] <= origin <= self._highs[0]:
            return self._highs[0]
        return origin - 1

    def above(self, seq: int) -> list[tuple[int, int]]:
        """The ranges (clipped) holding numbers greater than ``seq``."""
        out = []
        for low, high in self:
            if high > seq:
                out.append((max(low, seq + 1), high))
        return out

    def gaps(self, origin: int, high: int) -> list[tuple[int, int]]:
        """Missing ranges within origin..high."""
        out: list[tuple[int, int]] = []
        cursor = origin
        for low, top in self:
            if top < cursor:
                continue
            if low > high:
                break
            if low > cursor:
                out.append((cursor, min(low - 1, high)))
            cursor = top + 1
        if cursor <= high:
            out.append((cursor, high))
        return out


def compress(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted inclusive ranges of the given numbers."""
    out: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


@dataclass
class DeviceRecord:
    """One device's mutable entry in a worker's ledger."""

    stored: SeqSet = field(default_factory=SeqSet)
    refused: SeqSet = field(default_factory=SeqSet)
    """Seqs of messages refused as a whole and kept as dead letters: the device may forget them, but they are not
    stored, so they neither raise the highest seq nor count as stored or recovered."""
    recovered: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    last_seen_ms: int | None = None
    last_sent_ms: int | None = None
    newest_sample_ms: int | None = None
    device_last_seq: int | None = None
    device_buffered: int | None = None
    device_oldest_unsent_ms: int | None = None
    device_state: str | None = None
    status_ms: int | None = None
    clock_lags: list[Bucket] = field(default_factory=list)
    """The clock-offset window (:mod:`ingest.clock`): (bucket start, smallest ``received - sent``) on ingest's clock."""
    clock_window_ms: int | None = None
    clock_checked_ms: int | None = None
    """Receive time of the newest message the clock was measured on (stored, or refused for a future ``sent``)."""

    def time_clock(self, received_ms: int, lag_ms: int, window_ms: int) -> None:
        """Take one batch's smallest lag of this device into its clock-offset window."""
        self.clock_lags = add_lag(self.clock_lags, received_ms, lag_ms, window_ms)
        self.clock_window_ms = window_ms
        self.clock_checked_ms = max(self.clock_checked_ms or received_ms, received_ms)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in self.__dict__.items() if k not in ("stored", "refused")}
        out["stored"] = [list(r) for r in self.stored]
        out["refused"] = [list(r) for r in self.refused]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeviceRecord:
        values = dict(data)
        stored = SeqSet((int(a), int(b)) for a, b in values.pop("stored", []))
        refused = SeqSet((int(a), int(b)) for a, b in values.pop("refused", []))
        lags = [(int(a), int(b)) for a, b in values.pop("clock_lags", [])]
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(stored=stored, refused=refused, clock_lags=lags, **known)

    def settled(self) -> SeqSet:
        """Stored or refused: every seq the device may forget."""
        if not self.refused.ranges:
            return self.stored
        out = SeqSet(self.stored)
        out.update(self.refused)
        return out


@dataclass(frozen=True, slots=True)
class DeviceLedger:
    """What the ledger says about one device (merged over workers)."""

    device: str
    stored: int
    stored_through: int
    highest_stored: int
    missing: int
    gaps: tuple[tuple[int, int], ...]
    recovered: int
    duplicates: int
    dead_lettered: int
    buffered_on_device: int | None
    oldest_unsent_ms: int | None
    device_last_seq: int | None
    device_state: str | None
    last_seen_ms: int | None
    newest_sample_ms: int | None
    clock_offset_ms: int | None = None
    """The device clock minus ingest's, ms (:func:`ingest.clock.offset_ms` over the merged window)."""
    clock_checked_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in self.__slots__}
        out["gaps"] = [list(g) for g in self.gaps]
        return out


class Ledger:
    """A worker's ledger. Not thread-safe: the service calls it from its writer thread only."""

    def __init__(self, path: Path | None = None, worker: str = "ingest") -> None:
        self.path = path
        self.worker = worker
        self.devices: dict[str, DeviceRecord] = {}
        if path is not None and path.exists():
            self.devices = _load(path)

    def record(self, device: str) -> DeviceRecord:
        rec = self.devices.get(device)
        if rec is None:
            rec = self.devices[device] = DeviceRecord()
        return rec

    def mark_stored(self, device: str, seq: int) -> bool:
        """Record that ``seq`` is safe; True if new. A new number below the highest stored closes a gap."""
        rec = self.record(device)
        below = seq < rec.stored.highest
        added = rec.stored.add(seq)
        if added and below:
            rec.recovered += 1
        return added

    def mark_refused(self, device: str, seq: int) -> bool:
        """Record that message ``seq`` was refused as a whole (and dead-lettered); True if new. A seq already stored
        stays stored: a later bad copy does not undo it."""
        rec = self.record(device)
        if seq in rec.stored or not rec.refused.add(seq):
            return False
        rec.dead_lettered += 1
        return True

    def settled_through(self, device: str) -> int:
        """Highest n such that every seq 0..n is stored or refused: what an end-to-end ack may say."""
        rec = self.devices.get(device)
        return rec.settled().through(0) if rec is not None else -1

    def is_stored(self, device: str, seq: int) -> bool:
        rec = self.devices.get(device)
        return rec is not None and seq in rec.stored

    def stored_through(self, device: str) -> int:
        rec = self.devices.get(device)
        return rec.stored.through(0) if rec is not None else -1

    def save(self) -> None:
        if self.path is None:
            return
        data = {
            "version": LEDGER_VERSION,
            "worker": self.worker,
            "saved_ms": int(time.time() * 1000),
            "devices": {d: rec.to_json() for d, rec in sorted(self.devices.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        tmp.replace(self.path)

    def view(self) -> list[DeviceLedger]:
        return summarize({d: [rec] for d, rec in self.devices.items()})


def _load(path: Path) -> dict[str, DeviceRecord]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the ledger file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != LEDGER_VERSION:
        raise ValueError(f"{path} is not a version {LEDGER_VERSION} ingest ledger")
    return {d: DeviceRecord.from_json(rec) for d, rec in data.get("devices", {}).items()}


def ledger_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.glob("ledger-*.json"))
    return [path] if path.exists() else []


def read_ledger(path: str | Path) -> list[DeviceLedger]:
    """The merged ledger of one state folder (all workers) or one ledger file, without a running ingest."""
    per_device: dict[str, list[DeviceRecord]] = {}
    for file in ledger_files(Path(path)):
        for device, rec in _load(file).items():
            per_device.setdefault(device, []).append(rec)
    return summarize(per_device)


def _latest(recs: list[DeviceRecord], name: str) -> Any:
    """The value of ``name`` from the record with the newest status (workers may have seen different ones)."""
    best = max(recs, key=lambda r: r.status_ms or -1)
    return getattr(best, name)


def _clock_offset(recs: list[DeviceRecord]) -> int | None:
    """The offset over the buckets of every worker (with a shared subscription each saw some of the messages)."""
    windows = [r.clock_window_ms for r in recs if r.clock_window_ms]
    if not windows:
        return None
    return offset_ms((b for r in recs for b in r.clock_lags), max(windows))


def summarize(per_device: dict[str, list[DeviceRecord]]) -> list[DeviceLedger]:
    out = []
    for device, recs in sorted(per_device.items()):
        stored = SeqSet()
        settled = SeqSet()
        for rec in recs:
            stored.update(rec.stored)
            settled.update(rec.refused)
        settled.update(stored)
        device_last_seq = _latest(recs, "device_last_seq")
        # Refused seqs fill holes (they are accounted for, as dead letters) but never raise the high-water mark.
        high = max(stored.highest, device_last_seq if device_last_seq is not None else -1)
        gaps = settled.gaps(0, high) if high >= 0 else []
        missing = sum(b - a + 1 for a, b in gaps)

        def _max(name: str, recs: list[DeviceRecord] = recs) -> int | None:
            values = [getattr(r, name) for r in recs if getattr(r, name) is not None]
            return max(values) if values else None

        out.append(
            DeviceLedger(
                device=device,
                stored=len(stored),
                stored_through=stored.through(0),
                highest_stored=stored.highest,
                missing=missing,
                gaps=tuple(gaps[:MAX_GAPS_SHOWN]),
                recovered=sum(r.recovered for r in recs),
                duplicates=sum(r.duplicates for r in recs),
                dead_lettered=sum(r.dead_lettered for r in recs),
                buffered_on_device=_latest(recs, "device_buffered"),
                oldest_unsent_ms=_latest(recs, "device_oldest_unsent_ms"),
                device_last_seq=device_last_seq,
                device_state=_latest(recs, "device_state"),
                last_seen_ms=_max("last_seen_ms"),
                newest_sample_ms=_max("newest_sample_ms"),
                clock_offset_ms=_clock_offset(recs),
                clock_checked_ms=_max("clock_checked_ms"),
            )
        )
    return out
