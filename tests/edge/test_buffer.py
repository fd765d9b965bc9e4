"""The SQLite store-and-forward buffer on its own: durability, stable messages, monotonic seq, the bound."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.buffer import SqliteBuffer
from pilotwatch.wire import AckMessage, Reading


def readings(n: int, t0: int = 1_790_000_000_000) -> list[Reading]:
    return [Reading(t0 + i * 1000, "ph", "ph", 7.0 + i / 1000, "pH") for i in range(n)]


def test_messages_keep_their_seq_and_readings_until_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with SqliteBuffer(path) as buffer:
        buffer.add(readings(25))
        first = buffer.form(10)
        second = buffer.form(10)
        assert first is not None
        assert second is not None
        assert (first.seq, second.seq) == (0, 1)
        assert first.readings == tuple(readings(25)[:10])
    # Reopened (a restart): the same seq gives the same readings, and new seqs go on from 2.
    with SqliteBuffer(path) as buffer:
        assert buffer.unacked_seqs() == [0, 1]
        assert buffer.message(0) == first.readings
        third = buffer.form(10)
        assert third is not None
        assert third.seq == 2
        assert len(third.readings) == 5
        assert buffer.ack(AckMessage("d-1", stored_through=-1, ranges=((1, 1),))) == (1, 10)
        assert buffer.unacked_seqs() == [0, 2]
        assert buffer.ack(AckMessage("d-1", stored_through=0)) == (1, 10)
        stats = buffer.stats()
        assert (stats.depth, stats.acked, stats.messages, stats.last_seq) == (5, 20, 1, 2)
        # An ack for seqs already gone changes nothing.
        assert buffer.ack(AckMessage("d-1", stored_through=1)) == (0, 0)
    with SqliteBuffer(path) as buffer:
        buffer.ack(AckMessage("d-1", stored_through=2))
        assert buffer.form(10) is None
        assert buffer.stats().last_seq == 2
        assert buffer.depth == 0
        buffer.add(readings(1))
        assert buffer.form(10).seq == 3  # type: ignore[union-attr]


def test_live_and_backlog_lanes(tmp_path: Path) -> None:
    with SqliteBuffer(tmp_path / "b.sqlite") as buffer:
        buffer.add(readings(30))
        floor = buffer.max_id()
        buffer.add(readings(3, t0=1_800_000_000_000))
        assert buffer.unformed_after(floor) == 3
        live = buffer.form(100, after_id=floor)
        backlog = buffer.form(100, up_to_id=floor)
        assert live is not None
        assert backlog is not None
        assert [r.t_ms for r in live.readings] == [r.t_ms for r in readings(3, t0=1_800_000_000_000)]
        assert len(backlog.readings) == 30


def test_full_buffer_drops_oldest_whole_messages_first_and_counts(tmp_path: Path) -> None:
    with SqliteBuffer(tmp_path / "b.sqlite", capacity=50) as buffer:
        buffer.add(readings(40))
        buffer.form(15)  # seq 0: readings 0-14
        assert buffer.add(readings(20, t0=1_800_000_000_000)) == 15  # 60 > 50: the whole of seq 0 goes
        assert buffer.unacked_seqs() == []
        stats = buffer.stats()
        assert (stats.depth, stats.dropped, stats.dropped_messages) == (45, 15, 1)
        assert buffer.add(readings(10, t0=1_810_000_000_000)) == 5  # then the oldest unformed readings
        assert buffer.stats().oldest_unsent_ms == readings(40)[20].t_ms
        stats = buffer.stats()
        assert stats.added == stats.depth + stats.dropped + stats.acked


def test_no_growth_when_the_disk_is_nearly_full(tmp_path: Path) -> None:
    with SqliteBuffer(tmp_path / "b.sqlite", min_free_mb=1e12) as buffer:
        assert buffer.add(readings(5)) == 5
        assert buffer.depth == 0


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        SqliteBuffer(tmp_path / "b.sqlite", capacity=0)
    with SqliteBuffer(tmp_path / "b.sqlite") as buffer, pytest.raises(ValueError, match="max_readings must be >= 1"):
        buffer.form(0)


WRITER = """
import sys
from pathlib import Path
from edge.buffer import SqliteBuffer
from pilotwatch.wire import AckMessage, Reading
buffer = SqliteBuffer(Path(sys.argv[1]))
i = 0
while True:
    buffer.add([Reading(1_790_000_000_000 + i * 10 + k, "ph", "ph", 7.0, "pH") for k in range(10)], {"ph": i})
    formed = buffer.form(7)
    if i % 3 == 0 and formed is not None:
        buffer.ack(AckMessage("d-1", stored_through=formed.seq - 2))
    i += 1
    if i == 50:
        print("ready", flush=True)
"""


def test_kill_9_during_writes_leaves_a_consistent_buffer(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    held = db.execute("SELECT count(*) FROM readings").fetchone()[0]
    in_messages = db.execute("SELECT coalesce(sum(n), 0) FROM messages").fetchone()[0]
    db.close()
    with SqliteBuffer(path) as buffer:
        stats = buffer.stats()
        slots = buffer.last_slots()
    # Every committed transaction is whole: counters, readings, messages and slots agree.
    assert stats.depth == held
    assert stats.added == held + stats.acked + stats.dropped
    assert in_messages == held - stats.unformed
    assert stats.added == (slots["ph"] + 1) * 10 > 500
