"""Fixtures of the reliability tests: a real InfluxDB database holding readings of every device in the manifest, a
key of every kind the matrix tries (each role, scoped to a city, to a site, to every city), and the in-process
ingest of tests/ingest (same stack, same clean-up)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.keys import ALL_CITIES, ApiKeyCreate, KeyStore
from api.settings import ApiSettings
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest, Role
from pilotwatch.schema import Measurement, StoredReading, line
from tests.ingest.conftest import start_ingest

__all__ = ["start_ingest"]

T0 = dt.datetime(2026, 8, 31, 16, 0, tzinfo=dt.UTC)
POINTS = 6
STEP_MS = 600_000


def t0_ms() -> int:
    return int(T0.timestamp() * 1000)


def seed_every_device(influx: InfluxV1, manifest: Manifest) -> int:
    """Readings, QC flags and a status point for every sensor of every device; returns the readings written."""
    lines: list[str] = []
    for city, site, device in manifest.iter_devices():
        tags = {"city": city.id, "site": site.id, "device": device.id}
        for i in range(POINTS):
            t = t0_ms() + i * STEP_MS
            for sensor in device.sensors:
                low, high = sensor.valid_range
                value = low + (high - low) * (i + 1) / (POINTS + 1)
                reading = StoredReading(
                    city.id, site.id, device.id, sensor.id, sensor.param.value, value, sensor.unit, t, seq=i
                )
                lines.append(reading.to_line())
                qc_tags = {**tags, "sensor": sensor.id, "param": sensor.param.value}
                lines.append(line(Measurement.QC, qc_tags, {"flag": 1}, t))
        status: dict[str, float | int | str] = {
            "state": "online",
            "battery_pct": 90.0,
            "buffer_depth": 0,
            "last_seq": POINTS,
        }
        lines.append(line(Measurement.DEVICE_STATUS, tags, status, t0_ms() + POINTS * STEP_MS))
    response = influx.write_lines(lines)
    assert response.status_code == 204, response.text
    return sum(len(d.sensors) for _, _, d in manifest.iter_devices()) * POINTS


@dataclass(frozen=True)
class KeyKind:
    """One kind of caller: its key (None: no key sent) and what it may read."""

    name: str
    key: str | None
    role: Role | None
    cities: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()


def make_key_kinds(keys_file: Path, manifest: Manifest) -> list[KeyKind]:
    """No key, a wrong key, and each role scoped to one city, to one site of another city, and to every city;
    plus the admin (no scope)."""
    store = KeyStore(keys_file)
    first_city = manifest.cities[0]
    other_city = manifest.cities[1]
    other_site = other_city.sites[0].id
    kinds = [KeyKind("none", None, None), KeyKind("wrong", "pw_" + "x" * 43, None)]
    for role in Role:
        scopes: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = (
            [("all", (), ())]
            if role is Role.ADMIN
            else [("city", (first_city.id,), ()), ("site", (), (other_site,)), ("every-city", (ALL_CITIES,), ())]
        )
        for label, cities, sites in scopes:
            name = f"{role.value}-{label}"
            _, key = store.add(ApiKeyCreate(name=name, role=role, cities=cities, sites=sites), manifest)
            kinds.append(KeyKind(name, key, role, cities, sites))
    return kinds


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "keys.yaml"


@pytest.fixture
def key_kinds(keys_file: Path, manifest: Manifest) -> list[KeyKind]:
    return make_key_kinds(keys_file, manifest)


@pytest.fixture
def admin_key(key_kinds: list[KeyKind]) -> str:
    key = next(k.key for k in key_kinds if k.role is Role.ADMIN)
    assert key is not None
    return key


@pytest.fixture
def api_settings(influx: InfluxV1, keys_file: Path, tmp_path: Path) -> ApiSettings:
    return ApiSettings(
        influx={"url": influx.url, "database": influx.database},
        ack_link_secret="reliability-ack-link-secret-0123456789",
        keys_file=keys_file,
    )


@pytest.fixture
def seeded_influx(influx: InfluxV1, manifest: Manifest) -> InfluxV1:
    seed_every_device(influx, manifest)
    return influx


@pytest.fixture
def api(
    api_settings: ApiSettings, manifest: Manifest, key_kinds: list[KeyKind], seeded_influx: InfluxV1
) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings, manifest=manifest)) as client:
        yield client
