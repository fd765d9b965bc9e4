"""Receivers that fail: an SMTP server that is down, a webhook that answers 500 five times or 429 with
Retry-After, and one that never recovers. Every notification arrives once after recovery, the retries are
visible in the notifier's attempts and /metrics, and what never arrives is a dead letter with its last error.

The SMTP outage lasts ``PILOTWATCH_TEST_SMTP_OUTAGE_S`` seconds (default 8): the server is really stopped and the
port refuses connections. The issue's 2 minutes behave the same, only with more attempts, and would take a
quarter of CI's time budget; run ``PILOTWATCH_TEST_SMTP_OUTAGE_S=120 pytest tests/notify/test_outage.py`` to
see it (docs/alerts.md, "Notifications" has the figures of such a run).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import httpx

from notify.service import Notifier, serve_metrics
from notify.store import DeliveryStatus, MessageStatus, attempts_of, deliveries_for_alert
from pilotwatch.manifest import AlertKind
from pilotwatch.settings import free_port
from tests.notify.conftest import Engine, drain, transition
from tests.notify.receivers import SmtpServer, WebhookReceiver

K = AlertKind
OUTAGE_S = float(os.environ.get("PILOTWATCH_TEST_SMTP_OUTAGE_S", "8"))


def _message_ids(notifier: Notifier, channel: str, recipient: str) -> list[int]:
    rows = notifier.store.conn.execute(
        "SELECT id FROM notify_messages WHERE channel = ? AND recipient = ? ORDER BY id", (channel, recipient)
    ).fetchall()
    return [int(r[0]) for r in rows]


def test_smtp_down_and_a_webhook_failing_five_times_deliver_each_notification_once_after_recovery(
    engine: Engine, make_notifier: Callable[..., Notifier], smtp: SmtpServer, webhooks: WebhookReceiver
) -> None:
    smtp.stop()
    webhooks.plan = [(500, {})] * 5
    notifier = make_notifier(max_attempts=60, retry_max_s=max(2.0, OUTAGE_S / 8))
    stop = threading.Event()
    worker = threading.Thread(target=notifier.run, args=(stop,))
    worker.start()
    try:
        ids = engine.emit(*(transition("bangkok", K.POLLUTION) for _ in range(3)))
        time.sleep(1.0)
        ids += engine.emit(*(transition("bangkok", K.POLLUTION) for _ in range(2)))
        time.sleep(max(0.0, OUTAGE_S - 1.0))
        assert smtp.received.raw == 0
        smtp.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (
                smtp.received.transitions_of("bkk-staff@city.example") == ids
                and webhooks.received.transitions_of("bkk-staff-hook") == ids
            ):
                break
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join()
    assert smtp.received.transitions_of("bkk-staff@city.example") == ids
    assert smtp.received.resent() == 0
    assert webhooks.received.transitions_of("bkk-staff-hook") == ids
    assert webhooks.received.resent() == 0
    assert webhooks.answers[:5] == [500] * 5
    assert webhooks.answers[5:] == [200] * (len(webhooks.answers) - 5)
    # The retries are visible: attempts with their errors, and in each alert's deliveries.
    mail_attempts = [
        a
        for m in _message_ids(notifier, "email", "bkk-staff@city.example")
        for a in attempts_of(notifier.store.conn, m)
    ]
    assert sum(1 for a in mail_attempts if a[1] == "retry") >= 2
    print(
        f"SMTP down {OUTAGE_S:g} s: {len(mail_attempts)} e-mail attempts"
        f" ({sum(1 for a in mail_attempts if a[1] == 'retry')} retried) for"
        f" {len(_message_ids(notifier, 'email', 'bkk-staff@city.example'))} messages"
    )
    assert all("Connection refused" in a[2] or "ConnectionRefused" in a[2] for a in mail_attempts if a[1] == "retry")
    hook_attempts = [
        a for m in _message_ids(notifier, "webhook", "bkk-staff-hook") for a in attempts_of(notifier.store.conn, m)
    ]
    assert [a[1] for a in hook_attempts].count("retry") == 5
    assert all(a[2].startswith("HTTP 500") for a in hook_attempts if a[1] == "retry")
    alert_id = notifier.store.conn.execute(
        "SELECT alert_id FROM notify_deliveries WHERE transition_id = ?", (ids[0],)
    ).fetchone()[0]
    views = {v.channel: v for v in deliveries_for_alert(notifier.store.conn, alert_id)}
    assert views["email"].status == DeliveryStatus.SENT
    assert views["email"].attempts >= 2
    assert views["webhook"].status == DeliveryStatus.SENT


def test_retry_after_is_honoured(
    engine: Engine, make_notifier: Callable[..., Notifier], webhooks: WebhookReceiver
) -> None:
    webhooks.plan = [(429, {"Retry-After": "2"}), (503, {"Retry-After": "1"})]
    notifier = make_notifier()
    fired = engine.emit(transition("melaka", K.POLLUTION))[0]
    drain(notifier, lambda: webhooks.received.transitions_of("mlk-staff-hook") == [fired], timeout_s=15)
    assert webhooks.answers == [429, 503, 200]
    gaps = [b - a for a, b in zip(webhooks.answer_times, webhooks.answer_times[1:], strict=False)]
    # Backoff alone would retry after 0.1-0.4 s here; the receiver asked for 2 s and then 1 s.
    assert gaps[0] >= 1.9
    assert gaps[1] >= 0.9


def test_a_webhook_that_never_recovers_becomes_a_dead_letter_and_metrics_count_it(
    engine: Engine, make_notifier: Callable[..., Notifier], webhooks: WebhookReceiver, smtp: SmtpServer
) -> None:
    webhooks.plan = [(500, {})] * 3 + [(410, {})]
    notifier = make_notifier(max_attempts=3)
    first = engine.emit(transition("bangkok", K.POLLUTION))[0]

    def dead() -> list[tuple[str, int, str]]:
        return [
            (str(r[0]), int(r[1]), str(r[2]))
            for r in notifier.store.conn.execute(
                "SELECT channel, attempts, last_error FROM notify_messages WHERE status = ?", (MessageStatus.DEAD,)
            )
        ]

    drain(notifier, lambda: len(dead()) == 1, timeout_s=15)
    assert dead() == [("webhook", 3, "HTTP 500: ")]
    # A 410 is final at once: no retries for a receiver that says the endpoint is gone.
    second = engine.emit(transition("bangkok", K.POLLUTION))[0]
    drain(notifier, lambda: len(dead()) == 2, timeout_s=15)
    assert dead()[1] == ("webhook", 1, "HTTP 410: ")
    assert webhooks.received.transitions_of("bkk-staff-hook") == []
    drain(notifier, lambda: smtp.received.transitions_of("bkk-staff@city.example") == [first, second])
    port = free_port()
    server = serve_metrics(notifier.settings.model_copy(update={"metrics_port": port}))
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        server.shutdown()
        server.server_close()
    assert 'pilotwatch_notify_sent_total{channel="email"} 2.0' in text
    assert 'pilotwatch_notify_sent_total{channel="webhook"} 0.0' in text
    assert 'pilotwatch_notify_retried_total{channel="webhook"} 3.0' in text  # two retried, the third gave up
    assert 'pilotwatch_notify_failed_total{channel="webhook"} 4.0' in text
    assert 'pilotwatch_notify_dead_lettered_total{channel="webhook"} 2.0' in text
    # A dead letter can be sent again once its cause is fixed.
    message_id = int(
        notifier.store.conn.execute("SELECT MIN(id) FROM notify_messages WHERE status = 'dead'").fetchone()[0]
    )
    assert notifier.store.requeue_dead(message_id, int(time.time() * 1000))
    drain(notifier, lambda: webhooks.received.transitions_of("bkk-staff-hook") == [first])
