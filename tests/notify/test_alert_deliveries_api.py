"""From decision to delivery to the API: the real alert engine stores alerts and their transitions, the real
notifier delivers them to a loopback webhook receiver, and ``GET /alerts/{id}`` lists each delivery."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.keys import ApiKeyCreate, KeyStore
from api.settings import ApiSettings
from notify.service import Notifier
from pilotwatch.alerting import ALERT_STORE_FILE
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest, Role
from tests.api.test_alerts_api import decide_alerts
from tests.notify.conftest import drain
from tests.notify.receivers import WebhookReceiver


def test_get_alert_lists_the_notifiers_deliveries(
    tmp_path: Path,
    notify_manifest: Manifest,
    make_notifier: Callable[..., Notifier],
    webhooks: WebhookReceiver,
    influx: InfluxV1,
) -> None:
    store = tmp_path / "engine" / ALERT_STORE_FILE
    store.parent.mkdir()
    decided = decide_alerts(notify_manifest, store)
    pollution = next(i for i, a in decided.items() if a["kind"] == "pollution" and a["city"] == "bangkok")
    state_db = tmp_path / "notify" / "notify.db"
    notifier = make_notifier(alerts_db=store, state_db=state_db)
    drain(notifier, lambda: "bkk-staff-hook" in webhooks.received.per_recipient())

    keys_file = tmp_path / "keys.yaml"
    _, key = KeyStore(keys_file).add(
        ApiKeyCreate(name="staff", role=Role.CITY_STAFF, cities=("bangkok",)), notify_manifest
    )
    settings = ApiSettings(
        keys_file=keys_file,
        alerts_state_dir=store.parent,
        notify_state_db=state_db,
        influx={"url": influx.url, "database": influx.database},
    )
    with TestClient(create_app(settings, manifest=notify_manifest)) as client:
        answer = client.get(f"/alerts/{pollution}", headers={"X-API-Key": key})
    assert answer.status_code == 200, answer.text
    deliveries = answer.json()["deliveries"]
    webhook = [d for d in deliveries if d["channel"] == "webhook"]
    assert [(d["recipient"], d["status"], d["attempts"]) for d in webhook] == [("bkk-staff-hook", "sent", 1)]
    assert {d["channel"] for d in deliveries} == {"webhook", "email"}
    assert all(d["idempotency_key"] for d in deliveries)
