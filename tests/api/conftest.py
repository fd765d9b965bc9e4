"""API test fixtures: a real InfluxDB database with readings, QC flags and device status, and keys of each role."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from api.keys import ApiKeyCreate, KeyStore
from api.settings import ApiSettings
from commands.stack import LocalStack
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest, Role
from pilotwatch.schema import StoredReading, line

UTC = dt.UTC
# 2026-08-31 22:00 to 2026-09-01 02:00 UTC straddles the Bangkok (UTC+7) change from baseline to intervention
# at local midnight 2026-09-01 = 2026-08-31 17:00 UTC, so one sample before 17:00 UTC is baseline.
T0 = dt.datetime(2026, 8, 31, 16, 0, tzinfo=UTC)
STEP = dt.timedelta(minutes=5)
N_POINTS = 36  # three hours at five minutes


def ms(when: dt.datetime) -> int:
    return (when - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(milliseconds=1)


@dataclass(frozen=True)
class Seeded:
    """What was written, so tests can compare the API's answers with it."""

    ph_values: list[float]
    times_ms: list[int]
    qc_flagged: dict[int, int]  # t_ms -> flag written in measurement qc for bkk-pratunam-wq1/ph
    qc_late: set[int]  # t_ms of those qc points written late (field late = 1)


def seed(influx: InfluxV1) -> Seeded:
    lines: list[str] = []
    times = [ms(T0 + i * STEP) for i in range(N_POINTS)]
    ph_values = [7.0 + 0.01 * i for i in range(N_POINTS)]
    for i, t in enumerate(times):
        for device, site, city in (
            ("bkk-pratunam-wq1", "bkk-pratunam-pier", "bangkok"),
            ("mlk-morten-wq1", "mlk-kampung-morten", "melaka"),
        ):
            lines.append(StoredReading(city, site, device, "ph", "ph", ph_values[i], "pH", t, seq=i, flag=1).to_line())
            lines.append(StoredReading(city, site, device, "do", "do", 4.0 + i / 10, "mg/L", t, seq=i).to_line())
    # Analytics has flagged the first 30 pH readings of Pratunam: every 10th one suspect, the rest good.
    qc = {t: (3 if i % 10 == 0 else 1) for i, t in enumerate(times[:30])}
    # The last two of them arrived after analytics' late window: their QC came from its reconciliation.
    late = set(times[28:30])
    tags = {"city": "bangkok", "site": "bkk-pratunam-pier", "device": "bkk-pratunam-wq1", "sensor": "ph", "param": "ph"}
    lines += [line("qc", tags, {"flag": flag, **({"late": 1} if t in late else {})}, t) for t, flag in qc.items()]
    # The newest do reading of Pratunam is flagged too, so /latest can show a QC flag.
    do_tags = dict(tags, sensor="do", param="do")
    lines.append(line("qc", do_tags, {"flag": 4}, times[-1]))
    status = {"city": "bangkok", "site": "bkk-pratunam-pier", "device": "bkk-pratunam-wq1"}
    for k, t in enumerate((times[0], times[-1] - 60_000)):
        fields: dict[str, float | int | str] = {
            "state": "online",
            "battery_pct": 80.0 - k,
            "signal_dbm": -70.0,
            "uptime_s": 3600.0 * (k + 1),
            "buffer_depth": 12 + k,
            "oldest_unsent_ms": times[-3],
            "disk_free_mb": 900.5,
            "last_seq": 30 + k,
        }
        lines.append(line("device_status", status, fields, t))
    response = influx.write_lines(lines)
    assert response.status_code == 204, response.text
    return Seeded(ph_values=ph_values, times_ms=times, qc_flagged=qc, qc_late=late)


@dataclass(frozen=True)
class Keys:
    operator_bkk: str
    staff_site: str
    evaluator: str
    admin: str


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "keys.yaml"


@pytest.fixture
def keys(keys_file: Path, manifest: Manifest) -> Keys:
    store = KeyStore(keys_file)
    made = {}
    for name, role, cities, sites in (
        ("op-bkk", Role.OPERATOR, ("bangkok",), ()),
        ("staff-morten", Role.CITY_STAFF, (), ("mlk-kampung-morten",)),
        ("eval-bkk", Role.EVALUATOR, ("bangkok",), ()),
        ("root", Role.ADMIN, (), ()),
    ):
        _, key = store.add(ApiKeyCreate(name=name, role=role, cities=cities, sites=sites), manifest)
        made[name] = key
    return Keys(made["op-bkk"], made["staff-morten"], made["eval-bkk"], made["root"])


@pytest.fixture
def seeded(influx: InfluxV1) -> Seeded:
    return seed(influx)


@pytest.fixture
def settings(influx: InfluxV1, keys_file: Path, tmp_path: Path) -> ApiSettings:
    return ApiSettings(
        influx={"url": influx.url, "database": influx.database},
        keys_file=keys_file,
        alerts_state_dir=tmp_path / "alerts",
    )


@pytest.fixture
def client(settings: ApiSettings, manifest: Manifest, keys: Keys) -> Iterator[TestClient]:
    with TestClient(create_app(settings, manifest=manifest)) as test_client:
        yield test_client


@pytest.fixture
def influx_url(stack: LocalStack) -> str:
    return stack.config.influx_url


CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(settings: ApiSettings, manifest: Manifest, keys: Keys) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, manifest=manifest), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
