"""Stage 1 of ingest, validate and dedupe: one received message (topic, payload, acknowledgement token) in, its
share of a :class:`Batch` out. No MQTT, no disk, no clock of its own; the only outside call is the injected
conflicting-sample look-up (:mod:`ingest.conflicts`), so it is tested with plain bytes.

Guarantees (each message ends in exactly one of these, whatever it holds):

- **stored**: its good readings become lines, its bad readings become per-reading rejections, and (device, seq)
  goes to ``batch.stored`` so the acknowledge stage can mark it in the ledger once the batch is safe;
- **duplicate**: a re-send of a seq this worker accepted (same content: counted; other content: dead-lettered as
  ``duplicate``); its seq is acknowledged again, nothing is written;
- **refused**: a rejection with a :class:`~pilotwatch.wire.Reason` goes to the dead-letter store. A refused message
  never enters the ledger as stored; when its device is known and its seq is sane it is listed in
  ``batch.refused``, so the device is told it may forget it (it is kept as a dead letter) without the ledger
  counting it as stored. An exception raised while processing a message is caught here and the message is refused
  as ``processing_failed``, so one payload can never stop the consumer.

Sequence numbers are sane when they are at most :data:`MAX_SANE_SEQ` and, for a device with history, at most
:data:`MAX_SEQ_JUMP` above the highest seq known for it (an edge numbers its messages one by one, so a jump of a
million is a broken or hostile device, and letting it in would show billions of readings as missing). A message
with a seq that is not sane never enters the ledger: when it holds readings that would be stored it is refused as
``bad_sequence``; when every reading is refused anyway, the readings keep their own reasons. A status message whose
``last_seq`` is not sane is refused as ``bad_sequence``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from ingest.conflicts import SampleGuard
from ingest.metrics import Stats
from ingest.validate import CheckedReadings, FutureSentError, Rejection, Validator, ids_from_payload
from pilotwatch.wire import Reason, StatusMessage, WireError

MAX_SANE_SEQ = 2**40
"""About 1.1e12 messages: 3,000 years of one message every 100 ms."""
MAX_SEQ_JUMP = 1_000_000
"""How far above the highest known seq of a device a new seq may be."""
DETAIL_LIMIT = 300

AckToken = tuple[int, int]
"""(connection generation, MQTT message id): what the acknowledge stage needs to PUBACK a message."""


@dataclass(slots=True)
class Batch:
    """What the consumer hands to the writer: lines to store, rejections to keep, what to acknowledge."""

    opened_at: float = 0.0
    lines: list[str] = field(default_factory=list)
    readings: int = 0
    statuses: list[StatusMessage] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    acks: list[AckToken] = field(default_factory=list)
    stored: list[tuple[str, int]] = field(default_factory=list)  # (device, seq) whose readings are in this batch
    refused: list[tuple[str, int]] = field(default_factory=list)  # (device, sane seq) refused as a whole
    duplicates: list[tuple[str, int]] = field(default_factory=list)  # re-sends: ack again once this batch is safe
    newest_sent_ms: int = 0
    seen: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # device -> (received, sent, newest sample)
    clock: dict[str, tuple[int, int]] = field(default_factory=dict)
    """device -> (newest receive time, smallest ``received - sent``) over this batch's messages from it that were
    stored or refused for a ``sent`` in the future: what the clock-offset estimate (:mod:`ingest.clock`) takes."""
    spans: list[tuple[int, int, str, bytes, str, int]] = field(default_factory=list)
    """Per stored message: (first line, end line, topic, payload, device, seq), so the store stage can fall back to
    making the messages safe one at a time when a batch cannot be processed as a whole."""

    @property
    def messages(self) -> int:
        return len(self.acks)


class Intake:
    """Owned by the consumer thread (its dedupe memory and seq bounds are not shared)."""

    def __init__(
        self,
        validator: Validator,
        stats: Stats,
        *,
        dedupe_window: int,
        guard: SampleGuard | None = None,
        highest_seq: Mapping[str, int] | None = None,
    ) -> None:
        self.validator = validator
        self.stats = stats
        self.dedupe_window = dedupe_window
        self.guard = guard
        self._seen: dict[str, dict[int, int]] = {}  # device -> seq -> content digest
        self._highest: dict[str, int] = dict(highest_seq or {})

    def take(self, topic: str, payload: bytes, token: AckToken, batch: Batch, now_ms: int) -> None:
        """Add one message to ``batch`` (see the module docstring for the outcomes)."""
        stats = self.stats
        stats.messages += 1
        batch.acks.append(token)
        try:
            if topic.endswith("/status"):
                if payload:
                    self._take_status(topic, payload, batch)
                # An empty retained payload is how a status is cleared at the broker; there is nothing to store.
                return
            self._take_readings(topic, payload, batch, now_ms)
        except Exception as exc:  # noqa: BLE001 - the contract: no payload may stop the consumer
            # Nothing of this message reached the batch before the failure (every path below adds last), so
            # refusing it whole is consistent.
            detail = f"ingest failed on this message ({type(exc).__name__}: {str(exc)[:DETAIL_LIMIT]})"
            self._refuse(topic, payload, Reason.PROCESSING_FAILED, detail, batch, status=topic.endswith("/status"))

    def _sane(self, device: str, seq: int) -> str | None:
        """Why ``seq`` is not believable for ``device``, or None."""
        if seq > MAX_SANE_SEQ:
            return f"seq {seq} is above {MAX_SANE_SEQ}, no device numbers its messages that far"
        highest = self._highest.get(device)
        if highest is not None and seq > highest + MAX_SEQ_JUMP:
            return f"seq {seq} jumps {seq - highest} past the highest seq {highest} known (limit {MAX_SEQ_JUMP})"
        return None

    def _refuse(self, topic: str, payload: bytes, reason: Reason, detail: str, batch: Batch, *, status: bool) -> None:
        device, seq = ids_from_payload(topic, payload)
        kind = "status" if status else "message"
        batch.rejections.append(Rejection(kind, topic, payload, reason, detail, device, None if status else seq))
        self.stats.messages_rejected[reason.value] += 1
        if (
            not status
            and device is not None
            and seq is not None
            and device in self.validator.devices
            and self._sane(device, seq) is None
        ):
            batch.refused.append((device, seq))

    def _take_readings(self, topic: str, payload: bytes, batch: Batch, now_ms: int) -> None:
        stats = self.stats
        try:
            checked = self.validator.check_readings(topic, payload, now_ms)
        except WireError as exc:
            if isinstance(exc, FutureSentError):
                # Refused, but heard: a device whose clock runs ahead is told as clock off, not as silent.
                _time_clock(batch, exc.device, now_ms, exc.sent_ms)
            self._refuse(topic, payload, exc.reason, exc.detail, batch, status=False)
            return
        device, seq = checked.device, checked.seq
        insane = self._sane(device, seq)
        if insane is not None:
            if checked.lines:
                self._refuse(topic, payload, Reason.BAD_SEQUENCE, insane, batch, status=False)
            else:
                # Nothing of it would be stored anyway: its readings keep their own reasons, the seq stays out.
                for rejection in checked.rejections:
                    stats.readings_rejected[rejection.reason.value] += 1
                batch.rejections.extend(checked.rejections)
            return
        stats.device_last_seen[device] = now_ms / 1000
        seen = self._seen.get(device)
        if seen is None:
            seen = self._seen[device] = {}
        previous = seen.get(seq)
        if previous is not None:
            if previous == checked.digest:
                stats.duplicates += 1
            else:
                detail = f"seq {seq} of {device} was already accepted with different content; kept here"
                batch.rejections.append(Rejection("message", topic, payload, Reason.DUPLICATE, detail, device, seq))
                stats.messages_rejected[Reason.DUPLICATE.value] += 1
            batch.duplicates.append((device, seq))
            return
        if self.guard is not None and checked.samples:
            self._drop_conflicts(topic, checked)
        seen[seq] = checked.digest
        if len(seen) > self.dedupe_window:
            del seen[next(iter(seen))]
        if seq > self._highest.get(device, -1):
            self._highest[device] = seq
        for rejection in checked.rejections:
            stats.readings_rejected[rejection.reason.value] += 1
        batch.rejections.extend(checked.rejections)
        first = len(batch.lines)
        batch.lines.extend(checked.lines)
        batch.spans.append((first, len(batch.lines), topic, payload, device, seq))
        batch.readings += len(checked.lines)
        stats.readings_received += len(checked.lines)
        batch.stored.append((device, seq))
        batch.newest_sent_ms = max(batch.newest_sent_ms, checked.sent_ms)
        batch.seen[device] = (now_ms, checked.sent_ms, checked.newest_t_ms)
        _time_clock(batch, device, now_ms, checked.sent_ms)

    def _drop_conflicts(self, topic: str, checked: CheckedReadings) -> None:
        """Move readings that contradict a stored sample from ``checked.lines`` to its rejections."""
        assert self.guard is not None
        skipped = self.guard.skipped
        conflicts = self.guard.check(checked.device, checked.seq, checked.samples)
        self.stats.conflict_checks_skipped += self.guard.skipped - skipped
        if not conflicts:
            return
        drop = {c.position for c in conflicts}
        checked.lines = [line for i, line in enumerate(checked.lines) if i not in drop]
        for conflict in conflicts:
            sensor, t, value, flag = checked.samples[conflict.position]
            raw: dict[str, object] = {"t": t, "sensor": sensor, "value": value, "stored_value": conflict.stored_value}
            if flag is not None:
                raw["flag"] = flag
            checked.rejections.append(
                Rejection(
                    "reading",
                    topic,
                    _conflict_payload(checked, raw),
                    Reason.CONFLICTING_SAMPLE,
                    conflict.detail(checked.seq),
                    checked.device,
                    checked.seq,
                )
            )
        checked.samples = [s for i, s in enumerate(checked.samples) if i not in drop]

    def _take_status(self, topic: str, payload: bytes, batch: Batch) -> None:
        try:
            status, line = self.validator.check_status(topic, payload)
        except WireError as exc:
            self._refuse(topic, payload, exc.reason, exc.detail, batch, status=True)
            return
        if status.last_seq is not None:
            insane = self._sane(status.device, status.last_seq)
            if insane is not None:
                self._refuse(topic, payload, Reason.BAD_SEQUENCE, f"last_seq: {insane}", batch, status=True)
                return
        batch.lines.append(line)
        batch.statuses.append(status)


def _time_clock(batch: Batch, device: str, received_ms: int, sent_ms: int) -> None:
    lag = received_ms - sent_ms
    previous = batch.clock.get(device)
    batch.clock[device] = (received_ms, lag if previous is None else min(previous[1], lag))


def _conflict_payload(checked: CheckedReadings, raw: dict[str, object]) -> bytes:
    """The refused reading with the stored value beside it (both values kept, as the dead letter promises)."""
    body = {"device": checked.device, "seq": checked.seq, "sent": checked.sent_ms, "reading": raw}
    return json.dumps(body, separators=(",", ":")).encode()
