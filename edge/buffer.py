"""The store-and-forward buffer: every reading stays on disk until ingest says it is stored.

In: readings from the sampler (:meth:`SqliteBuffer.add`). Out: messages with a fixed sequence number and a fixed
set of readings (:meth:`SqliteBuffer.form`, :meth:`SqliteBuffer.message`), deleted only by an end-to-end
acknowledgement (:meth:`SqliteBuffer.ack`). Guarantees:

- **Durable**: SQLite in WAL mode with ``synchronous=FULL``: a committed reading survives ``kill -9`` and power
  loss. A reading is committed in the same transaction that records its sensor's last sampled slot.
- **Stable messages**: a message's seq → readings assignment is written when the message is formed, so a re-send
  after a timeout or a restart carries the same seq and the same readings, and ingest's ledger sees its gap close.
- **Monotonic seq**: the next sequence number is stored beside the messages; it only increases, across restarts.
- **Bounded**: at most ``capacity`` readings (and no growth while the disk has less than ``min_free_mb`` free).
  When full, the OLDEST data goes: the oldest whole message (its seq is then never delivered and ingest reports
  the gap), else the oldest readings not yet in a message. Every dropped reading is counted in ``dropped``.
- **Counted**: ``added``, ``dropped``, ``acked`` (readings) and ``formed`` (messages) persist with the data, so
  ``added == depth + dropped + acked`` always holds.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pilotwatch.wire import AckMessage, Reading

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    t_ms INTEGER NOT NULL,
    sensor TEXT NOT NULL,
    param TEXT NOT NULL,
    value REAL NOT NULL,
    unit TEXT NOT NULL,
    flag INTEGER,
    msg_seq INTEGER
);
CREATE INDEX IF NOT EXISTS readings_by_message ON readings (msg_seq);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    n INTEGER NOT NULL,
    formed_t_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
COUNTERS = ("next_seq", "added", "dropped", "acked", "formed", "dropped_messages")


@dataclass(frozen=True, slots=True)
class BufferStats:
    depth: int  # readings not yet acknowledged end to end
    unformed: int  # readings not yet in a message
    messages: int  # formed messages not yet acknowledged
    oldest_unsent_ms: int | None  # sample time of the oldest reading still held
    last_seq: int  # -1 before the first message
    added: int
    dropped: int
    dropped_messages: int
    acked: int
    formed: int


@dataclass(frozen=True, slots=True)
class FormedMessage:
    seq: int
    readings: tuple[Reading, ...]


class SqliteBuffer:
    def __init__(self, path: Path, *, capacity: int = 2_000_000, min_free_mb: float = 0.0) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1 reading, got {capacity}")
        if min_free_mb < 0:
            raise ValueError(f"min_free_mb must be >= 0, got {min_free_mb}")
        self.path = path
        self.capacity = capacity
        self.min_free_mb = min_free_mb
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._counters: dict[str, int] = {}
        self._unformed = self._messages = 0
        self._db.execute("BEGIN IMMEDIATE")
        for key in COUNTERS:
            self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, 0)", (key,))
        self._db.execute("COMMIT")
        self._load()

    # -- plumbing --------------------------------------------------------------------------------------------
    def _scalar(self, sql: str, args: Sequence[object] = ()) -> int:
        row = self._db.execute(sql, args).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; on an exception ROLLBACK and reload the counters kept in memory."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            self._load()
            raise
        self._db.execute("COMMIT")

    def _load(self) -> None:
        self._counters = dict(self._db.execute("SELECT key, value FROM meta WHERE key NOT LIKE 'slot:%'").fetchall())
        self._unformed = self._scalar("SELECT count(*) FROM readings WHERE msg_seq IS NULL")
        self._messages = self._scalar("SELECT count(*) FROM messages")

    def _bump(self, key: str, delta: int) -> None:
        self._counters[key] += delta
        self._db.execute("UPDATE meta SET value = ? WHERE key = ?", (self._counters[key], key))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        c = self._counters
        return c["added"] - c["dropped"] - c["acked"]

    @property
    def messages(self) -> int:
        return self._messages

    @property
    def unformed(self) -> int:
        return self._unformed

    def disk_free_mb(self) -> float:
        return shutil.disk_usage(self.path.parent).free / 1e6

    def stats(self) -> BufferStats:
        oldest = self._db.execute("SELECT t_ms FROM readings ORDER BY id LIMIT 1").fetchone()
        c = self._counters
        return BufferStats(
            depth=self.depth,
            unformed=self._unformed,
            messages=self._messages,
            oldest_unsent_ms=int(oldest[0]) if oldest else None,
            last_seq=c["next_seq"] - 1,
            added=c["added"],
            dropped=c["dropped"],
            dropped_messages=c["dropped_messages"],
            acked=c["acked"],
            formed=c["formed"],
        )

    def last_slots(self) -> dict[str, int]:
        """Per sensor, the last sampling slot stored: a restarted agent resumes after it, never samples twice."""
        rows = self._db.execute("SELECT key, value FROM meta WHERE key LIKE 'slot:%'").fetchall()
        return {key[5:]: int(value) for key, value in rows}

    def max_id(self) -> int:
        return self._scalar("SELECT max(id) FROM readings")

    def unacked_seqs(self) -> list[int]:
        return [int(r[0]) for r in self._db.execute("SELECT seq FROM messages ORDER BY seq")]

    def unformed_after(self, floor_id: int) -> int:
        return self._scalar("SELECT count(*) FROM readings WHERE msg_seq IS NULL AND id > ?", (floor_id,))

    # -- add -------------------------------------------------------------------------------------------------
    def add(self, readings: Sequence[Reading], slots: dict[str, int] | None = None) -> int:
        """Store readings (and the slots they were sampled for) in one transaction; return how many were dropped."""
        with self._tx():
            if readings:
                self._db.executemany(
                    "INSERT INTO readings (t_ms, sensor, param, value, unit, flag) VALUES (?, ?, ?, ?, ?, ?)",
                    [(r.t_ms, r.sensor, r.param, r.value, r.unit, r.flag) for r in readings],
                )
                self._bump("added", len(readings))
                self._unformed += len(readings)
            for sensor, slot in (slots or {}).items():
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (f"slot:{sensor}", slot))
            return self._enforce_bound(len(readings))

    def _enforce_bound(self, just_added: int) -> int:
        limit = self.capacity
        if self.min_free_mb > 0 and self.disk_free_mb() < self.min_free_mb:
            limit = min(limit, max(0, self.depth - just_added))  # no growth on a nearly full disk
        dropped = 0
        while self.depth > limit:
            oldest = self._db.execute("SELECT seq, n FROM messages ORDER BY seq LIMIT 1").fetchone()
            if oldest is not None:
                seq, n = int(oldest[0]), int(oldest[1])
                self._db.execute("DELETE FROM readings WHERE msg_seq = ?", (seq,))
                self._db.execute("DELETE FROM messages WHERE seq = ?", (seq,))
                self._messages -= 1
                self._bump("dropped_messages", 1)
                self._bump("dropped", n)
                dropped += n
                continue
            excess = self.depth - limit
            cursor = self._db.execute(
                "DELETE FROM readings WHERE id IN (SELECT id FROM readings WHERE msg_seq IS NULL ORDER BY id LIMIT ?)",
                (excess,),
            )
            self._unformed -= cursor.rowcount
            self._bump("dropped", cursor.rowcount)
            dropped += cursor.rowcount
        return dropped

    # -- form ------------------------------------------------------------------------------------------------
    def form(
        self, max_readings: int, *, after_id: int = 0, up_to_id: int | None = None, t_ms: int = 0
    ) -> FormedMessage | None:
        """Give the oldest unformed readings with ``after_id < id <= up_to_id`` the next seq, durably."""
        if max_readings < 1:
            raise ValueError(f"max_readings must be >= 1, got {max_readings}")
        upper = up_to_id if up_to_id is not None else 2**62
        with self._tx():
            rows = self._db.execute(
                "SELECT id, t_ms, sensor, param, value, unit, flag FROM readings "
                "WHERE msg_seq IS NULL AND id > ? AND id <= ? ORDER BY id LIMIT ?",
                (after_id, upper, max_readings),
            ).fetchall()
            if not rows:
                return None
            seq = self._counters["next_seq"]
            self._db.execute(
                "UPDATE readings SET msg_seq = ? WHERE msg_seq IS NULL AND id > ? AND id <= ?",
                (seq, after_id, rows[-1][0]),
            )
            self._db.execute("INSERT INTO messages (seq, n, formed_t_ms) VALUES (?, ?, ?)", (seq, len(rows), t_ms))
            self._bump("next_seq", 1)
            self._bump("formed", 1)
            self._unformed -= len(rows)
            self._messages += 1
        return FormedMessage(seq, tuple(_reading(r[1:]) for r in rows))

    def message(self, seq: int) -> tuple[Reading, ...]:
        rows = self._db.execute(
            "SELECT t_ms, sensor, param, value, unit, flag FROM readings WHERE msg_seq = ? ORDER BY id", (seq,)
        ).fetchall()
        return tuple(_reading(r) for r in rows)

    # -- ack -------------------------------------------------------------------------------------------------
    def ack(self, ack: AckMessage) -> tuple[int, int]:
        """Delete every message the acknowledgement covers; return (messages, readings) deleted."""
        return self.ack_ranges(ack.covered_ranges())

    def ack_ranges(self, ranges: Iterable[tuple[int, int]]) -> tuple[int, int]:
        messages = readings = 0
        with self._tx():
            for first, last in ranges:
                if last < first:
                    continue
                readings += self._db.execute(
                    "DELETE FROM readings WHERE msg_seq BETWEEN ? AND ?", (first, last)
                ).rowcount
                messages += self._db.execute("DELETE FROM messages WHERE seq BETWEEN ? AND ?", (first, last)).rowcount
            if readings:
                self._bump("acked", readings)
            self._messages -= messages
        return messages, readings


def _reading(row: Sequence[object]) -> Reading:
    t_ms, sensor, param, value, unit, flag = row
    return Reading(
        t_ms=int(t_ms),  # type: ignore[call-overload]
        sensor=str(sensor),
        param=str(param),
        value=float(value),  # type: ignore[arg-type]
        unit=str(unit),
        flag=None if flag is None else int(flag),  # type: ignore[call-overload]
    )
