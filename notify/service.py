"""The notifier service: fan out → timers → pack → send, one durable step at a time.

:meth:`Notifier.run_once` is the whole cycle at an explicit time (tests drive escalation and repeats with it
without sleeping); :meth:`Notifier.run` calls it until stopped. Each step is one transaction of the notifier's
database, and sending happens between transactions, so ``kill -9`` anywhere leaves either a message not yet
sent (sent after restart) or a message sent but not recorded (sent again with the same idempotency key, which
the receiver drops). One notifier per database: a second one refuses to start (an exclusive file lock), because
two senders racing over one outbox is how high-availability set-ups send everything twice.
"""

from __future__ import annotations

import fcntl
import logging
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from notify.channels import Channel, EmailChannel, MqttChannel, WebhookChannel, backoff_s
from notify.payload import iso
from notify.recipients import Address, Recipients, load_recipients
from notify.routing import Router
from notify.settings import NotifySettings
from notify.store import NotifyStore, Outcome, OutgoingMessage, SendResult, connect, message_counts
from pilotwatch.alerting import Transition, TransitionKind, read_transitions
from pilotwatch.manifest import AlertChannel, AlertKind, Manifest, Role, load_manifest
from pilotwatch.signing import sign_ack_token

log = logging.getLogger(__name__)
FAN_OUT_BATCH = 500


class NotifierLockedError(ValueError):
    """Another notifier holds this state database: a deployment mistake, reported like bad configuration."""


@dataclass(frozen=True, slots=True)
class CycleReport:
    fanned_out: int
    timer_deliveries: int
    messages_made: int
    attempts: int


def now_ms() -> int:
    return int(time.time() * 1000)


