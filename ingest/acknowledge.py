"""Stage 3 of ingest, acknowledge: once a batch is safe, say so, in this order.

1. The gap ledger (:mod:`ingest.ledger`) marks every stored seq, every refused one (kept as a dead letter; the
   ledger keeps those apart so they never count as stored), re-sends, what each device was last seen sending, its
   clock offset (:mod:`ingest.clock`) and its newest status; then it is saved. Saved before anything is
   acknowledged: once the edge deletes a message on our word, the ledger must already know it is stored, or a
   crash here would leave a "missing" number that nobody will re-send.
2. The broker gets its PUBACKs (``puback``: manual acknowledgement of each MQTT message of the batch).
3. Each device touched gets one :class:`~pilotwatch.wire.AckMessage` (``publish``): every seq through which all
   are settled, plus the settled ranges above it among those this batch touched.

MQTT is reached only through the two injected callables, so the stage is tested with lists.
"""

from __future__ import annotations

from collections.abc import Callable

from ingest.clock import DEFAULT_WINDOW_S
from ingest.intake import AckToken, Batch
from ingest.ledger import Ledger, compress
from ingest.metrics import Stats
from pilotwatch.wire import AckMessage, ack_topic


class Acknowledger:
    """Owned by the writer thread (the ledger is not thread-safe)."""

    def __init__(
        self,
        ledger: Ledger,
        stats: Stats,
        *,
        puback: Callable[[AckToken], None],
        publish: Callable[[str, bytes], None],
        clock_ms: Callable[[], int],
        clock_window_ms: int = round(DEFAULT_WINDOW_S * 1000),
    ) -> None:
        self.ledger = ledger
        self.stats = stats
        self._puback = puback
        self._publish = publish
        self._clock_ms = clock_ms
        self._clock_window_ms = clock_window_ms

    def settle(self, batch: Batch) -> None:
        ledger = self.ledger
        touched: dict[str, list[int]] = {}
        for device, seq in batch.stored:
            ledger.mark_stored(device, seq)
            touched.setdefault(device, []).append(seq)
        for device, seq in batch.refused:
            ledger.mark_refused(device, seq)
            touched.setdefault(device, []).append(seq)
        for device, seq in batch.duplicates:
            ledger.record(device).duplicates += 1
            touched.setdefault(device, []).append(seq)
        for device, (received_ms, sent_ms, newest) in batch.seen.items():
            rec = ledger.record(device)
            rec.last_seen_ms = received_ms
            rec.last_sent_ms = sent_ms
            rec.newest_sample_ms = max(rec.newest_sample_ms or 0, newest)
        for device, (received_ms, lag_ms) in batch.clock.items():
            ledger.record(device).time_clock(received_ms, lag_ms, self._clock_window_ms)
        for status in batch.statuses:
            rec = ledger.record(status.device)
            if rec.status_ms is None or status.t_ms >= rec.status_ms:
                rec.status_ms = status.t_ms
                rec.device_state = status.state.value
                rec.device_buffered = status.buffer_depth
                rec.device_oldest_unsent_ms = status.oldest_unsent_ms
                rec.device_last_seq = status.last_seq
        ledger.save()
        for token in batch.acks:
            self._puback(token)
        now_ms = self._clock_ms()
        for device, seqs in touched.items():
            through = ledger.settled_through(device)
            ranges = tuple((max(a, through + 1), b) for a, b in compress(seqs) if b > through)
            ack = AckMessage(device=device, stored_through=through, ranges=ranges, t_ms=now_ms)
            self._publish(ack_topic(device), ack.encode())
            self.stats.acks_published += 1
        if batch.newest_sent_ms:
            self.stats.lag_s = max(0.0, now_ms / 1000 - batch.newest_sent_ms / 1000)
