"""The evaluation's one settings class: ``PILOTWATCH_EVALUATION_*`` environment variables or keywords.

Building it validates every value and touches no network. Without an InfluxDB URL in the flags or the environment,
``pilotwatch evaluate report`` reads the local stack of ``--home`` (``pilotwatch stack up`` / ``pilotwatch demo``).
:func:`run_report` is the one path from settings to a pack, used by the command line.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from evaluation.bootstrap import BlockScheme
from evaluation.estimators import BootstrapConfig
from evaluation.evaluate import DEFAULT_MIN_COVERAGE, CityEvaluation, Loader, evaluate_city
from evaluation.series import QCAcceptance, Series
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Device, Manifest, Sensor, Site, load_manifest


class EvaluationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PILOTWATCH_EVALUATION_", extra="forbid")

    influx_url: str = "http://127.0.0.1:8086"
    database: str = Field(default="pilotwatch", min_length=1)
    influx_token: SecretStr | None = None
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    influx_timeout_s: float = Field(default=60.0, gt=0, le=600)
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

    @model_validator(mode="after")
    def _url(self) -> Self:
        if not self.influx_url.startswith(("http://", "https://")):
            raise ValueError(f"influx_url must start with http:// or https://, got {self.influx_url!r}")
        return self

    def bootstrap(self) -> BootstrapConfig:
        return BootstrapConfig(
            replicates=self.replicates, scheme=self.scheme, confidence=self.confidence, seed=self.seed
        )

    def influx(self) -> InfluxV1:
        return InfluxV1(
            self.influx_url,
            self.database,
            token=self.influx_token.get_secret_value() if self.influx_token else None,
            username=self.influx_username,
            password=self.influx_password.get_secret_value() if self.influx_password else None,
            timeout_s=self.influx_timeout_s,
        )


def evaluation_settings(args: argparse.Namespace) -> EvaluationSettings:
    """Settings from the environment, the local stack of ``--home`` where no URL is set, then the flags."""
    import os  # noqa: PLC0415

    from pilotwatch.common_cli import common_settings  # noqa: PLC0415
    from pilotwatch.stack import load_stack  # noqa: PLC0415

    common = common_settings(args)
    overrides: dict[str, object] = {}
    if "PILOTWATCH_EVALUATION_INFLUX_URL" not in os.environ and (common.stack_root / "stack.json").exists():
        stack = load_stack(common.stack_root).config
        overrides |= {"influx_url": stack.influx_url, "database": stack.database}
    if getattr(args, "influx_url", None):
        overrides["influx_url"] = args.influx_url
    if getattr(args, "database", None):
        overrides["database"] = args.database
    if getattr(args, "include_suspect", False):
        overrides["qc"] = QCAcceptance.GOOD_OR_SUSPECT
    if getattr(args, "replicates", None):
        overrides["replicates"] = args.replicates
    if common.manifest is not None:
        overrides.setdefault("manifest", common.manifest)
    return EvaluationSettings(**overrides)  # type: ignore[arg-type]


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
    with settings.influx() as influx:
        ev = evaluate_from_influx(settings, manifest, city, influx)
    files = write_pack(ev, manifest, out, f"InfluxDB {settings.influx_url}, database {settings.database}")
    return files, ev
