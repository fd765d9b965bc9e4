"""A real InfluxDB database holding four weeks of simulated Bangkok data (two baseline, two intervention), QC'd by
the analytics service, shared by the evidence-pack, CLI and API tests of the evaluation.

The simulator is the fleet's own (``firmware_sim``: site model with the manifest's pilot effect, sensor noise,
random faults); readings are written as ingest writes them (``schema.StoredReading``) and QC is run by
``analytics.service.evaluate_window``, the batch path the demo uses. Sensors sample every 15 minutes here so the
whole set is written and QC'd in seconds; the estimators do not depend on the interval.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from analytics.service import evaluate_window
from commands.stack import LocalStack
from firmware_sim.environment import SiteModel
from firmware_sim.faults import FaultSchedule
from firmware_sim.sensors import SensorModel
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest, parse_manifest
from pilotwatch.schema import StoredReading, line
from tests.conftest import DEFAULT_MANIFEST

SEED = 7
INTERVAL_S = 900
BASELINE = ("2026-06-01", "2026-06-15")
INTERVENTION = ("2026-06-15", "2026-06-29")
TRUE_DO_EFFECT = 0.35  # the default manifest's simulation.pilot_effect for Pratunam


@dataclass(frozen=True)
class EvaluationStore:
    influx_url: str
    database: str
    manifest: Manifest
    manifest_path: Path
    readings: int
    late: frozenset[int] = frozenset()
    """Times of the ``LATE_SERIES`` readings whose qc point is marked late."""


def bangkok_four_weeks() -> dict[str, Any]:
    raw: dict[str, Any] = copy.deepcopy(yaml.safe_load(DEFAULT_MANIFEST.read_text()))
    raw["cities"] = [c for c in raw["cities"] if c["id"] == "bangkok"]
    raw["alerts"] = [a for a in raw.get("alerts", []) if a["city"] in ("bangkok", "*")]
    for city in raw["cities"]:
        for site in city["sites"]:
            site["periods"] = {
                "baseline": {"start": BASELINE[0], "end": BASELINE[1]},
                "intervention": {"start": INTERVENTION[0], "end": INTERVENTION[1]},
            }
            for device in site["devices"]:
                device["sensors"] = [dict(s, interval_s=INTERVAL_S) for s in device["sensors"]]
    return raw


LATE_SERIES = ("bkk-pratunam-pier", "bkk-pratunam-wq1", "do")
"""(site, device, sensor) of the readings whose QC is marked as written late by analytics' reconciliation."""


def mark_late(influx: InfluxV1, series: tuple[str, str, str], hour_ms: int) -> frozenset[int]:
    """Mark the ``qc`` points of one hour of ``series`` late, as analytics' reconciliation writes them (the field
    merges into the stored point); return their times."""
    site, device, sensor = series
    where = f"site = '{site}' AND device = '{device}' AND sensor = '{sensor}'"
    rows = influx.query(
        f"SELECT flag, city, param FROM qc WHERE {where} AND time >= {hour_ms}ms AND time < {hour_ms + 3_600_000}ms"
    )
    lines = [
        line(
            "qc",
            {"city": r["city"], "site": site, "device": device, "sensor": sensor, "param": r["param"]},
            {"late": 1},
            int(r["time"]),
        )
        for r in rows
    ]
    assert lines, "no qc points to mark"
    assert influx.write_lines(lines).status_code == 204
    return frozenset(int(r["time"]) for r in rows)


def _ms(day: str) -> int:
    return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1000)


@pytest.fixture(scope="session")
def evaluation_store(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EvaluationStore]:
    folder = tmp_path_factory.mktemp("evaluation")
    raw = bangkok_four_weeks()
    manifest_path = folder / "manifest.yaml"
    manifest_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    manifest = parse_manifest(raw, str(manifest_path))
    influx = InfluxV1(stack.config.influx_url, "evaluation_pack")
    influx.create_database()
    # A day either side, so the local (UTC+7) period edges have data.
    start, end = _ms(BASELINE[0]) - 86_400_000, _ms(INTERVENTION[1]) + 86_400_000
    written = 0
    for city, site, device in manifest.iter_devices():
        model, faults = SiteModel(city, site, SEED), FaultSchedule(site, SEED)
        for sensor in device.sensors:
            sensor_model = SensorModel(model, faults, device, sensor, SEED)
            lines = []
            for seq, t in enumerate(range(start, end, INTERVAL_S * 1000)):
                sample = sensor_model.sample(t)
                if sample.value is None:
                    continue
                reading = StoredReading(
                    city.id,
                    site.id,
                    device.id,
                    sensor.id,
                    sensor.param.value,
                    sample.value,
                    sensor.unit,
                    sample.t_ms,
                    seq,
                    None if sample.flag is None else int(sample.flag),
                )
                lines.append(reading.to_line())
            response = influx.write_lines(lines)
            assert response.status_code == 204, response.text
            written += len(lines)
    evaluate_window(manifest, influx.url, influx.database, start, end, folder / "analytics")
    late = mark_late(influx, LATE_SERIES, start + 10 * 86_400_000)
    yield EvaluationStore(influx.url, influx.database, manifest, manifest_path, written, late)
    influx.drop_database()
    influx.close()
