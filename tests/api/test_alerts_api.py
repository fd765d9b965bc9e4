"""Alert routes and the SSE stream, role × city: no alert outside the caller's scope on any route; evaluators
read only; lifecycle actions and silences through the API. The alerts are decided by the real engine into the
store the API reads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from alerts.engine import Engine
from alerts.rules import Delivery, Point, RuleId
from alerts.store import AlertStore
from api.app import create_app
from api.settings import ApiSettings
from pilotwatch.alerting import ALERT_STORE_FILE
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.schema import line
from tests.api.conftest import Keys

T0 = 1_788_192_000_000  # 2026-09-01 00:00 UTC
STEP = 300_000
SITES = {
    "bangkok": ("bkk-pratunam-pier", "bkk-pratunam-wq1"),
    "melaka": ("mlk-kampung-morten", "mlk-morten-wq1"),
}


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def decide_alerts(manifest: Manifest, path: Path) -> dict[str, dict[str, str]]:
    """In both cities: a pH limit alert, a pollution alert and two device alerts (a sensor fault, a clock an hour
    behind ingest's). Returns alert id -> (kind, city, site, rule) of everything stored."""
    store = AlertStore(path)
    engine = Engine(manifest, store)
    for hour in range(3):
        points = []
        for i in range(hour * 12, hour * 12 + 12):
            t = T0 + i * STEP
            for city, (site, device) in SITES.items():
                points += [
                    Point(city, site, device, "ph", "ph", t, 9.8, 1, "event"),
                    Point(city, site, device, "temp", "temperature", t, 30.0, 3, "fault"),
                ]
        deliveries = [
            Delivery(city, site, device, T0 + hour * 3_600_000 + m * 60_000, clock_offset_ms=-3_600_000)
            for city, (site, device) in SITES.items()
            for m in range(0, 60, 5)
        ]
        engine.process(points, [], T0 + (hour + 1) * 3_600_000 - 60_000, deliveries)
    out = {
        a["alert_id"]: {"kind": a["kind"], "city": a["city"], "site": a["site"], "rule": a["rule"]}
        for a in store.all_alerts()
    }
    store.close()
    return out


@pytest.fixture
def decided(settings: ApiSettings, manifest: Manifest) -> dict[str, dict[str, str]]:
    return decide_alerts(manifest, settings.alerts_state_dir / ALERT_STORE_FILE)


@pytest.fixture
def api(
    settings: ApiSettings, manifest: Manifest, keys: Keys, decided: dict[str, dict[str, str]]
) -> Iterator[TestClient]:
    with TestClient(create_app(settings, manifest=manifest)) as client:
        yield client


# who sees what: (kind, city) pairs, from the manifest's routes and the keys' scopes in tests/api/conftest.py
VISIBLE = {
    "operator_bkk": {("device", "bangkok")},
    "staff_site": {("pollution", "melaka"), ("limit_exceedance", "melaka")},
    "evaluator": {("limit_exceedance", "bangkok")},
    "admin": {(k, c) for k in ("device", "pollution", "limit_exceedance") for c in ("bangkok", "melaka")},
}


def test_the_engine_decided_every_kind_in_both_cities(decided: dict[str, dict[str, str]]) -> None:
    assert {(a["kind"], a["city"]) for a in decided.values()} == VISIBLE["admin"]
    # the clock-off alerts are among the device alerts the scopes below are checked on
    assert {(a["kind"], a["city"]) for a in decided.values() if a["rule"] == RuleId.CLOCK_OFF} == {
        ("device", "bangkok"),
        ("device", "melaka"),
    }


@pytest.mark.parametrize("who", list(VISIBLE))
def test_every_alert_route_and_the_stream_stay_in_scope(
    api: TestClient, keys: Keys, decided: dict[str, dict[str, str]], who: str
) -> None:
    key = getattr(keys, who)
    allowed = {aid for aid, a in decided.items() if (a["kind"], a["city"]) in VISIBLE[who]}
    # the list, unfiltered and with every filter
    listed = api.get("/alerts", params={"limit": 500}, headers=auth(key))
    assert listed.status_code == 200, listed.text
    assert {a["alert_id"] for a in listed.json()["data"]} == allowed
    for params in ({"city": "melaka"}, {"city": "bangkok"}, {"kind": "pollution"}, {"state": "open"}):
        got = api.get("/alerts", params=params, headers=auth(key)).json()["data"]
        assert {a["alert_id"] for a in got} <= allowed
    # one by one, and every action
    for aid in decided:
        one = api.get(f"/alerts/{aid}", headers=auth(key))
        assert one.status_code == (200 if aid in allowed else 403), (aid, one.text)
        for action, body in (("ack", None), ("assign", {"assignee": "x"}), ("comment", {"text": "seen"})):
            response = api.post(f"/alerts/{aid}/{action}", json=body, headers=auth(key))
            if aid not in allowed:
                assert response.status_code == 403, (action, response.text)
            elif who == "evaluator":
                assert response.status_code == 403
                assert "read only" in response.json()["detail"]
            else:
                assert response.status_code == 200, (action, response.text)
    # the stream: every transition it sends is of an alert in scope, and it sends them all
    with api.stream("GET", "/alerts/stream", params={"follow": "false"}, headers=auth(key)) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
    assert {e["alert_id"] for e in events} == allowed
    assert all(e["transition"] in ("fired", "acknowledged", "assigned", "commented", "resolved") for e in events)


def test_unknown_alert_is_404_and_no_key_is_401(api: TestClient, keys: Keys) -> None:
    assert api.get("/alerts/nope", headers=auth(keys.admin)).json() == {"detail": "unknown alert 'nope'"}
    assert api.get("/alerts").status_code == 401
    assert api.get("/alerts/stream", params={"follow": "false"}).status_code == 401


def test_detail_carries_readings_with_qc_flags_and_the_lifecycle(
    api: TestClient, keys: Keys, decided: dict[str, dict[str, str]], influx: InfluxV1
) -> None:
    aid = next(a for a, v in decided.items() if v["kind"] == "limit_exceedance" and v["city"] == "melaka")
    # the readings behind it, as ingest and analytics stored them
    tags = {"city": "melaka", "site": "mlk-kampung-morten", "device": "mlk-morten-wq1", "sensor": "ph", "param": "ph"}
    lines = []
    for i in range(6):
        t = T0 + i * STEP
        lines.append(line("reading", tags, {"value": 9.8, "unit": "pH", "seq": i}, t))
        lines.append(line("qc", tags, {"flag": 3, "label": "event"}, t))
    assert influx.write_lines(lines).status_code == 204
    detail = api.get(f"/alerts/{aid}", headers=auth(keys.staff_site)).json()
    assert detail["body"]["readings"][0]["label"] == "event"
    assert detail["body"]["statistic"] == "sample"
    assert [r["sensor"] for r in detail["readings"]] == ["ph"]  # stored readings of the cited sensor
    stored = detail["readings"][0]["data"]
    assert [(p["value"], p["qc_flag"]) for p in stored] == [(9.8, 3)] * 6
    acked = api.post(f"/alerts/{aid}/ack", headers=auth(keys.staff_site)).json()
    assert acked["status"] == "acknowledged"
    assert acked["ack_by"] == "staff-morten"
    again = api.post(f"/alerts/{aid}/ack", headers=auth(keys.staff_site))
    assert again.status_code == 409
    assert "only an open alert can be acknowledged" in again.json()["detail"]
    no_comment = api.post(f"/alerts/{aid}/close", json={"comment": " "}, headers=auth(keys.staff_site))
    assert no_comment.json() == {"detail": "closing an alert needs a comment"}
    closed = api.post(f"/alerts/{aid}/close", json={"comment": "grab sample confirms"}, headers=auth(keys.staff_site))
    assert closed.json()["status"] == "closed"
    detail = api.get(f"/alerts/{aid}", headers=auth(keys.staff_site)).json()
    assert [c["text"] for c in detail["comments"]] == ["grab sample confirms"]
    page = api.get("/alerts", params={"limit": 1, "offset": 1}, headers=auth(keys.admin)).json()
    assert (page["count"], page["limit"], page["offset"]) == (1, 1, 1)
    past_every_row = api.get("/alerts", params={"offset": 2**63}, headers=auth(keys.admin))  # SQLite cannot bind it
    assert past_every_row.status_code == 422
    assert "offset" in str(past_every_row.json()["detail"])
    bad = api.get("/alerts", params={"state": "firing"}, headers=auth(keys.admin))
    assert bad.status_code == 422
    assert "is not one of open, acknowledged, resolved, closed" in bad.json()["detail"]


def test_silences_crud_and_scope(api: TestClient, keys: Keys) -> None:
    body = {
        "city": "bangkok",
        "device": "bkk-pratunam-wq1",
        "start": "2026-09-02T00:00:00Z",
        "end": "2026-09-02T06:00:00Z",
        "reason": "probe cleaning",
    }
    assert (
        api.post(
            "/silences", json={**body, "city": "melaka", "device": ""}, headers=auth(keys.operator_bkk)
        ).status_code
        == 403
    )
    assert api.post("/silences", json=body, headers=auth(keys.evaluator)).status_code == 403
    bad = api.post("/silences", json={**body, "end": body["start"]}, headers=auth(keys.operator_bkk))
    assert bad.status_code == 422
    assert "must end after it starts" in bad.json()["detail"]
    made = api.post("/silences", json=body, headers=auth(keys.operator_bkk))
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    assert made.json()["created_by"] == "op-bkk"
    assert [s["id"] for s in api.get("/silences", headers=auth(keys.operator_bkk)).json()] == [sid]
    assert api.get("/silences", headers=auth(keys.staff_site)).json() == []
    assert api.delete(f"/silences/{sid}", headers=auth(keys.staff_site)).status_code == 403
    assert api.delete(f"/silences/{sid}", headers=auth(keys.operator_bkk)).status_code == 204
    assert api.get("/silences", headers=auth(keys.admin)).json() == []
