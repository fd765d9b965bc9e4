"""The three ways a message leaves: e-mail (SMTP, STARTTLS + login), signed webhook, MQTT (QoS 1).

Each channel has one verb, ``send(message) -> SendResult``, and sorts every failure into RETRY (the network, a
5xx, a 429 or 408, an SMTP 4xx: worth trying again) or REJECTED (a 4xx, an SMTP 5xx: it never will be accepted,
so it becomes a dead letter at once). A channel never raises for a delivery problem; the store records the
outcome. Constructors validate and do not touch the network.
"""

from __future__ import annotations

import email.utils
import json
import random
import smtplib
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Protocol

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from notify.payload import SCHEMA, email_message
from notify.recipients import Recipients
from notify.settings import NotifySettings, SmtpSecurity
from notify.store import Outcome, OutgoingMessage, SendResult
from pilotwatch.manifest import AlertChannel
from pilotwatch.signing import IDEMPOTENCY_HEADER, SCHEMA_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, webhook_signature

# Past this a Retry-After is not honoured literally: the backoff ceiling applies (a misconfigured receiver must
# not park a message for a day); the message is still retried, never dropped.
RETRY_AFTER_CEILING_S = 3600.0


class Channel(Protocol):
    channel: AlertChannel

    def send(self, message: OutgoingMessage) -> SendResult: ...

    def close(self) -> None: ...


