"""Fixtures of the notifier tests: an alert engine's database (WAL) with the transitions outbox, a test manifest
and recipients file, the real receivers of :mod:`tests.notify.receivers`, and a notifier wired to them."""

from __future__ import annotations

import copy
import itertools
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from commands.stack import LocalStack
from notify.recipients import Recipients, parse_recipients
from notify.service import Notifier
from notify.settings import NotifySettings
from pilotwatch.alerting import (
    ALERT_STORE_FILE,
    Severity,
    Transition,
    TransitionKind,
    append_transition,
    create_transitions_table,
)
from pilotwatch.manifest import AlertKind, Manifest, parse_manifest
from pilotwatch.settings import free_port
from tests.conftest import DEFAULT_MANIFEST
from tests.notify.receivers import MqttListener, SmtpServer, WebhookReceiver

SECRETS = {
    "bkk-staff-hook": "bkk-staff-signing-secret-0001",
    "mlk-staff-hook": "mlk-staff-signing-secret-0002",
    "duty-hook": "duty-officer-signing-secret-0003",
}
ACK_SECRET = "ack-link-secret-for-tests-0123456789"
SITES = {"bangkok": "bkk-pratunam-pier", "melaka": "mlk-kampung-morten", "semarang": "smg-batik-natural"}
ESCALATE_AFTER_S = 600.0
ROUTES = [
    {
        "city": "*",
        "alert": "pollution",
        "roles": ["city_staff"],
        "channels": ["webhook", "email"],
        "escalation": [{"after_s": ESCALATE_AFTER_S, "roles": ["admin"]}],
    },
    {"city": "*", "alert": "limit_exceedance", "roles": ["city_staff", "evaluator"], "channels": ["email"]},
    {"city": "*", "alert": "device", "roles": ["operator"], "channels": ["mqtt", "email"]},
    {"city": "bangkok", "alert": "bin_overflow", "roles": ["operator"], "channels": ["mqtt"]},
]
_alert_ids = itertools.count(1)


@pytest.fixture(scope="session")
def notify_manifest() -> Manifest:
    raw: dict[str, Any] = copy.deepcopy(yaml.safe_load(DEFAULT_MANIFEST.read_text()))
    raw["alerts"] = ROUTES
    return parse_manifest(raw, "default manifest with notifier test routes")


@pytest.fixture
def notify_manifest_file(tmp_path: Path) -> Path:
    """The test manifest as a file, for a notifier run as its own process."""
    raw: dict[str, Any] = copy.deepcopy(yaml.safe_load(DEFAULT_MANIFEST.read_text()))
    raw["alerts"] = ROUTES
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


