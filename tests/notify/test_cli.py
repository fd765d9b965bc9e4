"""``pilotwatch notify test|deliveries|deadletter`` through the real command line and real receivers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from commands.cli import main
from notify.settings import NotifySettings
from pilotwatch.manifest import AlertKind
from tests.notify.conftest import Engine, transition
from tests.notify.receivers import MqttListener, SmtpServer, WebhookReceiver


@pytest.fixture
def cli_env(
    notify_settings: Callable[..., NotifySettings], notify_manifest_file: Path, monkeypatch: pytest.MonkeyPatch
) -> NotifySettings:
    settings = notify_settings(max_attempts=2, retry_base_s=0.05)
    flat: dict[str, object] = {}
    for name, value in settings.model_dump(exclude_none=True).items():
        if isinstance(value, dict):  # a sub-model: PILOTWATCH_NOTIFY_MQTT__HOST
            flat.update({f"{name}__{sub}": v for sub, v in value.items()})
        else:
            flat[name] = value
    for name, value in flat.items():
        text = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
        monkeypatch.setenv(f"PILOTWATCH_NOTIFY_{name.upper()}", text)
    monkeypatch.setenv("PILOTWATCH_MANIFEST", str(notify_manifest_file))
    return settings


def test_notify_test_sends_through_every_channel_of_the_role_and_reports_each(
    cli_env: NotifySettings,
    smtp: SmtpServer,
    webhooks: WebhookReceiver,
    mqtt_listener: MqttListener,
    mqtt_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["alerts", "notify", "test", "--city", "bangkok", "--role", "operator"]) == 0
    out = capsys.readouterr().out
    assert "bkk-ops@pilot.example" in out
    assert mqtt_prefix in out
    assert out.count("sent") == 2
    assert len(smtp.received.docs("bkk-ops@pilot.example")) == 1
    assert smtp.received.docs("bkk-ops@pilot.example")[0]["Subject"] == "[pilotwatch] test message"
    assert len(mqtt_listener.received.docs(mqtt_prefix)) == 1
    assert webhooks.received.raw == 0  # operators of Bangkok have no webhook; nobody else was sent anything
    # A channel that fails is reported with its error and the exit code says so.
    smtp.stop()
    assert main(["alerts", "notify", "test", "--city", "bangkok", "--role", "city_staff"]) == 1
    out = capsys.readouterr().out
    assert "bkk-staff-hook" in out
    assert "Connection refused" in out or "ConnectionRefused" in out
    assert len(webhooks.received.docs("bkk-staff-hook")) == 1


def test_notify_test_for_a_role_without_addresses_is_a_clear_error(
    cli_env: NotifySettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["alerts", "notify", "test", "--city", "jakarta", "--role", "city_staff"]) == 2
    assert "no address for role city_staff in city 'jakarta'" in capsys.readouterr().err.replace("\n", " ")


def test_deliveries_and_dead_letters_are_visible_from_the_command_line(
    cli_env: NotifySettings, engine: Engine, webhooks: WebhookReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    from notify.service import Notifier  # noqa: PLC0415
    from tests.notify.conftest import drain  # noqa: PLC0415

    webhooks.plan = [(500, {})] * 2
    engine.emit(transition("melaka", AlertKind.POLLUTION, alert_id="mlk-cli"))
    notifier = Notifier.from_settings(cli_env)
    try:
        drain(
            notifier,
            lambda: (
                notifier.store.conn.execute("SELECT COUNT(*) FROM notify_messages WHERE status='dead'").fetchone()[0]
                == 1
            ),
        )
    finally:
        notifier.close()
    assert main(["alerts", "notify", "deliveries", "mlk-cli", "--json"]) == 0
    rows = {r["channel"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["webhook"]["status"] == "dead"
    assert rows["webhook"]["attempts"] == 2
    assert rows["webhook"]["last_error"].startswith("HTTP 500")
    assert rows["email"]["status"] == "sent"
    assert main(["alerts", "notify", "deadletter", "list", "--json"]) == 0
    (dead,) = json.loads(capsys.readouterr().out)
    assert dead["recipient"] == "mlk-staff-hook"
    assert main(["alerts", "notify", "deadletter", "retry", str(dead["id"])]) == 0
    assert main(["alerts", "notify", "deadletter", "retry", str(dead["id"])]) == 2


def test_a_second_notifier_on_the_same_database_refuses_to_start(cli_env: NotifySettings) -> None:
    from notify.service import Notifier, NotifierLockedError  # noqa: PLC0415

    first = Notifier.from_settings(cli_env)
    try:
        with pytest.raises(NotifierLockedError, match="another notifier is running on"):
            Notifier.from_settings(cli_env)
    finally:
        first.close()
    Notifier.from_settings(cli_env).close()  # the lock goes with the process that held it
