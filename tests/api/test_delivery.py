"""``GET /devices/{id}/delivery``: the gap ledger that ingest keeps, as operators and evaluators see it (ingest
publishes it to InfluxDB as ``delivery`` points; the API reads it from there)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.settings import ApiSettings
from ingest.delivery import DeliveryPublisher
from ingest.ledger import Ledger
from ingest.settings import IngestSettings
from pilotwatch.influx import InfluxV1
from pilotwatch.settings import InfluxConnection
from tests.api.conftest import Keys
from tests.api.test_api import auth

DEVICE = "bkk-pratunam-wq1"


def test_gaps_show_as_missing_then_as_recovered(
    client: TestClient, keys: Keys, settings: ApiSettings, influx: InfluxV1, tmp_path: Path
) -> None:
    ingest_state = tmp_path / "ingest-state"  # ingest's folder: the API never reads it, only InfluxDB
    ingest_state.mkdir()
    ledger = Ledger(ingest_state / "ledger-w1.json", "w1")
    writer = IngestSettings(influx=InfluxConnection(url=influx.url, database=influx.database)).make_writer()
    publisher = DeliveryPublisher(ingest_state, {DEVICE: ("bangkok", "bkk-pratunam-pier")}, writer)
    for seq in (0, 1, 2, 5, 6):
        ledger.mark_stored(DEVICE, seq)
    ledger.save()
    assert publisher.publish(1_790_000_000_000)

    body = client.get(f"/devices/{DEVICE}/delivery", headers=auth(keys.operator_bkk)).json()
    assert (body["seen"], body["stored"], body["stored_through"], body["missing"]) == (True, 5, 2, 2)
    assert body["gaps"] == [[3, 4]]
    assert body["recovered"] == 0
    assert (body["city"], body["site"]) == ("bangkok", "bkk-pratunam-pier")

    assert body["clock_offset_s"] is None  # no message timed yet

    # The edge re-sends what was never acknowledged: the gap closes as recovered, not lost. Its messages arrive
    # 120.25 s after the time they carry: the device's clock is behind ingest's.
    ledger.mark_stored(DEVICE, 3)
    ledger.mark_stored(DEVICE, 4)
    ledger.record(DEVICE).time_clock(1_790_000_005_000, 120_250, 600_000)
    ledger.save()
    assert publisher.publish(1_790_000_010_000)
    writer.close()
    body = client.get(f"/devices/{DEVICE}/delivery", headers=auth(keys.operator_bkk)).json()
    assert (body["stored"], body["stored_through"], body["missing"], body["gaps"]) == (7, 6, 0, [])
    assert body["recovered"] == 2
    assert body["clock_offset_s"] == -120.25


def test_a_device_ingest_never_saw_and_one_out_of_scope(client: TestClient, keys: Keys) -> None:
    never = client.get("/devices/bkk-asok-wq1/delivery", headers=auth(keys.operator_bkk))
    assert never.status_code == 200
    assert (never.json()["seen"], never.json()["stored"], never.json()["stored_through"]) == (False, 0, -1)
    assert never.json()["clock_offset_s"] is None
    other = client.get("/devices/mlk-morten-wq1/delivery", headers=auth(keys.operator_bkk))
    assert other.status_code == 403
    assert other.json() == {"detail": "key 'op-bkk' has no access to device 'mlk-morten-wq1'"}
    anonymous = client.get(f"/devices/{DEVICE}/delivery")
    assert anonymous.status_code == 401
