"""Signed acknowledge links: they work once, expire, cannot be forged, and stop escalation end to end.

The end-to-end test follows the link a real webhook delivery carried, through the real API app, into the
engine's outbox, and back through the notifier, which must then not escalate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ApiSettings
from notify.service import Notifier
from pilotwatch.alerting import TransitionKind, read_transitions
from pilotwatch.manifest import AlertKind, Manifest
from pilotwatch.signing import AckTokenError, TokenProblem, sign_ack_token, verify_ack_token
from tests.notify.conftest import ACK_SECRET, ESCALATE_AFTER_S, Engine, drain, transition
from tests.notify.receivers import WebhookReceiver

NOW = 1_800_000_000.0


def test_a_token_verifies_until_it_expires() -> None:
    token = sign_ack_token(ACK_SECRET, "bkk-1", "bkk-staff@city.example", int(NOW + 60))
    claims = verify_ack_token(ACK_SECRET, token, NOW + 59.9)
    assert (claims.alert_id, claims.recipient) == ("bkk-1", "bkk-staff@city.example")
    with pytest.raises(AckTokenError) as expired:
        verify_ack_token(ACK_SECRET, token, NOW + 60)
    assert expired.value.problem is TokenProblem.EXPIRED


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(
            lambda t: sign_ack_token("another-secret-of-enough-length", "bkk-1", "x", int(NOW + 60)), id="other-key"
        ),
        pytest.param(lambda t: t.replace(t.split(".")[1], t.split(".")[1][:-2] + "xx"), id="claims-changed"),
        pytest.param(lambda t: t[:-3] + ("AAA" if not t.endswith("AAA") else "BBB"), id="signature-changed"),
        pytest.param(lambda t: t.split(".")[0] + "." + t.split(".")[1] + ".", id="signature-removed"),
    ],
)
def test_a_forged_token_is_refused(forge: Callable[[str], str]) -> None:
    token = sign_ack_token(ACK_SECRET, "bkk-1", "bkk-staff@city.example", int(NOW + 60))
    with pytest.raises(AckTokenError) as refused:
        verify_ack_token(ACK_SECRET, forge(token), NOW)
    assert refused.value.problem in (TokenProblem.FORGED, TokenProblem.MALFORMED)


@pytest.fixture
def api(tmp_path: Path, engine: Engine, manifest: Manifest) -> Iterator[TestClient]:
    settings = ApiSettings(
        keys_file=tmp_path / "keys.yaml",
        alerts_state_dir=engine.path.parent,
        ack_link_secret=ACK_SECRET,
        influx={"url": "http://127.0.0.1:9"},
    )
    with TestClient(create_app(settings, manifest=manifest)) as client:
        yield client


def test_the_api_acknowledges_once_refuses_expired_and_forged_links(engine: Engine, api: TestClient) -> None:
    engine.emit(transition("bangkok", AlertKind.POLLUTION, alert_id="bkk-ack-1"))
    token = sign_ack_token(ACK_SECRET, "bkk-ack-1", "bkk-staff@city.example", int(time.time() + 600))
    page = api.get(f"/ack-link/{token}")
    assert page.status_code == 200
    assert "bkk-ack-1" in page.text
    assert "method='post'" in page.text
    assert [t.transition for t in read_transitions(engine.conn, 0)] == [TransitionKind.FIRED]  # GET changes nothing
    first = api.post(f"/ack-link/{token}")
    assert first.status_code == 200
    assert first.json()["alert_id"] == "bkk-ack-1"
    assert first.json()["acknowledged_by"] == "bkk-staff@city.example"
    acked = read_transitions(engine.conn, 0)[-1]
    assert (acked.transition, acked.alert_id, acked.id) == (
        TransitionKind.ACKNOWLEDGED,
        "bkk-ack-1",
        first.json()["transition_id"],
    )
    assert acked.body == {"by": "bkk-staff@city.example", "via": "ack_link"}
    again = api.post(f"/ack-link/{token}")
    assert again.status_code == 410
    assert again.json()["detail"] == "this acknowledge link has been used already"
    assert len(read_transitions(engine.conn, 0)) == 2
    expired = sign_ack_token(ACK_SECRET, "bkk-ack-1", "bkk-staff@city.example", int(time.time() - 1))
    assert api.post(f"/ack-link/{expired}").json() == {"detail": "this acknowledge link has expired"}
    forged = sign_ack_token("not-the-api-secret-but-long-enough", "bkk-ack-1", "mallory", int(time.time() + 600))
    answer = api.post(f"/ack-link/{forged}")
    assert answer.status_code == 403
    assert answer.json() == {"detail": "the token's signature does not match"}
    unknown = sign_ack_token(ACK_SECRET, "no-such-alert", "bkk-staff@city.example", int(time.time() + 600))
    assert api.post(f"/ack-link/{unknown}").status_code == 404
    assert len(read_transitions(engine.conn, 0)) == 2


def test_following_the_link_in_a_notification_stops_its_escalation(
    engine: Engine, make_notifier: Callable[..., Notifier], webhooks: WebhookReceiver, api: TestClient
) -> None:
    notifier = make_notifier()
    t0 = int(time.time() * 1000)
    fired = engine.emit(transition("bangkok", AlertKind.POLLUTION, alert_id="bkk-link"))[0]
    drain(notifier, lambda: webhooks.received.transitions_of("bkk-staff-hook") == [fired], now_ms=t0)
    link = webhooks.received.docs("bkk-staff-hook")[0]["alerts"][0]["links"]["acknowledge"]
    assert link.startswith("https://pilotwatch.example/ack-link/v1.")
    assert api.post(link.removeprefix("https://pilotwatch.example")).status_code == 200
    later = t0 + int((ESCALATE_AFTER_S + 60) * 1000)
    drain(notifier, lambda: len(webhooks.received.transitions_of("bkk-staff-hook")) == 2, now_ms=later)
    time.sleep(0.2)
    notifier.run_once(later)
    assert webhooks.received.docs("bkk-staff-hook")[1]["alerts"][0]["transition"] == "acknowledged"
    assert webhooks.received.transitions_of("duty-hook") == []
