"""The pilot manifest: one versioned YAML file that describes the whole programme.

In: a YAML file (see docs/manifest.md). Out: a validated, immutable :class:`Manifest` with lookup helpers, or a
:class:`ManifestError` that names the file, the path inside it (``cities[2].sites[0].devices[1].id``) and what is
wrong. Unknown keys are errors, never warnings: a misspelt ``valid_rnage`` must not silently vanish.

Every other package reads sites, devices, sensors, limits, periods and alert routing from here; nothing about a
site is typed twice.
"""

from __future__ import annotations

import datetime as dt
import enum
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pilotwatch.qc_config import ParameterQC
from pilotwatch.wire import DEVICE_ID_PATTERN, SENSOR_ID_PATTERN

MANIFEST_VERSION = 1

Identifier = Annotated[str, Field(pattern=SENSOR_ID_PATTERN.pattern)]
DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN.pattern)]
SiteId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN.pattern)]


class Parameter(enum.StrEnum):
    """Measured quantities and the one unit each is carried in, end to end."""

    TEMPERATURE = "temperature"
    PH = "ph"
    DO = "do"
    CONDUCTIVITY = "conductivity"
    TURBIDITY = "turbidity"
    ORP = "orp"
    AMMONIA = "ammonia"
    COLOUR = "colour"
    UV254 = "uv254"
    COD = "cod"
    FLOW = "flow"
    TDS = "tds"
    DISTANCE = "distance"
    FILL = "fill"
    WATER_LEVEL = "water_level"

    @property
    def unit(self) -> str:
        return CANONICAL_UNITS[self]


CANONICAL_UNITS: dict[Parameter, str] = {
    Parameter.TEMPERATURE: "degC",
    Parameter.PH: "pH",
    Parameter.DO: "mg/L",
    Parameter.CONDUCTIVITY: "uS/cm",
    Parameter.TURBIDITY: "NTU",
    Parameter.ORP: "mV",
    Parameter.AMMONIA: "mg/L",
    Parameter.COLOUR: "Pt-Co",
    Parameter.UV254: "1/m",
    Parameter.COD: "mg/L",
    Parameter.FLOW: "m3/h",
    Parameter.TDS: "ppm",
    Parameter.DISTANCE: "cm",
    Parameter.FILL: "%",
    Parameter.WATER_LEVEL: "m",
}


class SiteKind(enum.StrEnum):
    WATER = "water"
    EFFLUENT = "effluent"
    BIN = "bin"


class SiteRole(enum.StrEnum):
    INTERVENTION = "intervention"
    CONTROL = "control"


class LimitStatistic(enum.StrEnum):
    """How a standard wants a limit compared: a single sample, or a percentile / mean over the period."""

    SAMPLE = "sample"
    P20 = "p20"
    P80 = "p80"
    MEAN = "mean"
    GEOMEAN = "geomean"


class Role(enum.StrEnum):
    OPERATOR = "operator"
    CITY_STAFF = "city_staff"
    EVALUATOR = "evaluator"
    ADMIN = "admin"


