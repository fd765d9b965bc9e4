"""A small deterministic fleet generator with ground truth, for fault/event scoring tests.

Each site has four co-located probes sampled every 15 minutes: dissolved oxygen (daily cycle), pH (daily
cycle), conductivity and turbidity. Faults hit one probe (``spike``, ``drift``, ``fouling``, ``flat_line``,
``dropout``, ``noise_burst``); events hit the water, so DO drops while conductivity and turbidity rise and pH
falls, together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

STEP_S = 900
PER_DAY = 86_400 // STEP_S
PARAMS = ("do", "ph", "cond", "turb")
FAULT_KINDS = ("spike", "drift", "fouling", "flat_line", "dropout", "noise_burst")
NOISE = {"do": 0.08, "ph": 0.01, "cond": 2.0, "turb": 0.3}


@dataclass
class Interval:
    kind: str
    param: str | None  # None for an event (all parameters)
    start: int
    stop: int


@dataclass
class Site:
    times: np.ndarray
    values: dict[str, np.ndarray]
    intervals: list[Interval] = field(default_factory=list)

    def truth(self, param: str, kind: str) -> np.ndarray:
        mask = np.zeros(self.times.shape[0], dtype=bool)
        for iv in self.intervals:
            if iv.kind == kind and iv.param in (param, None):
                mask[iv.start : iv.stop] = True
        return mask


def clean_site(rng: np.random.Generator, days: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    n = days * PER_DAY
    times = np.datetime64("2024-05-01T00:00", "ns") + np.arange(n) * np.timedelta64(STEP_S, "s")
    phase = 2 * np.pi * (np.arange(n) % PER_DAY) / PER_DAY
    base = {
        "do": 8.0 + 1.5 * np.sin(phase - np.pi / 2) + 0.3 * np.sin(np.arange(n) / (PER_DAY * 9)),
        "ph": 7.6 + 0.2 * np.sin(phase - np.pi / 2),
        "cond": 480 + 10 * np.sin(phase) + 15 * np.sin(np.arange(n) / (PER_DAY * 7)),
        "turb": 6 + 0.5 * np.sin(phase),
    }
    values = {p: base[p] + rng.normal(0, NOISE[p], n) for p in PARAMS}
    values["turb"] = np.abs(values["turb"])
    return times, values


def inject_fault(rng: np.random.Generator, site: Site, kind: str, param: str, start: int) -> Interval:
    x = site.values[param]
    amp = {"do": 1.5, "ph": 0.2, "cond": 15.0, "turb": 1.0}[param]
    if kind == "spike":
        x[start] += rng.choice([-1, 1]) * 6 * amp
        stop = start + 1
    elif kind == "drift":
        stop = start + 4 * PER_DAY
        x[start:stop] += np.linspace(0, 3 * amp, stop - start) * rng.choice([-1, 1])
    elif kind == "fouling":
        stop = start + 5 * PER_DAY
        seg = x[start:stop]
        mean = np.convolve(seg, np.ones(PER_DAY) / PER_DAY, mode="same")
        damp = np.linspace(1.0, 0.1, stop - start)
        x[start:stop] = mean + (seg - mean) * damp - np.linspace(0, 1.5 * amp, stop - start)
    elif kind == "flat_line":
        stop = start + 8 * 4
        x[start:stop] = x[start]
    elif kind == "dropout":
        stop = start + 6 * 4
        x[start:stop] = np.nan
    elif kind == "noise_burst":
        stop = start + 6 * 4
        x[start:stop] += rng.normal(0, 2 * amp, stop - start)
    else:
        raise ValueError(kind)
    return Interval(kind, param, start, stop)


def inject_event(rng: np.random.Generator, site: Site, start: int) -> Interval:
    length = 8 * 4
    shape = np.concatenate([np.linspace(0, 1, 8), np.ones(length - 16), np.linspace(1, 0, 8)])
    size = rng.uniform(0.8, 1.2)
    site.values["do"][start : start + length] -= 3.5 * size * shape
    site.values["cond"][start : start + length] += 150 * size * shape
    site.values["turb"][start : start + length] += 25 * size * shape
    site.values["ph"][start : start + length] -= 0.6 * size * shape
    return Interval("event", None, start, start + length)


def make_site(seed: int, fault_kind: str | None, days: int = 50, n_faults: int = 3, n_events: int = 2) -> Site:
    """A site with ``n_faults`` faults of one kind on random probes and ``n_events`` water events.

    Nothing is injected in the first 8 days (the detectors' warm-up); intervals never overlap.
    """
    rng = np.random.default_rng(seed)
    times, values = clean_site(rng, days)
    site = Site(times, values)
    slots = list(range(8 * PER_DAY, (days - 7) * PER_DAY, 7 * PER_DAY))
    picks = rng.permutation(len(slots))
    kinds = [fault_kind] * (n_faults if fault_kind else 0) + ["event"] * n_events
    for kind, slot in zip(kinds, picks, strict=False):
        start = slots[slot] + int(rng.integers(0, PER_DAY // 2))
        if kind == "event":
            site.intervals.append(inject_event(rng, site, start))
        else:
            param = str(rng.choice(PARAMS))
            site.intervals.append(inject_fault(rng, site, kind, param, start))
    return site