class Engine:
    """Appends transitions exactly as the alert engine does: in a transaction of its WAL database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(str(path), isolation_level=None, timeout=30, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        create_transitions_table(self.conn)

    def emit(self, *transitions: Transition) -> list[int]:
        self.conn.execute("BEGIN IMMEDIATE")
        ids = [append_transition(self.conn, t) for t in transitions]
        self.conn.execute("COMMIT")
        return ids

    def close(self) -> None:
        self.conn.close()


def transition(
    city: str,
    kind: AlertKind,
    which: TransitionKind = TransitionKind.FIRED,
    alert_id: str | None = None,
    silenced: bool = False,
) -> Transition:
    return Transition(
        alert_id=alert_id or f"a{next(_alert_ids):05d}",
        transition=which,
        kind=kind,
        city=city,
        site=SITES.get(city, ""),
        severity=Severity.CRITICAL,
        t_ms=int(time.time() * 1000),
        silenced=silenced,
        body={
            "parameter": "do",
            "value": 1.2,
            "unit": "mg/L",
            "limit": "min 2.0 mg/L",
            "statistic": "sample",
            "citation": "Thailand PCD surface water class 3",
            "qc": "good (QARTOD 1)",
        },
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    (tmp_path / "alerts").mkdir()
    e = Engine(tmp_path / "alerts" / ALERT_STORE_FILE)
    yield e
    e.close()


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path, free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def webhooks() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(SECRETS)
    yield receiver
    receiver.close()


@pytest.fixture
def mqtt_prefix() -> str:
    return f"pwtest/{uuid.uuid4().hex[:8]}/bangkok/ops"


@pytest.fixture
def mqtt_listener(stack: LocalStack, mqtt_prefix: str) -> Iterator[MqttListener]:
    listener = MqttListener(stack.config.mqtt_port, [mqtt_prefix])
    yield listener
    listener.close()


def recipients_document(webhook_base: str, mqtt_prefix: str, secret_file: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "recipients": [
            {
                "city": "bangkok",
                "role": "city_staff",
                "email": ["bkk-staff@city.example"],
                "webhooks": [
                    {"name": "bkk-staff-hook", "url": f"{webhook_base}/hooks/bkk-staff-hook", "secret_env": "PW_T_BKK"}
                ],
            },
            {"city": "bangkok", "role": "evaluator", "email": ["bkk-eval@uni.example"]},
            {
                "city": "bangkok",
                "role": "operator",
                "email": ["bkk-ops@pilot.example"],
                "mqtt": [{"topic": mqtt_prefix}],
            },
            {
                "city": "melaka",
                "role": "city_staff",
                "email": ["mlk-staff@city.example"],
                "webhooks": [
                    {
                        "name": "mlk-staff-hook",
                        "url": f"{webhook_base}/hooks/mlk-staff-hook",
                        "secret_file": str(secret_file),
                    }
                ],
            },
            {
                "city": "*",
                "role": "admin",
                "email": ["duty@pilot.example"],
                "webhooks": [
                    {"name": "duty-hook", "url": f"{webhook_base}/hooks/duty-hook", "secret_env": "PW_T_DUTY"}
                ],
            },
        ],
    }


@pytest.fixture
def recipients_file(
    tmp_path: Path, webhooks: WebhookReceiver, mqtt_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("PW_T_BKK", SECRETS["bkk-staff-hook"])
    monkeypatch.setenv("PW_T_DUTY", SECRETS["duty-hook"])
    secret_file = tmp_path / "mlk-hook.secret"
    secret_file.write_text(SECRETS["mlk-staff-hook"] + "\n")
    path = tmp_path / "recipients.yaml"
    path.write_text(yaml.safe_dump(recipients_document(webhooks.base_url, mqtt_prefix, secret_file)))
    return path


@pytest.fixture
def recipients(recipients_file: Path, notify_manifest: Manifest) -> Recipients:
    return parse_recipients(yaml.safe_load(recipients_file.read_text()), str(recipients_file), notify_manifest)


@pytest.fixture
def notify_settings(
    tmp_path: Path, engine: Engine, smtp: SmtpServer, stack: LocalStack, recipients_file: Path
) -> Callable[..., NotifySettings]:
    def make(**overrides: Any) -> NotifySettings:
        values: dict[str, Any] = {
            "alerts_db": engine.path,
            "state_db": tmp_path / "notify" / "notify.db",
            "recipients_file": recipients_file,
            "group_window_s": 0.0,
            "retry_base_s": 0.2,
            "retry_max_s": 2.0,
            "send_timeout_s": 5.0,
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "smtp_username": SmtpServer.USER,
            "smtp_password": SmtpServer.PASSWORD,
            "smtp_ca_file": smtp.cert,
            "mqtt": {"host": "127.0.0.1", "port": stack.config.mqtt_port},
            "mqtt_client_id": f"notify-{uuid.uuid4().hex[:8]}",
            "public_url": "https://pilotwatch.example",
            "ack_link_secret": ACK_SECRET,
        }
        values.update(overrides)
        return NotifySettings(**values)

    return make


@pytest.fixture
def make_notifier(
    notify_settings: Callable[..., NotifySettings], notify_manifest: Manifest, recipients: Recipients
) -> Iterator[Callable[..., Notifier]]:
    made: list[Notifier] = []

    def make(**overrides: Any) -> Notifier:
        notifier = Notifier(notify_settings(**overrides), notify_manifest, recipients)
        made.append(notifier)
        return notifier

    yield make
    for n in made:
        n.close()


def drain(notifier: Notifier, done: Callable[[], bool], timeout_s: float = 20.0, now_ms: int | None = None) -> None:
    """Run the notifier's cycle until ``done()`` holds (checked at the receivers) or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        notifier.run_once(now_ms)
        if done():
            return
        time.sleep(0.05)
    raise AssertionError(f"not done within {timeout_s} s")
