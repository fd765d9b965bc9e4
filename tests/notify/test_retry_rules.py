"""The pure rules under the channels: backoff with jitter and Retry-After, HTTP status classes, the receiver's
signature check. Table-driven; the behaviour through real receivers is in test_outage.py."""

from __future__ import annotations

import email.utils
import random

import pytest

from notify.channels import RETRY_AFTER_CEILING_S, backoff_s, classify_http, parse_retry_after
from notify.store import Outcome
from pilotwatch.signing import verify_webhook, webhook_signature

NOW = 1_800_000_000.0


@pytest.mark.parametrize("attempt", range(1, 15))
def test_backoff_doubles_up_to_the_ceiling_with_equal_jitter(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = min(60.0, 2.0 * 2 ** (attempt - 1))
    delays = [backoff_s(attempt, None, 2.0, 60.0, rng) for _ in range(200)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert max(delays) - min(delays) > ceiling / 4  # jittered, not one fixed value


@pytest.mark.parametrize(
    ("retry_after", "at_least"),
    [(30.0, 30.0), (0.0, 1.0), (10 * 3600.0, RETRY_AFTER_CEILING_S)],
)
def test_retry_after_sets_a_floor_up_to_an_hour(retry_after: float, at_least: float) -> None:
    delay = backoff_s(1, retry_after, 2.0, 600.0, random.Random(1))
    assert delay >= at_least
    assert delay <= max(2.0, min(retry_after, RETRY_AFTER_CEILING_S))


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        (email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.SENT),
        (204, Outcome.SENT),
        (408, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (400, Outcome.REJECTED),
        (401, Outcome.REJECTED),
        (404, Outcome.REJECTED),
        (410, Outcome.REJECTED),
        (301, Outcome.REJECTED),
    ],
)
def test_http_status_classes(status: int, outcome: Outcome) -> None:
    assert classify_http(status) is outcome


def test_the_receiver_check_accepts_the_signature_and_refuses_tampering_and_replays() -> None:
    secret = "receiver-side-secret-000000"
    body = b'{"schema":"pilotwatch.notification/1"}'
    ts = int(NOW)
    signature = webhook_signature(secret, ts, body)
    assert verify_webhook(secret, str(ts), signature, body, NOW + 10)
    assert not verify_webhook(secret, str(ts), signature, body + b" ", NOW)
    assert not verify_webhook(secret, str(ts + 1), signature, body, NOW)
    assert not verify_webhook("another-secret-0000000000", str(ts), signature, body, NOW)
    assert not verify_webhook(secret, str(ts), signature, body, NOW + 301)
    assert not verify_webhook(secret, "yesterday", signature, body, NOW)
