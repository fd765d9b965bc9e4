"""The dead-letter store: every message, reading, status or line that ingest could not store, kept with its raw
payload, the reason (a :class:`pilotwatch.wire.Reason` value), a detail naming what was seen, and the time.

One SQLite file (WAL, so ``pilotwatch ingest deadletter ...`` can read while ingest writes). Kinds:

- ``message``: the whole payload was refused (bad JSON, unknown device, ...); ``payload`` is the raw bytes.
- ``reading``: one reading of an otherwise good message; ``payload`` is a wire message holding just that
  reading as received, so it can be replayed on its own.
- ``status``: a refused status payload.
- ``line``: a line InfluxDB itself refused (HTTP 400, e.g. a field type conflict); ``payload`` is the line.

:meth:`DeadLetterStore.replay` runs dead letters through the current validator (after a manifest fix, say) and
writes what now passes; a replayed entry is marked with the time and outcome.

Bounds (a hostile or broken device must not fill the disk through this store):

- per entry, at most ``payload_bytes`` of the payload are kept; for a longer one the store keeps its first bytes,
  its full size (``payload_size``) and the SHA-256 of the whole payload, so it can still be identified; details
  are cut to :data:`DETAIL_CHARS` characters;
- entries older than ``retention_days`` are deleted, and when the kept content (payloads, details, topics) passes
  ``max_bytes`` the oldest entries are deleted until it is under nine tenths of it;
- every entry deleted and every payload cut is counted in the ``drops`` table by cause (``retention``,
  ``size_bound``, ``truncated``), shown by ``pilotwatch ingest deadletter count`` and in ingest's metrics.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.validate import Rejection, Validator
from ingest.writers import Writer
from pilotwatch.wire import Reason, WireError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    received_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    device TEXT,
    seq INTEGER,
    reading_index INTEGER,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL,
    replayed_ms INTEGER,
    replay_result TEXT
);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters(reason);
CREATE INDEX IF NOT EXISTS dead_letters_device ON dead_letters(device, seq);
CREATE TABLE IF NOT EXISTS drops (
    cause TEXT PRIMARY KEY,
    entries INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
"""
_COLUMNS = (
    "id, received_ms, kind, topic, device, seq, reading_index, reason, detail, payload, replayed_ms, replay_result,"
    " payload_size, payload_sha256"
)
_ENTRY_BYTES = "length(payload) + length(detail) + length(topic)"
DETAIL_CHARS = 1000
PRUNE_EVERY_S = 600.0

KINDS = ("message", "reading", "status", "line")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    received_ms: int
    kind: str
    topic: str
    device: str | None
    seq: int | None
    reading_index: int | None
    reason: str
    detail: str
    payload: bytes
    replayed_ms: int | None
    replay_result: str | None
    payload_size: int | None = None
    """Size of the payload as received (None for entries older than the bound)."""
    payload_sha256: str | None = None
    """SHA-256 of the whole payload, kept when the payload was cut."""

    @property
    def truncated(self) -> bool:
        return self.payload_size is not None and self.payload_size > len(self.payload)

    def summary(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__ if name != "payload"}
        out["payload_bytes"] = len(self.payload)
        return out


@dataclass(frozen=True, slots=True)
class ReplayReport:
    replayed: int
    still_invalid: int
    write_failed: int
    lines_written: int


