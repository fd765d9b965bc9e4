"""The disk spool: batches of line protocol that could not reach InfluxDB, kept in order until they can.

Append-only segment files of records ``[u32 length][u32 crc32][lines joined by \\n]``, each append fsynced before
:meth:`Spool.append` returns (the caller acknowledges the batch right after, so it must survive a power cut). A
cursor file (replaced atomically) says how far draining got; a crash between a drain write and the cursor update
re-writes one batch, which is harmless because points are idempotent. A torn record at the tail (crash during an
append) fails its length or CRC check and is dropped: it was never acknowledged, so the broker or the edge still
has it. The spool is bounded by ``max_bytes``; when full, :meth:`append` refuses and the service stops
acknowledging, which pushes back to the broker and the edge instead of dropping anything.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

_HEADER = struct.Struct("<II")
SEGMENT_BYTES = 64 * 1024 * 1024


class SpoolFullError(RuntimeError):
    pass


class Spool:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        if max_bytes < _HEADER.size + 1:
            raise ValueError(f"max_bytes must be at least {_HEADER.size + 1}, got {max_bytes}")
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self._cursor_path = folder / "cursor.json"
        self._segment, self._offset = self._read_cursor()
        self.spooled_batches = 0
        self.spooled_lines = 0
        self.drained_batches = 0
        self.drained_lines = 0
        self.pending_batches = 0
        self.pending_bytes = 0
        self._scan()

    # -- state ---------------------------------------------------------------------------------------------
    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.folder.glob("*.seg"))

    def _seg_path(self, number: int) -> Path:
        return self.folder / f"{number:012d}.seg"

    def _read_cursor(self) -> tuple[int, int]:
        try:
            data = json.loads(self._cursor_path.read_text())
            return int(data["segment"]), int(data["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0, 0

    def _write_cursor(self) -> None:
        tmp = self._cursor_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"segment": self._segment, "offset": self._offset}))
        tmp.replace(self._cursor_path)

    def _scan(self) -> None:
        """Count what is pending from the cursor on, and cut a torn tail record off the last segment."""
        segments = [s for s in self._segments() if s >= self._segment]
        for old in self._segments():
            if old < self._segment:
                self._seg_path(old).unlink()
        if not segments:
            self._segment, self._offset = (self._segment, 0) if self._segment else (1, 0)
            return
        if self._segment < segments[0]:
            self._segment, self._offset = segments[0], 0
        for number in segments:
            path = self._seg_path(number)
            start = self._offset if number == self._segment else 0
            good_end = start
            with path.open("rb") as f:
                f.seek(start)
                while True:
                    record = _read_record(f)
                    if record is None:
                        break
                    good_end = f.tell()
                    self.pending_batches += 1
                    self.pending_bytes += _HEADER.size + len(record)
            if path.stat().st_size > good_end and number == segments[-1]:
                with path.open("r+b") as f:
                    f.truncate(good_end)

    @property
    def empty(self) -> bool:
        return self.pending_batches == 0

    # -- append --------------------------------------------------------------------------------------------
    def append(self, lines: Sequence[str]) -> None:
        body = "\n".join(lines).encode()
        size = _HEADER.size + len(body)
        if self.pending_bytes + size > self.max_bytes:
            raise SpoolFullError(f"spool in {self.folder} holds {self.pending_bytes} bytes, limit {self.max_bytes}")
        segments = self._segments()
        number = segments[-1] if segments else max(self._segment, 1)
        path = self._seg_path(number)
        if path.exists() and path.stat().st_size + size > SEGMENT_BYTES:
            number += 1
            path = self._seg_path(number)
        with path.open("ab") as f:
            f.write(_HEADER.pack(len(body), zlib.crc32(body)) + body)
            f.flush()
            os.fsync(f.fileno())
        self.pending_batches += 1
        self.pending_bytes += size
        self.spooled_batches += 1
        self.spooled_lines += len(lines)

    # -- drain ---------------------------------------------------------------------------------------------
    def peek(self) -> list[str] | None:
        """The oldest pending batch, or None when the spool is empty."""
        while True:
            path = self._seg_path(self._segment)
            if path.exists():
                with path.open("rb") as f:
                    f.seek(self._offset)
                    record = _read_record(f)
                if record is not None:
                    return record.decode().split("\n")
            later = [s for s in self._segments() if s > self._segment]
            if not later:
                return None
            if path.exists():
                path.unlink()
            self._segment, self._offset = later[0], 0
            self._write_cursor()

    def commit(self) -> None:
        """The batch returned by :meth:`peek` is in InfluxDB: move past it."""
        path = self._seg_path(self._segment)
        with path.open("rb") as f:
            f.seek(self._offset)
            record = _read_record(f)
            if record is None:
                raise RuntimeError("commit without a pending batch")
            self._offset = f.tell()
        self.pending_batches -= 1
        self.pending_bytes -= _HEADER.size + len(record)
        self.drained_batches += 1
        self.drained_lines += record.count(b"\n") + 1
        if self.pending_batches == 0:
            # Everything drained: start over with a fresh segment so the folder does not grow.
            for number in self._segments():
                self._seg_path(number).unlink()
            self._segment, self._offset = self._segment + 1, 0
        self._write_cursor()


def _read_record(f: object) -> bytes | None:
    assert hasattr(f, "read")
    header = f.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    length, crc = _HEADER.unpack(header)
    body: bytes = f.read(length)
    if len(body) < length or zlib.crc32(body) != crc:
        return None
    return body
