"""Grouping, the hourly cap with its summary, repeats and escalation, driven by the notifier's clock.

``Notifier.run_once(now)`` takes the time, so an hour of policy runs in a second; every message still goes
through the real webhook receiver and SMTP server.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from notify.service import Notifier
from pilotwatch.alerting import TransitionKind
from pilotwatch.manifest import AlertKind
from tests.notify.conftest import ESCALATE_AFTER_S, Engine, drain, transition
from tests.notify.receivers import SmtpServer, WebhookReceiver

K = AlertKind
S = 1000


def now() -> int:
    return int(time.time() * 1000)


def test_a_burst_of_50_alerts_of_one_city_and_kind_goes_out_as_one_message(
    engine: Engine, make_notifier: Callable[..., Notifier], smtp: SmtpServer, webhooks: WebhookReceiver
) -> None:
    notifier = make_notifier(group_window_s=30.0)
    t0 = now()
    ids: list[int] = []
    for second in range(0, 25, 5):  # 5 batches of 10 over 20 seconds, all inside one 30 s window
        ids += engine.emit(*(transition("bangkok", K.POLLUTION) for _ in range(10)))
        notifier.run_once(t0 + second * S)
    assert webhooks.received.raw == 0
    assert smtp.received.raw == 0
    # Another city's alert in the same window is not grouped with Bangkok's.
    other = engine.emit(transition("melaka", K.POLLUTION))[0]
    notifier.run_once(t0 + 25 * S)
    drain(notifier, lambda: len(webhooks.received.docs("bkk-staff-hook")) >= 1, now_ms=t0 + 31 * S)
    time.sleep(0.2)
    notifier.run_once(t0 + 60 * S)
    docs = webhooks.received.docs("bkk-staff-hook")
    assert len(docs) == 1
    assert sorted(a["transition_id"] for a in docs[0]["alerts"]) == sorted(ids)
    assert {a["city"] for a in docs[0]["alerts"]} == {"bangkok"}
    drain(notifier, lambda: len(smtp.received.docs("bkk-staff@city.example")) == 1, now_ms=t0 + 61 * S)
    mail = smtp.received.docs("bkk-staff@city.example")[0]
    assert mail["Subject"] == "[pilotwatch] 50 pollution alerts fired in bangkok"
    drain(notifier, lambda: webhooks.received.transitions_of("mlk-staff-hook") == [other], now_ms=t0 + 61 * S)


def test_hourly_cap_holds_back_and_then_sends_one_summary(
    engine: Engine, make_notifier: Callable[..., Notifier], webhooks: WebhookReceiver
) -> None:
    notifier = make_notifier(max_per_recipient_per_hour=3)
    t0 = now()
    ids = []
    for i in range(6):  # six separate messages' worth: each is claimed before the next arrives
        ids += engine.emit(transition("melaka", K.POLLUTION))
        notifier.run_once(t0 + i * S)
    time.sleep(0.2)
    notifier.run_once(t0 + 10 * S)
    docs = webhooks.received.docs("mlk-staff-hook")
    assert [d["kind"] for d in docs] == ["alerts"] * 3
    assert sorted(a["transition_id"] for d in docs for a in d["alerts"]) == ids[:3]
    # An hour after the first message there is room again: one summary of the three held back.
    drain(notifier, lambda: len(webhooks.received.docs("mlk-staff-hook")) == 4, now_ms=t0 + 3601 * S)
    summary = next(d for d in webhooks.received.docs("mlk-staff-hook") if d["kind"] == "summary")
    assert summary["held_back"]["count"] == 3
    assert summary["held_back"]["by"] == {"pollution fired": 3}
    assert sorted(a["transition_id"] for a in summary["alerts"]) == ids[3:]
    assert sorted(webhooks.received.transitions_of("mlk-staff-hook")) == ids


def test_escalation_fires_after_its_timeout_and_not_after_an_acknowledgement(
    engine: Engine, make_notifier: Callable[..., Notifier], smtp: SmtpServer, webhooks: WebhookReceiver
) -> None:
    notifier = make_notifier()
    t0 = now()
    ignored = engine.emit(transition("bangkok", K.POLLUTION, alert_id="bkk-ignored"))[0]
    engine.emit(transition("bangkok", K.POLLUTION, alert_id="bkk-handled"))
    drain(notifier, lambda: len(webhooks.received.transitions_of("bkk-staff-hook")) == 2, now_ms=t0)
    ack = engine.emit(transition("bangkok", K.POLLUTION, TransitionKind.ACKNOWLEDGED, alert_id="bkk-handled"))[0]
    notifier.run_once(t0 + 60 * S)
    just_before = t0 + int((ESCALATE_AFTER_S - 1) * S)
    notifier.run_once(just_before)
    time.sleep(0.3)
    notifier.run_once(just_before)
    assert webhooks.received.transitions_of("duty-hook") == []
    assert smtp.received.transitions_of("duty@pilot.example") == []
    after = t0 + int((ESCALATE_AFTER_S + 1) * S)
    drain(notifier, lambda: webhooks.received.transitions_of("duty-hook") == [ignored], now_ms=after)
    drain(notifier, lambda: smtp.received.transitions_of("duty@pilot.example") == [ignored], now_ms=after)
    escalated = webhooks.received.docs("duty-hook")[0]["alerts"][0]
    assert escalated["reason"] == "escalation"
    assert escalated["step"] == 1
    assert "escalated" in smtp.received.docs("duty@pilot.example")[0]["Subject"]
    # The staff heard of the acknowledgement; the duty officer, never told of that alert, did not.
    assert ack in webhooks.received.transitions_of("bkk-staff-hook")
    # Once escalated, the duty officer also hears how the alert ends.
    resolved = engine.emit(transition("bangkok", K.POLLUTION, TransitionKind.RESOLVED, alert_id="bkk-ignored"))[0]
    drain(notifier, lambda: webhooks.received.transitions_of("duty-hook") == sorted([ignored, resolved]), now_ms=after)
    # Much later nothing more escalates: one step, fired once, and the other alert was acknowledged.
    notifier.run_once(after + 10 * 3600 * S)
    time.sleep(0.2)
    notifier.run_once(after + 10 * 3600 * S)
    assert webhooks.received.transitions_of("duty-hook") == sorted([ignored, resolved])


def test_a_still_firing_alert_is_repeated_until_acknowledged(
    engine: Engine, make_notifier: Callable[..., Notifier], webhooks: WebhookReceiver
) -> None:
    notifier = make_notifier(repeat_interval_s=100.0)
    t0 = now()
    fired = engine.emit(transition("melaka", K.POLLUTION, alert_id="mlk-firing"))[0]
    drain(notifier, lambda: webhooks.received.transitions_of("mlk-staff-hook") == [fired], now_ms=t0)
    notifier.run_once(t0 + 50 * S)
    drain(notifier, lambda: len(webhooks.received.docs("mlk-staff-hook")) == 2, now_ms=t0 + 101 * S)
    repeat = webhooks.received.docs("mlk-staff-hook")[1]["alerts"][0]
    assert (repeat["transition_id"], repeat["reason"], repeat["step"]) == (fired, "repeat", 1)
    ack = engine.emit(transition("melaka", K.POLLUTION, TransitionKind.ACKNOWLEDGED, alert_id="mlk-firing"))[0]
    drain(notifier, lambda: ack in webhooks.received.transitions_of("mlk-staff-hook"), now_ms=t0 + 102 * S)
    notifier.run_once(t0 + 1000 * S)
    time.sleep(0.2)
    notifier.run_once(t0 + 1000 * S)
    assert len(webhooks.received.docs("mlk-staff-hook")) == 3