class DeadLetterStore:
    """SQLite-backed; one connection per instance and per thread that uses it."""

    def __init__(
        self,
        path: Path,
        *,
        payload_bytes: int = 4096,
        max_bytes: int = 256 * 1024**2,
        retention_days: float = 90.0,
        timeout_s: float = 30.0,
        clock: Any = time.time,
    ) -> None:
        if payload_bytes < 1 or max_bytes < payload_bytes or retention_days <= 0:
            raise ValueError(
                f"need 1 <= payload_bytes <= max_bytes and retention_days > 0, got payload_bytes={payload_bytes},"
                f" max_bytes={max_bytes}, retention_days={retention_days}"
            )
        self.path = path
        self.payload_bytes = payload_bytes
        self.max_bytes = max_bytes
        self.retention_ms = int(retention_days * 86_400_000)
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=timeout_s, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Dead letters are acknowledged to the broker right after this commit: they must reach the disk.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(dead_letters)")}
        for name, kind in (("payload_size", "INTEGER"), ("payload_sha256", "TEXT")):
            if name not in columns:  # a store written before the bounds existed
                self._db.execute(f"ALTER TABLE dead_letters ADD COLUMN {name} {kind}")
        self._bytes = int(self._db.execute(f"SELECT coalesce(sum({_ENTRY_BYTES}), 0) FROM dead_letters").fetchone()[0])  # noqa: S608
        self._next_prune = 0.0
        self.dropped_total = 0
        """Entries this instance deleted (retention and size bound)."""

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DeadLetterStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, rejections: Sequence[Rejection], received_ms: int | None = None) -> None:
        """Store and commit (one transaction) before the caller acknowledges anything."""
        if not rejections:
            return
        now = int(self._clock() * 1000) if received_ms is None else received_ms
        rows = []
        cut_entries = cut_bytes = added = 0
        for r in rejections:
            payload = r.payload
            size = len(payload)
            digest = None
            if size > self.payload_bytes:
                digest = hashlib.sha256(payload).hexdigest()
                payload = payload[: self.payload_bytes]
                cut_entries += 1
                cut_bytes += size - self.payload_bytes
            topic = _text(r.topic, 512)
            detail = _text(r.detail, DETAIL_CHARS)
            added += len(payload) + len(detail) + len(topic)
            rows.append((now, r.kind, topic, r.device, r.seq, r.index, r.reason.value, detail, payload, size, digest))
        with self._transaction():
            self._db.executemany(
                "INSERT INTO dead_letters (received_ms, kind, topic, device, seq, reading_index, reason, detail,"
                " payload, payload_size, payload_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if cut_entries:
                self._count_drop("truncated", cut_entries, cut_bytes)
        self._bytes += added
        if self._bytes > self.max_bytes or self._clock() >= self._next_prune:
            self.prune()

    def _count_drop(self, cause: str, entries: int, size: int) -> None:
        self._db.execute(
            "INSERT INTO drops (cause, entries, bytes) VALUES (?, ?, ?) ON CONFLICT(cause) DO UPDATE SET"
            " entries = entries + excluded.entries, bytes = bytes + excluded.bytes",
            (cause, entries, size),
        )

    def prune(self) -> int:
        """Apply retention and the size bound now; returns how many entries were deleted."""
        self._next_prune = self._clock() + PRUNE_EVERY_S
        deleted = 0
        cutoff = int(self._clock() * 1000) - self.retention_ms
        with self._transaction():
            n, size = self._db.execute(
                f"SELECT count(*), coalesce(sum({_ENTRY_BYTES}), 0) FROM dead_letters WHERE received_ms < ?",  # noqa: S608
                (cutoff,),
            ).fetchone()
            if n:
                self._db.execute("DELETE FROM dead_letters WHERE received_ms < ?", (cutoff,))
                self._count_drop("retention", int(n), int(size))
                self._bytes -= int(size)
                deleted += int(n)
        target = self.max_bytes * 9 // 10
        over = self._bytes > self.max_bytes
        while over and self._bytes > target:
            with self._transaction():
                rows = self._db.execute(
                    f"SELECT id, {_ENTRY_BYTES} FROM dead_letters ORDER BY id LIMIT 500"  # noqa: S608
                ).fetchall()
                if not rows:
                    self._bytes = 0
                    break
                freed = 0
                last_id = rows[-1][0]
                for row_id, size in rows:
                    freed += int(size)
                    if self._bytes - freed <= target:
                        last_id = row_id
                        break
                n_rows = self._db.execute("DELETE FROM dead_letters WHERE id <= ?", (last_id,)).rowcount
                self._count_drop("size_bound", n_rows, freed)
                self._bytes -= freed
                deleted += n_rows
        self.dropped_total += deleted
        return deleted

    def drops(self) -> dict[str, tuple[int, int]]:
        """cause -> (entries, bytes) dropped or cut since the store was created."""
        rows = self._db.execute("SELECT cause, entries, bytes FROM drops ORDER BY cause")
        return {str(c): (int(e), int(b)) for c, e, b in rows}

    def _transaction(self) -> Any:
        return _Tx(self._db)

    def count(self, *, reason: str | None = None, pending_only: bool = False) -> int:
        where, params = _filters(reason=reason, pending_only=pending_only)
        row = self._db.execute(f"SELECT count(*) FROM dead_letters{where}", params).fetchone()  # noqa: S608
        return int(row[0])

    def counts_by_reason(self) -> dict[str, int]:
        rows = self._db.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason")
        return {str(reason): int(n) for reason, n in rows}

    def list(
        self,
        *,
        reason: str | None = None,
        device: str | None = None,
        pending_only: bool = False,
        limit: int = 50,
        after_id: int = 0,
    ) -> list[DeadLetter]:
        where, params = _filters(reason=reason, device=device, pending_only=pending_only, after_id=after_id)
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM dead_letters{where} ORDER BY id LIMIT ?",  # noqa: S608
            [*params, limit],
        )
        return [DeadLetter(*row) for row in rows]

    def get(self, dead_letter_id: int) -> DeadLetter:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM dead_letters WHERE id = ?", (dead_letter_id,)).fetchone()  # noqa: S608
        if row is None:
            raise ValueError(f"no dead letter with id {dead_letter_id} in {self.path}")
        return DeadLetter(*row)

    def replay(
        self,
        validator: Validator,
        writer: Writer,
        *,
        ids: Iterable[int] | None = None,
        reason: str | None = None,
        now_ms: int | None = None,
    ) -> ReplayReport:
        """Validate the selected, not yet replayed dead letters again and write what passes."""
        from ingest.writers import Outcome  # noqa: PLC0415

        now = int(time.time() * 1000) if now_ms is None else now_ms
        if ids is not None:
            letters = [self.get(i) for i in ids]
        else:
            letters = self.list(reason=reason, pending_only=True, limit=1_000_000)
        replayed = still_invalid = failed = written = 0
        for letter in letters:
            if letter.replayed_ms is not None:
                continue
            try:
                lines = _lines_for(letter, validator, now)
            except WireError as exc:
                still_invalid += 1
                self._mark(letter.id, None, f"still invalid: {exc}")
                continue
            if not lines:
                still_invalid += 1
                self._mark(letter.id, None, "still invalid: no reading passes validation")
                continue
            result = writer.write(lines)
            if result.outcome is Outcome.OK:
                replayed += 1
                written += len(lines)
                self._mark(letter.id, now, f"written {len(lines)} line(s)")
            else:
                failed += 1
                self._mark(letter.id, None, f"write {result.outcome.value} ({result.status}): {result.detail[:200]}")
        return ReplayReport(replayed, still_invalid, failed, written)

    def _mark(self, dead_letter_id: int, replayed_ms: int | None, result: str) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE dead_letters SET replayed_ms = ?, replay_result = ? WHERE id = ?",
                (replayed_ms, result, dead_letter_id),
            )


