"""``kill -9`` of the notifier process during a burst of 500 transitions, twice: after the restart each recipient
has each notification exactly once, counted at the receivers (a message that crossed a crash may arrive twice
with the same idempotency key, which the receiver drops; no transition may arrive in two different messages,
and none may be missing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from commands.stack import LocalStack
from pilotwatch.alerting import Transition
from pilotwatch.manifest import AlertKind
from tests.notify.conftest import ACK_SECRET, Engine, transition
from tests.notify.receivers import MqttListener, SmtpServer, WebhookReceiver

N = 500
ROOT = Path(__file__).resolve().parents[2]


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "commands.cli", "alerts", "notify", "run"], cwd=ROOT, env=env, stdout=out, stderr=out
        )


def _wait(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_9_during_a_burst_of_500_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path,
    engine: Engine,
    smtp: SmtpServer,
    webhooks: WebhookReceiver,
    mqtt_listener: MqttListener,
    mqtt_prefix: str,
    recipients_file: Path,
    notify_manifest_file: Path,
    stack: LocalStack,
) -> None:
    webhooks.delay_s = 0.003  # a receiver that takes a moment, so the kills land while messages are in flight
    env = dict(
        os.environ,
        PILOTWATCH_MANIFEST=str(notify_manifest_file),
        PILOTWATCH_NOTIFY_ALERTS_DB=str(engine.path),
        PILOTWATCH_NOTIFY_STATE_DB=str(tmp_path / "notify" / "notify.db"),
        PILOTWATCH_NOTIFY_RECIPIENTS_FILE=str(recipients_file),
        PILOTWATCH_NOTIFY_GROUP_WINDOW_S="0",
        PILOTWATCH_NOTIFY_MAX_ALERTS_PER_MESSAGE="5",
        PILOTWATCH_NOTIFY_MAX_PER_RECIPIENT_PER_HOUR="100000",
        PILOTWATCH_NOTIFY_RETRY_BASE_S="0.2",
        PILOTWATCH_NOTIFY_RETRY_MAX_S="1",
        PILOTWATCH_NOTIFY_SMTP_HOST="127.0.0.1",
        PILOTWATCH_NOTIFY_SMTP_PORT=str(smtp.port),
        PILOTWATCH_NOTIFY_SMTP_USERNAME=SmtpServer.USER,
        PILOTWATCH_NOTIFY_SMTP_PASSWORD=SmtpServer.PASSWORD,
        PILOTWATCH_NOTIFY_SMTP_CA_FILE=str(smtp.cert),
        PILOTWATCH_NOTIFY_MQTT__HOST="127.0.0.1",
        PILOTWATCH_NOTIFY_MQTT__PORT=str(stack.config.mqtt_port),
        PILOTWATCH_NOTIFY_MQTT_CLIENT_ID=f"notify-crash-{os.getpid()}",
        PILOTWATCH_NOTIFY_PUBLIC_URL="https://pilotwatch.example",
        PILOTWATCH_NOTIFY_ACK_LINK_SECRET=ACK_SECRET,
    )
    mix = [("bangkok", AlertKind.POLLUTION), ("melaka", AlertKind.POLLUTION), ("bangkok", AlertKind.DEVICE)]
    planned: list[Transition] = [transition(*mix[i % 3]) for i in range(N)]
    ids: list[int] = []

    def burst() -> None:  # the engine appends 500 transitions in 50 commits over about a second
        for i in range(0, N, 10):
            ids.extend(engine_writer.emit(*planned[i : i + 10]))
            time.sleep(0.02)

    engine_writer = Engine(engine.path)
    log = tmp_path / "notify.log"
    proc = _start(env, log)
    feeder = threading.Thread(target=burst)
    try:
        feeder.start()
        kills = 0
        for threshold in (15, 45):  # of about 68 webhook messages: kill early in the burst and again later
            _wait(lambda t=threshold: webhooks.received.raw >= t, 30, f"{threshold} webhook messages")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            proc = _start(env, log)
        feeder.join()
        by_id = dict(zip(ids, planned, strict=True))

        def expected(city: str, kind: AlertKind) -> list[int]:
            return sorted(i for i, t in by_id.items() if (t.city, t.kind) == (city, kind))

        want = {
            ("webhook", "bkk-staff-hook"): expected("bangkok", AlertKind.POLLUTION),
            ("email", "bkk-staff@city.example"): expected("bangkok", AlertKind.POLLUTION),
            ("webhook", "mlk-staff-hook"): expected("melaka", AlertKind.POLLUTION),
            ("email", "mlk-staff@city.example"): expected("melaka", AlertKind.POLLUTION),
            ("email", "bkk-ops@pilot.example"): expected("bangkok", AlertKind.DEVICE),
            ("mqtt", mqtt_prefix): expected("bangkok", AlertKind.DEVICE),
        }
        receivers = {"webhook": webhooks.received, "email": smtp.received, "mqtt": mqtt_listener.received}

        def got() -> dict[tuple[str, str], list[int]]:
            return {
                (channel, recipient): transitions
                for channel, received in receivers.items()
                for recipient, transitions in received.per_recipient().items()
            }

        _wait(lambda: got() == want, 60, "every notification after the restarts")
        time.sleep(1.0)  # anything sent twice in different messages would arrive now
        assert got() == want
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        feeder.join()
        engine_writer.close()
    assert kills == 2
    assert sum(len(v) for v in want.values()) == N * 2
    assert all(r.conflicts == 0 for r in receivers.values())
    # Retries that crossed a crash arrive with the key of the first send; at most one round of sends per kill
    # (PILOTWATCH_NOTIFY_SEND_CONCURRENCY, default 8).
    resent = sum(r.resent() for r in receivers.values())
    print(f"messages re-sent across the two kills and dropped by key at the receivers: {resent}")
    assert resent <= 2 * 8