def backoff_s(attempt: int, retry_after_s: float | None, base_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before attempt ``attempt + 1``: exponential with equal jitter, never sooner than Retry-After.

    Equal jitter (half fixed, half random) keeps a minimum spacing while spreading a burst of messages that failed
    together, so a receiver coming back is not hit by all of them in the same second.
    """
    ceiling = min(max_s, base_s * 2.0 ** max(0, attempt - 1))
    delay: float = ceiling / 2 + rng.uniform(0, ceiling / 2)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, RETRY_AFTER_CEILING_S))
    return delay


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_s)


def classify_http(status: int) -> Outcome:
    """One place that decides what an HTTP status means for a webhook delivery."""
    if 200 <= status < 300:
        return Outcome.SENT
    if status in (408, 425, 429) or status >= 500:
        return Outcome.RETRY
    return Outcome.REJECTED


class WebhookChannel:
    channel = AlertChannel.WEBHOOK

    def __init__(self, recipients: Recipients, timeout_s: float) -> None:
        self.recipients = recipients
        self.client = httpx.Client(timeout=timeout_s, follow_redirects=False)

    def send(self, message: OutgoingMessage) -> SendResult:
        try:
            hook = self.recipients.webhook(message.recipient)
        except KeyError:
            return SendResult(Outcome.REJECTED, f"webhook {message.recipient!r} is no longer in the recipients file")
        body = json.dumps(message.document, sort_keys=True, separators=(",", ":")).encode()
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "pilotwatch-notify",
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: webhook_signature(hook.secret.get_secret_value(), ts, body),
            IDEMPOTENCY_HEADER: message.idempotency_key,
            SCHEMA_HEADER: SCHEMA,
        }
        try:
            response = self.client.post(hook.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return SendResult(Outcome.RETRY, f"{type(exc).__name__}: {exc}")
        outcome = classify_http(response.status_code)
        if outcome is Outcome.SENT:
            return SendResult(outcome)
        error = f"HTTP {response.status_code}: {response.text[:200]}"
        return SendResult(outcome, error, parse_retry_after(response.headers.get("Retry-After"), time.time()))

    def close(self) -> None:
        self.client.close()


class EmailChannel:
    channel = AlertChannel.EMAIL

    def __init__(self, settings: NotifySettings) -> None:
        if settings.smtp_host is None:
            raise ValueError("e-mail is routed but PILOTWATCH_NOTIFY_SMTP_HOST is not set")
        self.settings = settings
        self.context = ssl.create_default_context(cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None)

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        assert s.smtp_host is not None
        if s.smtp_security is SmtpSecurity.TLS:
            return smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.send_timeout_s, context=self.context)
        smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.send_timeout_s)
        smtp.ehlo()
        # STARTTLS is required, never opportunistic: without it the password and the alert would cross in clear.
        smtp.starttls(context=self.context)
        smtp.ehlo()
        return smtp

    def send(self, message: OutgoingMessage) -> SendResult:
        s = self.settings
        msg = email_message(message.document, s.smtp_from, message.recipient)
        try:
            with self._connect() as smtp:
                if s.smtp_username is not None and s.smtp_password is not None:
                    smtp.login(s.smtp_username, s.smtp_password.get_secret_value())
                smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            outcome = Outcome.REJECTED if all(c >= 500 for c in codes) else Outcome.RETRY
            return SendResult(outcome, f"recipient refused: {exc.recipients}")
        except smtplib.SMTPResponseException as exc:
            # 5xx is permanent, except an authentication failure (535), which an operator fixes by configuration.
            permanent = exc.smtp_code >= 500 and exc.smtp_code != 535
            detail = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            return SendResult(Outcome.REJECTED if permanent else Outcome.RETRY, f"SMTP {exc.smtp_code}: {detail}")
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            return SendResult(Outcome.RETRY, f"{type(exc).__name__}: {exc}")
        return SendResult(Outcome.SENT)

    def close(self) -> None:
        return None


class MqttChannel:
    """Publishes each message to ``<prefix>/events`` (not retained) and the open alerts of each site it concerns
    to ``<prefix>/sites/<site>`` (retained), both QoS 1, and counts it sent only when every PUBACK has come."""

    channel = AlertChannel.MQTT

    def __init__(self, settings: NotifySettings) -> None:
        if settings.mqtt is None:
            raise ValueError("MQTT is routed but PILOTWATCH_NOTIFY_MQTT__HOST is not set")
        self.settings = settings
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.mqtt_client_id, clean_session=True)
        if settings.mqtt.username is not None:
            password = settings.mqtt.password.get_secret_value() if settings.mqtt.password else None
            self.client.username_pw_set(settings.mqtt.username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._started = False
        self._lock = threading.Lock()

    def _ensure_started(self) -> None:
        with self._lock:
            if not self._started:
                assert self.settings.mqtt is not None
                mqtt_conn = self.settings.mqtt
                self.client.connect_async(mqtt_conn.host, mqtt_conn.port, keepalive=mqtt_conn.keepalive_s)
                self.client.loop_start()
                self._started = True

    def _publish(self, topic: str, payload: bytes, retain: bool) -> str | None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return f"publish to {topic} failed: {mqtt.error_string(info.rc)}"
        info.wait_for_publish(timeout=self.settings.send_timeout_s)
        if not info.is_published():
            return f"no PUBACK for {topic} within {self.settings.send_timeout_s} s"
        return None

    def send(self, message: OutgoingMessage) -> SendResult:
        self._ensure_started()
        deadline = time.monotonic() + min(5.0, self.settings.send_timeout_s)
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.client.is_connected():
            return SendResult(
                Outcome.RETRY, f"not connected to the broker {self.settings.mqtt.host if self.settings.mqtt else None}"
            )
        prefix = message.recipient
        try:
            body = json.dumps(message.document, sort_keys=True, separators=(",", ":")).encode()
            error = self._publish(f"{prefix}/events", body, retain=False)
            sites: Mapping[str, object] = message.extra.get("sites", {})
            for site, open_alerts in sorted(sites.items()):
                if error is None:
                    state = {"schema": SCHEMA, "site": site, "open_alerts": open_alerts}
                    error = self._publish(f"{prefix}/sites/{site}", json.dumps(state, sort_keys=True).encode(), True)
        except (RuntimeError, ValueError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        return SendResult(Outcome.RETRY, error) if error else SendResult(Outcome.SENT)

    def close(self) -> None:
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()