def _text(value: str, limit: int) -> str:
    """A string SQLite can store (no lone surrogates from a hostile payload) of at most ``limit`` characters."""
    text = value if len(value) <= limit else value[: limit - 3] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _lines_for(letter: DeadLetter, validator: Validator, now_ms: int) -> list[str]:
    if letter.truncated:
        raise WireError(
            Reason.PAYLOAD_TOO_LARGE,
            f"only {len(letter.payload)} of its {letter.payload_size} bytes were kept (sha256 {letter.payload_sha256})",
        )
    if letter.kind == "line":
        return [letter.payload.decode()]
    if letter.kind == "status":
        return [validator.check_status(letter.topic, letter.payload)[1]]
    checked = validator.check_readings(letter.topic, letter.payload, now_ms)
    if checked.rejections and not checked.lines:
        first = checked.rejections[0]
        raise WireError(first.reason, first.detail)
    return checked.lines


def _filters(
    *, reason: str | None = None, device: str | None = None, pending_only: bool = False, after_id: int = 0
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if reason is not None:
        known = {r.value for r in Reason}
        if reason not in known:
            raise ValueError(f"unknown reason {reason!r}; expected one of {sorted(known)}")
        clauses.append("reason = ?")
        params.append(reason)
    if device is not None:
        clauses.append("device = ?")
        params.append(device)
    if pending_only:
        clauses.append("replayed_ms IS NULL")
    if after_id:
        clauses.append("id > ?")
        params.append(after_id)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
