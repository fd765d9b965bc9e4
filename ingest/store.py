"""Stage 2 of ingest, store: make a batch safe, or say why it cannot be.

In: a :class:`~ingest.intake.Batch`. Out: its rejections committed to the dead-letter store, then its lines in
InfluxDB through the classified writer (:mod:`pilotwatch.influx_writer`: retry with backoff and Retry-After on
429/5xx/timeouts; a rejected batch is split until the refused lines are found, which are dead-lettered while the
good ones land) or, after ``spool_after_s`` of failures, in the fsynced disk spool, drained in order once InfluxDB
answers. :meth:`Store.make_safe` returns only when all of that holds; nothing is acknowledged before.

Failures: a fatal answer (401/403/404) raises :class:`~pilotwatch.influx_writer.FatalWriteError`. Any other
exception while storing a batch (a line the client cannot even encode, say) makes the stage store the batch's
messages one at a time; a message that fails again on its own is dead-lettered as ``processing_failed`` and taken
out of ``batch.stored``, so one message can never block the stream. An exception from the dead-letter store itself
(database locked past its timeout, disk full) is not caught: the service stops with a fatal status and a non-zero
exit, and the broker and the edge still hold everything not acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ingest.deadletter import DeadLetterStore
from ingest.intake import DETAIL_LIMIT, Batch
from ingest.metrics import Stats
from ingest.spool import Spool, SpoolFullError
from ingest.validate import Rejection
from pilotwatch.influx_writer import (
    FatalWriteError,
    Outcome,
    RetryPolicy,
    Writer,
    WriteResult,
    write_split,
    write_with_retry,
)
from pilotwatch.wire import Channel, Reason, WireError, parse_topic


class Store:
    """Owned by the writer thread."""

    def __init__(
        self,
        writer: Writer,
        dead: DeadLetterStore,
        spool: Spool,
        stats: Stats,
        policy: RetryPolicy,
        *,
        stopping: Callable[[], bool] = lambda: False,
        beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.writer = writer
        self.dead = dead
        self.spool = spool
        self.stats = stats
        self.policy = policy
        self._stopping = stopping
        self._beat = beat

    def make_safe(self, batch: Batch) -> None:
        """Dead letters first, then the lines (InfluxDB or spool). Returns once everything is safe."""
        self.dead.add(batch.rejections)
        if batch.lines:
            try:
                self.store(batch.lines, batch.readings)
            except FatalWriteError:
                raise
            except Exception as exc:  # noqa: BLE001 - narrowed below, message by message
                self._one_by_one(batch, exc)
        self.stats.statuses_written += len(batch.statuses)

    def _one_by_one(self, batch: Batch, first_error: Exception) -> None:
        covered: set[int] = set()
        failed: set[tuple[str, int]] = set()
        for start, end, topic, payload, device, seq in batch.spans:
            covered.update(range(start, end))
            if start == end:
                continue
            try:
                self.store(batch.lines[start:end], end - start)
            except FatalWriteError:
                raise
            except Exception as exc:  # noqa: BLE001 - this message alone fails: keep it for a person
                detail = (
                    f"storing this message failed twice ({type(first_error).__name__}, then "
                    f"{type(exc).__name__}: {str(exc)[:DETAIL_LIMIT]})"
                )
                self.dead.add([Rejection("message", topic, payload, Reason.PROCESSING_FAILED, detail, device, seq)])
                self.stats.messages_rejected[Reason.PROCESSING_FAILED.value] += 1
                failed.add((device, seq))
        for index, line in enumerate(batch.lines):
            if index in covered:
                continue
            try:
                self.store([line], 0)
            except FatalWriteError:
                raise
            except Exception as exc:  # noqa: BLE001 - a status line alone fails: keep it for a person
                detail = f"storing this line failed ({type(exc).__name__}: {str(exc)[:DETAIL_LIMIT]})"
                data = line.encode(errors="backslashreplace")
                self.dead.add([Rejection("line", "", data, Reason.PROCESSING_FAILED, detail)])
                self.stats.messages_rejected[Reason.PROCESSING_FAILED.value] += 1
        if failed:
            batch.stored = [key for key in batch.stored if key not in failed]
            batch.refused.extend(failed)

    def store(self, lines: list[str], readings: int) -> None:
        """Write to InfluxDB or, failing that for ``give_up_after_s``, to the spool. Returns once safe."""
        stats = self.stats
        spool = self.spool
        if spool.empty:

            def _retry(_result: WriteResult) -> None:
                stats.write_retries += 1
                self._beat()

            result = write_with_retry(
                self.writer, lines, self.policy, self._rejected_line, stop=self._stopping, on_retry=_retry
            )
            if result.outcome is Outcome.OK:
                stats.write_batches += 1
                stats.readings_written += readings
                return
        # InfluxDB is away (or older batches wait in the spool, which must drain first to keep order).
        while True:
            try:
                spool.append(lines)
            except SpoolFullError:
                # Back-pressure: nothing is acknowledged until there is room, so nothing is dropped.
                self._beat()
                if not self.drain_one():
                    time.sleep(self.policy.initial_s)
                continue
            stats.readings_spooled += readings
            stats.spool_pending_batches = spool.pending_batches
            stats.spool_pending_bytes = spool.pending_bytes
            return

    def drain_one(self) -> bool:
        """Write the oldest spooled batch; True if it went in (or the spool was empty)."""
        lines = self.spool.peek()
        if lines is None:
            return True
        result = write_split(self.writer, lines, self._rejected_line)
        if result.outcome is not Outcome.OK:
            self.stats.write_retries += 1
            return False
        self.spool.commit()
        self.stats.readings_drained += len(lines)
        self.stats.readings_written += len(lines)
        self.stats.spool_pending_batches = self.spool.pending_batches
        self.stats.spool_pending_bytes = self.spool.pending_bytes
        return True

    def _rejected_line(self, text: str, result: WriteResult) -> None:
        self.dead.add([line_rejection(text, result)])
        self.stats.write_rejected_lines += 1
        self.stats.readings_rejected[Reason.WRITE_REJECTED.value] += 1


def line_rejection(text: str, result: WriteResult) -> Rejection:
    """The dead letter of a line InfluxDB refused, with the device and seq read back from the line."""
    device = None
    for part in text.split(" ", 1)[0].split(","):
        if part.startswith("device="):
            device = part[len("device=") :]
    seq = None
    marker = ",seq="
    if marker in text:
        digits = text.split(marker, 1)[1].split("i", 1)[0]
        seq = int(digits) if digits.isdigit() and len(digits) < 20 else None
    topic = ""
    if device is not None:
        candidate = f"pilotwatch/v1/devices/{device}/{Channel.READINGS.value}"
        try:
            parse_topic(candidate)
            topic = candidate
        except WireError:
            topic = ""
    detail = f"InfluxDB answered {result.status}: {result.detail[:300]}"
    return Rejection("line", topic, text.encode(errors="backslashreplace"), Reason.WRITE_REJECTED, detail, device, seq)