class AlertKind(enum.StrEnum):
    POLLUTION = "pollution"
    LIMIT_EXCEEDANCE = "limit_exceedance"
    DEVICE = "device"
    BIN_OVERFLOW = "bin_overflow"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Location(Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    description: str = ""


class Period(Strict):
    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self

    def contains(self, day: dt.date) -> bool:
        return self.start <= day < self.end


class Periods(Strict):
    baseline: Period
    intervention: Period

    @model_validator(mode="after")
    def _not_overlapping(self) -> Self:
        if self.intervention.start < self.baseline.end:
            raise ValueError(
                f"intervention starts {self.intervention.start}, before the baseline ends {self.baseline.end}"
            )
        return self


class ParameterLimit(Strict):
    """One limit of one standard. ``confirmed: false`` carries numbers the reference could not verify."""

    min: float | None = None
    max: float | None = None
    statistic: LimitStatistic = LimitStatistic.SAMPLE
    confirmed: bool = True
    note: str = ""

    @model_validator(mode="after")
    def _has_bound(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("a limit needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class LimitSet(Strict):
    standard: str = Field(min_length=3)
    citation: str = Field(min_length=3)
    parameters: dict[Parameter, ParameterLimit]


class Sensor(Strict):
    id: Identifier
    param: Parameter
    unit: str
    driver: str = Field(min_length=2, description="hardware driver name, e.g. atlas-ezo-ph; see edge/drivers")
    address: str | None = Field(default=None, description="bus address or port, e.g. 0x63 or /dev/ttyS0")
    interval_s: float = Field(default=60.0, gt=0, le=86_400)
    valid_range: tuple[float, float]
    calibration: dict[str, float] = Field(
        default_factory=dict, description="driver constants, e.g. empty_cm/full_cm for a bin fill sensor"
    )
    qc: ParameterQC = Field(default_factory=ParameterQC, description="QC configuration, see docs/qc.md")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.unit != self.param.unit:
            raise ValueError(f"unit {self.unit!r} is not the unit of {self.param.value}: use {self.param.unit!r}")
        low, high = self.valid_range
        if low >= high:
            raise ValueError(f"valid_range [{low}, {high}] must have low < high")
        return self


class Device(Strict):
    id: DeviceId
    model: str
    commissioned: dt.date
    sensors: list[Sensor] = Field(min_length=1)

    @field_validator("sensors")
    @classmethod
    def _unique_sensor_ids(cls, sensors: list[Sensor]) -> list[Sensor]:
        _require_unique([s.id for s in sensors], "sensor id")
        return sensors

    def sensor(self, sensor_id: str) -> Sensor | None:
        return next((s for s in self.sensors if s.id == sensor_id), None)


class FaultKind(enum.StrEnum):
    SPIKE = "spike"
    DRIFT = "drift"
    FOULING = "fouling"
    FLAT_LINE = "flat_line"
    DROPOUT = "dropout"
    NOISE_BURST = "noise_burst"
    DEAD_BATTERY = "dead_battery"
    CLOCK_JUMP = "clock_jump"


class ScheduledFault(Strict):
    device: DeviceId
    sensor: Identifier | None = None
    kind: FaultKind
    start: dt.datetime
    hours: float = Field(gt=0)
    magnitude: float = 1.0


class SiteSimulation(Strict):
    """How the simulator behaves at this site; ignored by everything that reads real hardware."""

    pilot_effect: dict[Parameter, float] = Field(
        default_factory=dict, description="relative true change in the intervention period, e.g. cod: -0.3"
    )
    events_per_week: float = Field(default=1.0, ge=0)
    fault_rate_per_week: float = Field(default=0.5, ge=0)
    faults: list[ScheduledFault] = Field(default_factory=list)


class Site(Strict):
    id: SiteId
    name: str
    kind: SiteKind
    role: SiteRole
    location: Location
    limits: list[str] = Field(default_factory=list)
    periods: Periods
    devices: list[Device] = Field(min_length=1)
    simulation: SiteSimulation = Field(default_factory=SiteSimulation)


class City(Strict):
    id: SiteId
    name: str
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    timezone: str
    pilot: str
    sites: list[Site] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}, e.g. 'Asia/Bangkok'") from None
        return value


class AlertChannel(enum.StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"
    MQTT = "mqtt"


class EscalationStep(Strict):
    """Who hears about a fired alert that nobody has acknowledged ``after_s`` seconds after it was first sent."""

    after_s: float = Field(gt=0, le=7 * 86_400)
    roles: list[Role] = Field(min_length=1)
    channels: list[AlertChannel] = Field(default_factory=list, description="empty: the route's channels")


class AlertRoute(Strict):
    city: str
    alert: AlertKind
    roles: list[Role] = Field(min_length=1)
    channels: list[AlertChannel] = Field(min_length=1)
    escalation: list[EscalationStep] = Field(default_factory=list)

    @field_validator("escalation")
    @classmethod
    def _rising_delays(cls, steps: list[EscalationStep]) -> list[EscalationStep]:
        delays = [s.after_s for s in steps]
        if delays != sorted(set(delays)):
            raise ValueError(f"escalation steps must have rising after_s, got {delays}")
        return steps


class Notifications(Strict):
    """Where the notifier finds its recipients: a file beside the manifest, kept out of version control because
    it holds e-mail addresses and names the secrets of webhooks (see docs/alerts.md, "Notifications")."""

    recipients: str = Field(min_length=1, description="recipients YAML, relative to the manifest's folder")


class Programme(Strict):
    name: str
    description: str = ""


class Manifest(Strict):
    version: int
    programme: Programme
    limits: dict[str, LimitSet] = Field(default_factory=dict)
    cities: list[City] = Field(min_length=1)
    alerts: list[AlertRoute] = Field(default_factory=list)
    notifications: Notifications | None = None

    @field_validator("version")
    @classmethod
    def _supported_version(cls, value: int) -> int:
        if value != MANIFEST_VERSION:
            raise ValueError(
                f"manifest version {value} is not supported; this pilotwatch reads version {MANIFEST_VERSION}"
            )
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> Self:
        _require_unique([c.id for c in self.cities], "city id")
        _require_unique([s.id for _, s in self.iter_sites()], "site id")
        _require_unique([d.id for _, _, d in self.iter_devices()], "device id")
        city_ids = {c.id for c in self.cities}
        for city in self.cities:
            for site in city.sites:
                for name in site.limits:
                    if name not in self.limits:
                        raise ValueError(f"site {site.id!r} names limit set {name!r}, which is not under 'limits'")
                device_ids = {d.id for d in site.devices}
                for fault in site.simulation.faults:
                    if fault.device not in device_ids:
                        raise ValueError(
                            f"site {site.id!r} schedules a fault on device {fault.device!r}, not at this site"
                        )
        for route in self.alerts:
            if route.city != "*" and route.city not in city_ids:
                raise ValueError(f"alert route names city {route.city!r}; known: {sorted(city_ids)} or '*'")
        return self

    def iter_sites(self) -> Iterator[tuple[City, Site]]:
        for city in self.cities:
            for site in city.sites:
                yield city, site

    def iter_devices(self) -> Iterator[tuple[City, Site, Device]]:
        for city, site in self.iter_sites():
            for device in site.devices:
                yield city, site, device

    def device_index(self) -> dict[str, DevicePlacement]:
        return {d.id: DevicePlacement(city=c, site=s, device=d) for c, s, d in self.iter_devices()}

    def site(self, site_id: str) -> tuple[City, Site]:
        for city, site in self.iter_sites():
            if site.id == site_id:
                return city, site
        raise KeyError(site_id)

    def city(self, city_id: str) -> City:
        for city in self.cities:
            if city.id == city_id:
                return city
        raise KeyError(city_id)


@dataclass(frozen=True, slots=True)
class DevicePlacement:
    """Where a device stands: what ingest attaches as tags to every reading of the device."""

    city: City
    site: Site
    device: Device


def _require_unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} appears more than once")
        seen.add(value)


class ManifestError(ValueError):
    """A manifest that cannot be used. ``problems`` lists (path inside the file, message)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem(s) in the pilot manifest"]
        lines += [f"  - {path or '<top>'}: {message}" for path, message in problems]
        super().__init__("\n".join(lines))


def _format_location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_problems(exc: ValidationError, data: Any) -> list[tuple[str, str]]:
    """(path, message) per problem, in the manifest's wording; other YAML files of pilotwatch report the same way."""
    problems: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith(("function-", "tagged-"))))
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see docs/manifest.md for the allowed keys)"
        elif error["type"] == "missing":
            message = "required key is missing"
        message = message.removeprefix("Value error, ")
        problems.append((_describe(loc, data), message))
    return problems


def _describe(loc: tuple[int | str, ...], data: Any) -> str:
    """Render a location, naming list items by their id where they have one: ``cities[bangkok].sites[0]``."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            label = str(part)
            if isinstance(node, list) and 0 <= part < len(node):
                item = node[part]
                node = item
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    label = f"{part}:{item['id']}"
            else:
                node = None
            out += f"[{label}]"
        else:
            node = node.get(part) if isinstance(node, dict) else None
            out += f".{part}" if out else str(part)
    return out


def parse_manifest(data: Any, source: str = "<manifest>") -> Manifest:
    if not isinstance(data, dict):
        raise ManifestError(source, [("", f"the manifest must be a mapping, got {type(data).__name__}")])
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(source, validation_problems(exc, data)) from None


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Load and validate a manifest file; ``None`` loads the default manifest shipped with pilotwatch."""
    if path is None:
        text = resources.files("pilotwatch").joinpath("manifests/default.yaml").read_text(encoding="utf-8")
        source = "pilotwatch/manifests/default.yaml"
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ManifestError(source, [("", f"cannot read the file: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ManifestError(source, [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    return parse_manifest(data, source)
