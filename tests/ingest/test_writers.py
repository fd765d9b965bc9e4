"""Both InfluxDB write paths against a real server: v1 ``/write`` on Debian's influxd, and influxdb-client's v2
write API through the loopback translator (tests/ingest/v2_translator.py) in front of the same influxd."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from pydantic import SecretStr

from commands.stack import LocalStack
from ingest.service import IngestService
from ingest.writers import Outcome, V1Writer, V2Writer
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.schema import StoredReading
from pilotwatch.settings import InfluxApi, InfluxConnection, free_port
from pilotwatch.wire import readings_topic
from tests.ingest.helpers import (
    DEVICE,
    close_client,
    expected,
    make_message,
    new_client,
    publish_all,
    readings_in_db,
    recent_t0,
    wait_until,
)
from tests.ingest.v2_translator import V2Translator

TOKEN = "test-token-0123456789"
ORG = "pilot-city"


def _lines(n: int) -> list[str]:
    return [
        StoredReading("c", "s", "d-1", "ph", "ph", 7.0 + i / 100, "pH", 1_790_000_000_000 + i * 1000, i).to_line()
        for i in range(n)
    ]


@pytest.fixture
def translator(influx: InfluxV1) -> Iterator[V2Translator]:
    with V2Translator(influx.url, TOKEN, ORG, {influx.database}) as server:
        yield server


def test_v1_writer_lands_data_and_classifies_errors(influx: InfluxV1) -> None:
    writer = V1Writer(influx.url, influx.database)
    try:
        assert writer.write(_lines(100)).outcome is Outcome.OK
        assert influx.count() == 100
        bad = writer.write(["reading,device=x value=not-a-number 1790000000000"])
        assert (bad.outcome, bad.status) == (Outcome.REJECT, 400)
    finally:
        writer.close()
    missing = V1Writer(influx.url, "no_such_database_here")
    try:
        result = missing.write(_lines(1))
        assert (result.outcome, result.status) == (Outcome.FATAL, 404)
    finally:
        missing.close()
    nowhere = V1Writer(f"http://127.0.0.1:{free_port()}", influx.database, timeout_s=2)
    try:
        assert nowhere.write(_lines(1)).outcome is Outcome.RETRY
    finally:
        nowhere.close()


def test_v2_writer_lands_data_in_influxd_and_classifies_errors(influx: InfluxV1, translator: V2Translator) -> None:
    writer = V2Writer(translator.url, TOKEN, ORG, influx.database)
    try:
        assert writer.write(_lines(250)).outcome is Outcome.OK
        assert influx.count() == 250
        assert influx.query("SELECT value, seq FROM reading WHERE seq = 7")[0]["value"] == 7.07
        bad = writer.write(["reading,device=x value=not-a-number 1790000000000"])
        assert (bad.outcome, bad.status) == (Outcome.REJECT, 400)
        translator.inject(503, retry_after="3")
        retry = writer.write(_lines(1))
        assert (retry.outcome, retry.status, retry.retry_after_s) == (Outcome.RETRY, 503, 3.0)
        translator.inject(429)
        assert writer.write(_lines(1)).outcome is Outcome.RETRY
    finally:
        writer.close()
    wrong = V2Writer(translator.url, "not-the-token", ORG, influx.database)
    try:
        denied = wrong.write(_lines(1))
        assert (denied.outcome, denied.status) == (Outcome.FATAL, 401)
    finally:
        wrong.close()
    other_org = V2Writer(translator.url, TOKEN, "elsewhere", influx.database)
    try:
        assert other_org.write(_lines(1)).outcome is Outcome.FATAL
    finally:
        other_org.close()
    with pytest.raises(ValueError, match="non-empty bucket"):
        V2Writer(translator.url, TOKEN, ORG, "")


def test_ingest_over_the_v2_api_and_a_retry_after(
    start_ingest: Callable[..., IngestService],
    influx: InfluxV1,
    translator: V2Translator,
    stack: LocalStack,
    manifest: Manifest,
) -> None:
    service = start_ingest(
        influx=InfluxConnection(
            api=InfluxApi.V2,
            url=translator.url,
            token=SecretStr(TOKEN),
            org=ORG,
            bucket=influx.database,
            timeout_s=10.0,
        ),
        spool_after_s=30,
    )
    translator.inject(503, retry_after="1")
    messages = [make_message(manifest, seq, 20, recent_t0()) for seq in range(50)]
    publisher = new_client(stack.config.host, stack.config.mqtt_port)
    started = time.monotonic()
    try:
        publish_all(publisher, [(readings_topic(DEVICE), m.encode()) for m in messages])
    finally:
        close_client(publisher)
    wait_until(lambda: service.stats.readings_written == 1_000, 15, "the readings over the v2 API")
    assert time.monotonic() - started >= 0.9, "the server's Retry-After of 1 s was not honoured"
    assert service.stats.write_retries >= 1
    assert readings_in_db(influx) == expected(messages)


def test_a_401_stops_ingest_and_acknowledges_nothing(
    start_ingest: Callable[..., IngestService],
    influx: InfluxV1,
    translator: V2Translator,
    stack: LocalStack,
    manifest: Manifest,
) -> None:
    service = start_ingest(
        influx=InfluxConnection(
            api=InfluxApi.V2, url=translator.url, token=SecretStr("revoked-token"), org=ORG, bucket=influx.database
        ),
    )
    publisher = new_client(stack.config.host, stack.config.mqtt_port)
    try:
        publish_all(publisher, [(readings_topic(DEVICE), make_message(manifest, 0, 5, recent_t0()).encode())])
    finally:
        close_client(publisher)
    wait_until(lambda: service.stats.fatal is not None, 10, "the fatal status")
    assert "401" in (service.stats.fatal or "")
    assert service.stats.acks_published == 0
    assert service.stats.readings_written == 0
    assert service.stats.readings_spooled == 0
    # The message was never acknowledged: a worker with the right token in the same session gets it again.
    service.stop()
    fixed = start_ingest(
        client_id=service.settings.client_id,
        share_group=service.settings.share_group,
        influx=InfluxConnection(
            api=InfluxApi.V2,
            url=translator.url,
            token=SecretStr(TOKEN),
            org=ORG,
            bucket=influx.database,
            timeout_s=10.0,
        ),
    )
    wait_until(lambda: fixed.stats.readings_written == 5, 15, "the redelivered message")
    assert influx.count() == 5