class Notifier:
    def __init__(
        self,
        settings: NotifySettings,
        manifest: Manifest,
        recipients: Recipients,
        channels: Mapping[AlertChannel, Channel] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.router = Router(manifest, recipients)
        self.recipients = recipients
        settings.state_db.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file: IO[str] | None = settings.state_db.with_suffix(".lock").open("w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise NotifierLockedError(f"another notifier is running on {settings.state_db}") from None
        self.store = NotifyStore(settings.state_db)
        self.alerts_conn = sqlite3.connect(
            str(settings.alerts_db), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self.alerts_conn.execute("PRAGMA busy_timeout=30000")
        self.channels: dict[AlertChannel, Channel] = dict(channels) if channels is not None else self._channels()
        self.rng = rng or random.Random()
        self.pool = ThreadPoolExecutor(max_workers=settings.send_concurrency, thread_name_prefix="notify-send")

    @classmethod
    def from_settings(cls, settings: NotifySettings) -> Notifier:
        manifest = load_manifest(settings.manifest)
        recipients = load_recipients(settings.resolve_recipients_file(manifest), manifest)
        return cls(settings, manifest, recipients)

    def _channels(self) -> dict[AlertChannel, Channel]:
        """A channel for each channel that has at least one address; its settings must then be complete."""
        used = {a.channel for g in self.recipients.file.recipients for a in _group_addresses(g)}
        out: dict[AlertChannel, Channel] = {}
        if AlertChannel.WEBHOOK in used:
            out[AlertChannel.WEBHOOK] = WebhookChannel(self.recipients, self.settings.send_timeout_s)
        if AlertChannel.EMAIL in used:
            out[AlertChannel.EMAIL] = EmailChannel(self.settings)
        if AlertChannel.MQTT in used:
            out[AlertChannel.MQTT] = MqttChannel(self.settings)
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for channel in self.channels.values():
            channel.close()
        self.store.close()
        self.alerts_conn.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- links ----------------------------------------------------------------------------------------------
    def links(self, t: Transition, address: Address) -> dict[str, str]:
        out: dict[str, str] = {}
        readings = t.body.get("readings_url")
        base = self.settings.public_url
        if isinstance(readings, str) and readings:
            out["readings"] = readings if readings.startswith("http") or base is None else base + readings
        elif base is not None:
            out["readings"] = f"{base}/alerts/{t.alert_id}"
        secret = self.settings.ack_link_secret
        if base is not None and secret is not None and t.transition is TransitionKind.FIRED:
            expires = int(time.time() + self.settings.ack_link_ttl_s)
            token = sign_ack_token(secret.get_secret_value(), t.alert_id, address.recipient, expires)
            out["acknowledge"] = f"{base}/ack-link/{token}"
        return out

    def _extra(self, channel: str, recipient: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """For MQTT: the open alerts of each site in the message that this recipient is routed, and no others
        (an operators' display must not show city staff's pollution alerts)."""
        if channel != AlertChannel.MQTT:
            return {}
        me = Address(AlertChannel.MQTT, recipient)
        sites = self.store.open_alerts_at(e["site"] for e in entries if e["site"])
        return {
            "sites": {
                site: [a for a in alerts if me in self.router.addresses(a["city"], AlertKind(a["kind"]))]
                for site, alerts in sites.items()
            }
        }

    # -- the cycle ------------------------------------------------------------------------------------------
    def _transitions_table_exists(self) -> bool:
        row = self.alerts_conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alert_transitions'"
        ).fetchone()
        return row is not None

    def fan_out(self, now: int) -> int:
        if not self._transitions_table_exists():
            return 0
        total = 0
        window_ms = int(self.settings.group_window_s * 1000)
        while True:
            batch = read_transitions(self.alerts_conn, self.store.cursor(), limit=FAN_OUT_BATCH)
            if not batch:
                return total
            total += self.store.fan_out(batch, self.router, self.links, now, window_ms)

    def send_due(self, now: int, ids: list[int] | None = None, max_attempts: int | None = None) -> int:
        # One round of at most `send_concurrency` messages, recorded together: what a crash can make the notifier
        # send again (with the same idempotency key) is bounded by one round.
        due = self.store.due_messages(now, self.settings.send_concurrency, ids)
        if not due:
            return 0
        results = list(zip(due, self.pool.map(self._send_one, due), strict=True))
        s = self.settings
        self.store.record(
            results,
            now_ms(),
            max_attempts or s.max_attempts,
            lambda attempt, retry_after: backoff_s(attempt, retry_after, s.retry_base_s, s.retry_max_s, self.rng),
        )
        return len(due)

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        channel = self.channels.get(message.channel)
        if channel is None:
            return SendResult(Outcome.RETRY, f"channel {message.channel.value} is not configured in this notifier")
        return channel.send(message)

    def run_once(self, now: int | None = None) -> CycleReport:
        t = now_ms() if now is None else now
        s = self.settings
        fanned = self.fan_out(t)
        timers = self.store.fire_timers(
            self.router, self.links, t, int(s.repeat_interval_s * 1000), int(s.group_window_s * 1000)
        )
        made = self.store.claim(t, s.max_per_recipient_per_hour, s.max_alerts_per_message, self._extra)
        attempts = 0
        while True:
            sent = self.send_due(t)
            attempts += sent
            if sent < s.send_concurrency:
                break
        return CycleReport(fanned, timers, made, attempts)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            report = self.run_once()
            if report.fanned_out == 0 and report.attempts == 0:
                stop.wait(self.settings.poll_interval_s)

    # -- test messages --------------------------------------------------------------------------------------
    def send_test(self, city: str, role: Role) -> list[tuple[Address, SendResult]]:
        """Send a test message to every address of ``role`` in ``city`` now, once, and report each outcome."""
        addresses = self.recipients.addresses(city, [role], list(AlertChannel))
        if not addresses:
            raise ValueError(f"the recipients file has no address for role {role.value} in city {city!r}")
        t = now_ms()
        nonce = secrets.token_hex(8)
        entry = {
            "alert_id": "test",
            "transition_id": 0,
            "transition": "test",
            "kind": "test",
            "city": city,
            "site": "",
            "device": "",
            "severity": "info",
            "time": iso(t),
            "silenced": False,
            "reason": "test",
            "step": 0,
            "details": {"summary": f"test message for role {role.value} of {city}"},
            "links": {},
        }
        ids = {self.store.add_test_message(a.channel, a.recipient, [entry], t, nonce): a for a in sorted(addresses)}
        due = self.store.due_messages(now_ms(), len(ids), ids)
        results = list(zip(due, self.pool.map(self._send_one, due), strict=True))
        self.store.record(results, now_ms(), 1, lambda _a, _r: 0.0)
        return [(ids[m.id], r) for m, r in results]


def _group_addresses(group: Any) -> Iterator[Address]:
    yield from (Address(AlertChannel.EMAIL, a) for a in group.email)
    yield from (Address(AlertChannel.WEBHOOK, h.name) for h in group.webhooks)
    yield from (Address(AlertChannel.MQTT, m.topic) for m in group.mqtt)


class NotifyCollector(Collector):
    """/metrics from the database at scrape time: counters survive restarts and never disagree with the tables."""

    def __init__(self, state_db: Path) -> None:
        self.state_db = state_db

    def collect(self) -> Iterator[Metric]:
        conn = connect(self.state_db)
        try:
            counts = message_counts(conn)
            pending = conn.execute(
                "SELECT channel, COUNT(*) FROM notify_messages WHERE status = 'pending' GROUP BY channel"
            ).fetchall()
        finally:
            conn.close()
        help_text = {
            "sent": "messages delivered (accepted by the receiver)",
            "retried": "attempts that failed and were scheduled again",
            "failed": "attempts that failed, retried or not",
            "dead": "messages dead-lettered with their last error",
        }
        names = {"dead": "dead_lettered"}
        for key, text in help_text.items():
            family = CounterMetricFamily(f"pilotwatch_notify_{names.get(key, key)}", text, labels=["channel"])
            for channel in AlertChannel:
                family.add_metric([channel.value], counts[key][channel.value])
            yield family
        gauge = GaugeMetricFamily(
            "pilotwatch_notify_pending_messages", "messages waiting to be sent", labels=["channel"]
        )
        for channel, n in pending:
            gauge.add_metric([str(channel)], n)
        yield gauge
        held = GaugeMetricFamily(
            "pilotwatch_notify_held_deliveries",
            "deliveries held by a silence or the hourly cap",
            labels=["channel", "status"],
        )
        for label, n in counts["held"].items():
            channel_name, status = label.split("|", 1)
            held.add_metric([channel_name, status], n)
        yield held


def serve_metrics(settings: NotifySettings) -> Any:
    if settings.metrics_port is None:
        return None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NotifyCollector(settings.state_db))
    server, _thread = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    return server
