"""What the water, the dye effluent and the bins really do at a site: true values before any sensor sees them.

Three site models, one per :class:`~pilotwatch.manifest.SiteKind`, each a pure function of time for a seed:

- **water** (canal, river, harbour): daily cycles (temperature peaks mid-afternoon; photosynthesis lifts DO and
  pH towards 14:00), a semi-diurnal tide (12.42 h) pushing salt (conductivity) and silt (turbidity), and events:
  ``sewage_discharge`` (DO and ORP fall, conductivity, turbidity and ammonia rise together, pH dips) and ``rain``
  (turbidity up, conductivity diluted, water cooler). Baselines per country follow ../shared/reference:
  Bangkok canals sit at 0-2 mg/L DO (class 4-5), Malaysian class III rivers at 3-5, the Da Nang harbour is brackish.
- **effluent** (batik workshop outfall): dyeing batches on a workshop schedule (Mon-Sat; baths drained 1.5 h
  after each batch starts, then a rinse) drive flow, colour, UV254, conductivity (salt), pH (soda-ash fixing) and
  temperature; ``discharge_spike`` events are a concentrated bath dumped at once.
- **bin** (market or quay waste bin, one per device): fill rises at a rate that depends on the hour (market hours)
  and weekday, with a day-to-day factor; collections at 07:00 every day but Sunday empty it; ``overflow`` is the
  state of a bin past 100 %; ``fire`` events raise the bin's temperature.

The site's pilot effect multiplies a parameter's true value by ``1 + effect`` on every day inside the site's
intervention period (for ``fill`` it scales the filling rate, so overflows become rarer): the known answer that
an evaluation must find. Events come from a seeded weekly schedule at ``events_per_week`` (Poisson).
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache

from firmware_sim.noise import normal, poisson, rng, stable_key, uniform
from pilotwatch.manifest import City, Device, Parameter, Site, SiteKind

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
TIDE_PERIOD_MS = int(12.42 * HOUR_MS)


class EventKind:
    """Names of environmental events, as they appear in ground truth (``event:<kind>``)."""

    SEWAGE_DISCHARGE = "sewage_discharge"
    RAIN = "rain"
    DISCHARGE_SPIKE = "discharge_spike"
    FIRE = "fire"
    OVERFLOW = "overflow"


EVENT_KINDS: dict[SiteKind, tuple[tuple[str, float, float, float], ...]] = {
    # kind, weight, shortest and longest duration in hours
    SiteKind.WATER: ((EventKind.SEWAGE_DISCHARGE, 0.6, 2.0, 6.0), (EventKind.RAIN, 0.4, 1.0, 4.0)),
    SiteKind.EFFLUENT: ((EventKind.DISCHARGE_SPIKE, 1.0, 0.25, 1.0),),
    SiteKind.BIN: ((EventKind.FIRE, 1.0, 0.5, 2.0),),
}


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    start_ms: int
    end_ms: int
    magnitude: float
    device: str | None = None  # an event of one device (a fire in one bin); None: the whole site

    @property
    def tail_ms(self) -> int:
        return (self.end_ms - self.start_ms) // 2

    def envelope(self, t_ms: int) -> float:
        """0 before, a quick rise to 1, 1 until ``end_ms``, then an exponential tail of half the duration."""
        if t_ms < self.start_ms:
            return 0.0
        if t_ms < self.end_ms:
            ramp = max((self.end_ms - self.start_ms) * 0.1, 60_000.0)
            return min(1.0, (t_ms - self.start_ms) / ramp)
        tail = self.tail_ms
        if t_ms < self.end_ms + tail:
            return math.exp(-3.0 * (t_ms - self.end_ms) / tail)
        return 0.0

    def active(self, t_ms: int) -> bool:
        return self.start_ms <= t_ms < self.end_ms + self.tail_ms


@dataclass(frozen=True, slots=True)
class WaterProfile:
    temp: float
    do: float
    ph: float
    ec: float
    tide: float
    turbidity: float
    orp: float
    ammonia: float


WATER_PROFILES = {
    # Khlong Saen Saep: DO usually < 2 mg/L, H2S present [TH6]; fresh canal water, tidal backwater.
    "TH": WaterProfile(temp=30.0, do=1.6, ph=7.1, ec=650.0, tide=0.15, turbidity=35.0, orp=60.0, ammonia=1.2),
    # Sungai Melaka downstream: class III-IV [MY4]; tidal estuary.
    "MY": WaterProfile(temp=29.0, do=4.2, ph=6.9, ec=900.0, tide=0.4, turbidity=28.0, orp=150.0, ammonia=0.7),
    # Da Nang harbour basins: brackish, greasy [VN6].
    "VN": WaterProfile(temp=28.0, do=5.0, ph=7.8, ec=32_000.0, tide=0.1, turbidity=18.0, orp=180.0, ammonia=0.35),
}
DEFAULT_WATER = WaterProfile(temp=28.5, do=5.0, ph=7.2, ec=800.0, tide=0.2, turbidity=20.0, orp=150.0, ammonia=0.5)

BATCH_HOURS = (8.0, 10.5, 13.5, 15.5)
COLLECTION_HOUR = 7.0


def _utc_offset_ms(timezone: str) -> int:
    offset = zoneinfo.ZoneInfo(timezone).utcoffset(dt.datetime(2026, 1, 1))
    return int(offset.total_seconds() * 1000) if offset is not None else 0


class SiteModel:
    """True values at one site for a seed. ``state(t_ms, device)`` is pure: same inputs, same answer."""

    def __init__(self, city: City, site: Site, seed: int) -> None:
        self.city = city
        self.site = site
        self.seed = seed
        self.offset_ms = _utc_offset_ms(city.timezone)
        self.key = stable_key(seed, site.id)
        self.water = WATER_PROFILES.get(city.country, DEFAULT_WATER)
        self.tide_phase = uniform(self.key, 1) * 2 * math.pi
        self.effects = {p: 1.0 + e for p, e in site.simulation.pilot_effect.items()}
        self._intervention = site.periods.intervention
        self._events = lru_cache(maxsize=64)(self._week_events)

    # -- calendar --------------------------------------------------------------------------------------------
    def local_hour(self, t_ms: int) -> float:
        return ((t_ms + self.offset_ms) % DAY_MS) / HOUR_MS

    def local_day(self, t_ms: int) -> int:
        return (t_ms + self.offset_ms) // DAY_MS

    @staticmethod
    def weekday(day: int) -> int:
        """0 = Monday (epoch day 0 was a Thursday)."""
        return (day + 3) % 7

    def in_intervention(self, t_ms: int) -> bool:
        day = dt.date(1970, 1, 1) + dt.timedelta(days=self.local_day(t_ms))
        return self._intervention.contains(day)

    def effect(self, param: Parameter, t_ms: int) -> float:
        factor = self.effects.get(param)
        return factor if factor is not None and self.in_intervention(t_ms) else 1.0

    # -- events ----------------------------------------------------------------------------------------------
    def _week_events(self, week: int) -> tuple[Event, ...]:
        generator = rng(self.seed, self.site.id, "events", week)
        kinds = EVENT_KINDS[self.site.kind]
        count = poisson(generator, self.site.simulation.events_per_week)
        out = []
        for _ in range(count):
            kind, _, low, high = generator.choices(kinds, weights=[k[1] for k in kinds])[0]
            start = week * WEEK_MS + int(generator.random() * WEEK_MS)
            if kind in (EventKind.RAIN, EventKind.DISCHARGE_SPIKE):
                # Convective rain falls in the afternoon; a bath is dumped during working hours.
                day_start = (start + self.offset_ms) // DAY_MS * DAY_MS - self.offset_ms
                hour = generator.uniform(13.0, 18.0) if kind == EventKind.RAIN else generator.uniform(8.0, 17.0)
                start = day_start + int(hour * HOUR_MS)
            duration = int(generator.uniform(low, high) * HOUR_MS)
            device = generator.choice(self.site.devices).id if self.site.kind is SiteKind.BIN else None
            out.append(Event(kind, start, start + duration, generator.uniform(0.6, 1.4), device))
        return tuple(sorted(out, key=lambda e: e.start_ms))

    def events_between(self, start_ms: int, end_ms: int) -> list[Event]:
        """Events (not overflows, which are states) that start in [start_ms, end_ms)."""
        out = []
        for week in range(start_ms // WEEK_MS, end_ms // WEEK_MS + 1):
            out += [e for e in self._events(week) if start_ms <= e.start_ms < end_ms]
        return out

    def active_events(self, t_ms: int, device: str | None = None) -> list[Event]:
        week = t_ms // WEEK_MS
        return [
            e
            for w in (week - 1, week)
            for e in self._events(w)
            if e.active(t_ms) and (e.device is None or e.device == device)
        ]

    # -- true values -----------------------------------------------------------------------------------------
    def state(self, t_ms: int, device: Device) -> tuple[dict[Parameter, float], str | None]:
        """True values of every parameter the site kind knows, and the dominant active event (or None)."""
        events = self.active_events(t_ms, device.id)
        if self.site.kind is SiteKind.WATER:
            values = self._water(t_ms, events)
        elif self.site.kind is SiteKind.EFFLUENT:
            values = self._effluent(t_ms, events)
        else:
            values = self._bin(t_ms, events, device)
        for param, factor in self.effects.items():
            if param in values and param is not Parameter.FILL and self.in_intervention(t_ms):
                values[param] *= factor
        kind = max(events, key=lambda e: e.envelope(t_ms)).kind if events else None
        if self.site.kind is SiteKind.BIN and kind is None and values[Parameter.FILL] >= 100.0:
            kind = EventKind.OVERFLOW
        return values, kind

    @staticmethod
    def _load(events: list[Event], kind: str, t_ms: int) -> float:
        return sum(e.envelope(t_ms) * e.magnitude for e in events if e.kind == kind)

    def _water(self, t_ms: int, events: list[Event]) -> dict[Parameter, float]:
        p = self.water
        hour = self.local_hour(t_ms)
        warm = math.sin(2 * math.pi * (hour - 9.0) / 24.0)
        photo = math.sin(2 * math.pi * (hour - 8.0) / 24.0)
        tide = math.sin(2 * math.pi * t_ms / TIDE_PERIOD_MS + self.tide_phase)
        day = normal(self.key, self.local_day(t_ms))
        sewage = self._load(events, EventKind.SEWAGE_DISCHARGE, t_ms)
        rain = self._load(events, EventKind.RAIN, t_ms)
        return {
            Parameter.TEMPERATURE: p.temp + 1.3 * warm - 1.2 * rain + 0.3 * day,
            Parameter.DO: max(0.05, p.do * (1 + 0.35 * photo + 0.05 * day) * (1 - 0.75 * min(sewage, 1.0))),
            Parameter.PH: p.ph + 0.15 * photo - 0.35 * sewage - 0.15 * rain,
            Parameter.CONDUCTIVITY: p.ec
            * (1 + p.tide * tide + 0.03 * day)
            * (1 + 0.6 * sewage)
            * (1 - 0.3 * min(rain, 1.0)),
            Parameter.TURBIDITY: p.turbidity * (1 + 0.15 * tide + 0.1 * day) * (1 + 2.5 * sewage + 3.0 * rain),
            Parameter.ORP: p.orp + 40.0 * photo - 220.0 * sewage,
            Parameter.AMMONIA: p.ammonia * (1 - 0.15 * photo) * (1 + 4.0 * sewage),
            Parameter.WATER_LEVEL: 1.0 + 0.4 * tide + 0.3 * rain,
        }

    def _effluent(self, t_ms: int, events: list[Event]) -> dict[Parameter, float]:
        hour = self.local_hour(t_ms)
        day = self.local_day(t_ms)
        discharge = rinse = 0.0
        if self.weekday(day) < 6:
            for index, batch_hour in enumerate(BATCH_HOURS):
                since = hour - batch_hour
                strength = 0.7 + 0.6 * uniform(self.key, day * 8 + index)
                if 1.5 <= since < 2.0:
                    discharge = strength
                elif 2.0 <= since < 2.75:
                    rinse = strength
        spike = self._load(events, EventKind.DISCHARGE_SPIKE, t_ms)
        warm = math.sin(2 * math.pi * (hour - 9.0) / 24.0)
        return {
            Parameter.FLOW: 0.05 + 2.0 * discharge + 1.5 * (rinse > 0) + 3.0 * min(spike, 1.0),
            Parameter.COLOUR: 80.0 + 2500.0 * discharge + 500.0 * rinse + 4000.0 * spike,
            Parameter.UV254: 15.0 + 220.0 * discharge + 50.0 * rinse + 350.0 * spike,
            Parameter.CONDUCTIVITY: 1200.0 + 7000.0 * discharge + 1500.0 * rinse + 9000.0 * spike,
            Parameter.PH: min(12.5, 7.4 + 2.8 * (discharge > 0) + 0.8 * (rinse > 0) + 3.0 * min(spike, 1.0)),
            Parameter.TEMPERATURE: 29.0
            + 2.0 * warm
            + 14.0 * (discharge > 0)
            + 4.0 * (rinse > 0)
            + 10.0 * min(spike, 1.0),
            Parameter.COD: 40.0 + 700.0 * discharge + 150.0 * rinse + 1100.0 * spike,
        }

    def _fill_rate(self, device_key: int, day: int, hour: int) -> float:
        """Per cent of the bin per hour."""
        if 5 <= hour < 11:
            share = 0.09  # morning market
        elif 11 <= hour < 17:
            share = 0.04
        elif 17 <= hour < 21:
            share = 0.05  # evening stalls
        else:
            share = 0.002
        daily = (70.0, 70.0, 70.0, 70.0, 75.0, 85.0, 60.0)[self.weekday(day)]
        factor = 0.7 + 0.6 * uniform(device_key, day)
        return share * daily * factor

    def fill(self, t_ms: int, device: Device) -> float:
        """Fill % of the bin: residual after the last collection plus what came in since (may pass 100 %)."""
        device_key = stable_key(self.seed, device.id, "bin")
        scale = 0.8 + 0.4 * uniform(device_key, -1)
        local = t_ms + self.offset_ms
        # The last collection at or before t: 07:00 local on any day but Sunday.
        day = local // DAY_MS
        if local % DAY_MS < COLLECTION_HOUR * HOUR_MS:
            day -= 1
        while self.weekday(day) == 6:
            day -= 1
        cursor = day * DAY_MS + int(COLLECTION_HOUR * HOUR_MS)
        level = 3.0
        while cursor < local:
            hour_start = cursor - cursor % HOUR_MS
            step_end = min(hour_start + HOUR_MS, local)
            utc = cursor - self.offset_ms
            rate = self._fill_rate(device_key, cursor // DAY_MS, (cursor % DAY_MS) // HOUR_MS) * scale
            if Parameter.FILL in self.effects and self.in_intervention(utc):
                rate *= self.effects[Parameter.FILL]
            level += rate * (step_end - cursor) / HOUR_MS
            cursor = step_end
        return min(level, 130.0)

    def _bin(self, t_ms: int, events: list[Event], device: Device) -> dict[Parameter, float]:
        fill = self.fill(t_ms, device)
        warm = math.sin(2 * math.pi * (self.local_hour(t_ms) - 9.0) / 24.0)
        fire = self._load(events, EventKind.FIRE, t_ms)
        return {
            Parameter.FILL: fill,
            Parameter.TEMPERATURE: 28.0 + 4.0 * warm + 3.0 * min(fill, 100.0) / 100.0 + 45.0 * fire,
        }
