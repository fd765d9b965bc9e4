"""The evaluation's one settings class: ``PILOTWATCH_EVALUATION_*`` environment variables or keywords.

Building it validates every value and touches no network. Without an InfluxDB URL in the flags or the environment,
``pilotwatch evaluate report`` reads the local stack of ``--home`` (``pilotwatch stack up`` / ``pilotwatch demo``).
:func:`run_report` is the one path from settings to a pack, used by the command line.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from evaluation.bootstrap import BlockScheme
from evaluation.estimators import BootstrapConfig
from evaluation.evaluate import DEFAULT_MIN_COVERAGE, CityEvaluation, Loader, evaluate_city
from evaluation.series import QCAcceptance, Series
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Device, Manifest, Sensor, Site, load_manifest
from pilotwatch.settings import CommonSettings, InfluxConnection, ServiceSettings, StackConfig, stack_influx


class EvaluationSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PILOTWATCH_EVALUATION_", extra="forbid", env_nested_delimiter="__")

    influx: InfluxConnection = InfluxConnection(timeout_s=60.0)
    manifest: Path | None = None
    """Pilot manifest; unset = ``PILOTWATCH_MANIFEST`` or the shipped one."""

    qc: QCAcceptance = QCAcceptance.GOOD
    """Which QC verdicts an estimate may use: ``good`` (default) or ``good_or_suspect``."""
    replicates: int = Field(default=2000, ge=99, le=100_000)
    scheme: BlockScheme = BlockScheme.STATIONARY
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    seed: int = 20260901
    min_coverage: float = Field(default=DEFAULT_MIN_COVERAGE, ge=0.0, le=1.0)
    """An estimate with less than this share of expected readings in a period is marked low coverage."""

    @classmethod
    def local_defaults(cls, common: CommonSettings, stack: StackConfig | None) -> dict[str, Any]:
        return {"manifest": common.manifest, "influx": stack_influx(stack)}

    def bootstrap(self) -> BootstrapConfig:
        return BootstrapConfig(
            replicates=self.replicates, scheme=self.scheme, confidence=self.confidence, seed=self.seed
        )


def evaluation_settings(args: argparse.Namespace) -> EvaluationSettings:
    """Flags over ``PILOTWATCH_EVALUATION_*`` over the local stack of ``--home``."""
    from pilotwatch.common_cli import common_settings, influx_flags  # noqa: PLC0415

    return EvaluationSettings.for_command(
        common_settings(args),
        influx=influx_flags(args),
        qc=QCAcceptance.GOOD_OR_SUSPECT if getattr(args, "include_suspect", False) else None,
        replicates=getattr(args, "replicates", None),
    )


def influx_loader(influx: InfluxV1) -> Loader:
    from evaluation.data import load_series  # noqa: PLC0415

    def load(site: Site, device: Device, sensor: Sensor, start_ms: int, end_ms: int) -> Series:
        return load_series(
            influx,
            site=site.id,
            device=device.id,
            sensor=sensor.id,
            start_ms=start_ms,
            end_ms=end_ms,
            interval_s=sensor.interval_s,
        )

    return load


def evaluate_from_influx(
    settings: EvaluationSettings, manifest: Manifest, city: str, influx: InfluxV1, as_of_ms: int | None = None
) -> CityEvaluation:
    return evaluate_city(
        manifest,
        city,
        influx_loader(influx),
        acceptance=settings.qc,
        config=settings.bootstrap(),
        min_coverage=settings.min_coverage,
        as_of_ms=as_of_ms if as_of_ms is not None else int(time.time() * 1000),
    )


def run_report(settings: EvaluationSettings, city: str, out: Path) -> tuple[list[Path], CityEvaluation]:
    from evaluation.report import write_pack  # noqa: PLC0415

    manifest = load_manifest(settings.manifest)
    with settings.influx.client() as influx:
        ev = evaluate_from_influx(settings, manifest, city, influx)
    files = write_pack(ev, manifest, out, f"InfluxDB {settings.influx.url}, database {settings.influx.database}")
    return files, ev
