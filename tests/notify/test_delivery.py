"""Delivery through real receivers: aiosmtpd (STARTTLS + AUTH), a signature-checking webhook receiver, Mosquitto.

Each test appends transitions to a WAL database exactly as the alert engine does and counts what arrives at the
receivers, never what the notifier believes it sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from commands.stack import LocalStack
from notify.service import Notifier
from notify.store import DeliveryStatus, deliveries_for_alert
from pilotwatch.alerting import TransitionKind, read_transitions
from pilotwatch.manifest import AlertKind
from tests.notify.conftest import Engine, drain, transition
from tests.notify.receivers import MqttListener, SmtpServer, WebhookReceiver

K = AlertKind


def test_every_routed_transition_reaches_every_recipient_of_its_role_and_city_and_nobody_else(
    engine: Engine,
    make_notifier: Callable[..., Notifier],
    smtp: SmtpServer,
    webhooks: WebhookReceiver,
    mqtt_listener: MqttListener,
    mqtt_prefix: str,
    stack: LocalStack,
) -> None:
    cases = [(city, kind) for city in ("bangkok", "melaka", "semarang") for kind in AlertKind]
    ids = dict(zip(cases, engine.emit(*(transition(city, kind) for city, kind in cases)), strict=True))
    resolved = engine.emit(transition("bangkok", K.POLLUTION, TransitionKind.RESOLVED, alert_id="bkk-resolved"))[0]
    # Who must get what, written out from the recipients file and routes by hand (not computed by the notifier).
    expected: dict[tuple[str, str], list[int]] = {
        ("email", "bkk-staff@city.example"): [
            ids["bangkok", K.POLLUTION],
            ids["bangkok", K.LIMIT_EXCEEDANCE],
            resolved,
        ],
        ("webhook", "bkk-staff-hook"): [ids["bangkok", K.POLLUTION], resolved],
        ("email", "bkk-eval@uni.example"): [ids["bangkok", K.LIMIT_EXCEEDANCE]],
        ("email", "bkk-ops@pilot.example"): [ids["bangkok", K.DEVICE]],
        ("mqtt", mqtt_prefix): [ids["bangkok", K.DEVICE], ids["bangkok", K.BIN_OVERFLOW]],
        ("email", "mlk-staff@city.example"): [ids["melaka", K.POLLUTION], ids["melaka", K.LIMIT_EXCEEDANCE]],
        ("webhook", "mlk-staff-hook"): [ids["melaka", K.POLLUTION]],
    }
    expected = {k: sorted(v) for k, v in expected.items()}
    notifier = make_notifier()

    def got() -> dict[tuple[str, str], list[int]]:
        out: dict[tuple[str, str], list[int]] = {}
        for channel, received in (
            ("email", smtp.received),
            ("webhook", webhooks.received),
            ("mqtt", mqtt_listener.received),
        ):
            for recipient, transitions in received.per_recipient().items():
                out[channel, recipient] = transitions
        return out

    drain(notifier, lambda: got() == expected)
    time.sleep(0.3)  # anything extra that was on its way arrives now and fails the comparison
    notifier.run_once()
    assert got() == expected
    assert webhooks.bad_signatures == 0
    assert smtp.logins
    assert smtp.received.resent() == 0
    # The MQTT display at the site gets the open alerts of the site, retained: a display that connects later
    # (a new subscriber) still receives it, with the retain flag set.
    state_topic = f"{mqtt_prefix}/sites/bkk-pratunam-pier"
    late = MqttListener(stack.config.mqtt_port, [mqtt_prefix])
    try:
        deadline = time.monotonic() + 5
        while state_topic not in late.site_states and time.monotonic() < deadline:
            time.sleep(0.05)
        assert late.retained_flags[state_topic] is True
        open_ids = {a["alert_id"] for a in late.site_states[state_topic]["open_alerts"]}
        assert late.received.raw == 0  # events are not retained
    finally:
        late.close()
    assert "bkk-resolved" not in open_ids
    # Only the open alerts routed to this recipient: the site's device and bin alerts, not pollution or limits.
    alert_of = {t.id: t.alert_id for t in read_transitions(engine.conn, 0)}
    assert open_ids == {alert_of[ids["bangkok", K.DEVICE]], alert_of[ids["bangkok", K.BIN_OVERFLOW]]}


def test_email_carries_the_alert_details_and_a_working_link_pair(
    engine: Engine, make_notifier: Callable[..., Notifier], smtp: SmtpServer
) -> None:
    engine.emit(transition("bangkok", K.LIMIT_EXCEEDANCE, alert_id="bkk-lim-1"))
    notifier = make_notifier()
    drain(notifier, lambda: len(smtp.received.docs("bkk-eval@uni.example")) == 1)
    message = smtp.received.docs("bkk-eval@uni.example")[0]
    assert "bkk-lim-1" in message["Subject"] or "limit exceedance" in message["Subject"]
    parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in message.walk() if not p.is_multipart()}
    for body in (parts["text/plain"], parts["text/html"]):
        for needle in (
            "bkk-pratunam-pier",
            "do",
            "1.2",
            "min 2.0 mg/L",
            "Thailand PCD surface water class 3",
            "good (QARTOD 1)",
            "https://pilotwatch.example/alerts/bkk-lim-1",
            "https://pilotwatch.example/ack-link/v1.",
        ):
            assert needle in body, needle


def test_silenced_transitions_are_held_and_recorded_not_sent(
    engine: Engine, make_notifier: Callable[..., Notifier], smtp: SmtpServer, webhooks: WebhookReceiver
) -> None:
    held = engine.emit(transition("bangkok", K.POLLUTION, alert_id="bkk-quiet", silenced=True))[0]
    sent = engine.emit(transition("bangkok", K.POLLUTION, alert_id="bkk-loud"))[0]
    notifier = make_notifier()
    drain(notifier, lambda: webhooks.received.transitions_of("bkk-staff-hook") == [sent])
    time.sleep(0.2)
    notifier.run_once()
    assert held not in smtp.received.transitions_of("bkk-staff@city.example")
    assert webhooks.received.transitions_of("bkk-staff-hook") == [sent]
    rows = deliveries_for_alert(notifier.store.conn, "bkk-quiet")
    assert {(r.channel, r.recipient, r.status) for r in rows} == {
        ("email", "bkk-staff@city.example", DeliveryStatus.HELD_SILENCE),
        ("webhook", "bkk-staff-hook", DeliveryStatus.HELD_SILENCE),
    }
    # A silenced alert starts no escalation timer either: an hour later the duty officer has heard of the loud
    # alert, which nobody acknowledged, and not of the silenced one.
    later = int(time.time() * 1000) + 3_600_000
    drain(notifier, lambda: webhooks.received.transitions_of("duty-hook") == [sent], now_ms=later)
