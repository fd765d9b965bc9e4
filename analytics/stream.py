"""The live service's explicit state: per series what has been evaluated, the detectors' memory, and the
checkpoint file that carries both across restarts.

Contract: :class:`SeriesState` is everything a live pass needs beyond the stored readings; the pass itself is
:func:`analytics.pipeline.evaluate_parameter` (the batch function) with a
:class:`~analytics.pipeline.StreamWindow`. :func:`write_checkpoint` replaces the file atomically, so a crash leaves
the previous checkpoint whole; :func:`read_checkpoint` refuses a file of another version with a message naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from analytics import detectors as det
from analytics.pipeline import ParameterResult
from pilotwatch.schema import SERIES_TAGS

CHECKPOINT_VERSION: Final = 1

SeriesKey = tuple[str, str, str, str, str]
"""(city, site, device, sensor, param): the tags of one series, in :data:`pilotwatch.schema.SERIES_TAGS` order."""


@dataclass
class SeriesState:
    horizon_ms: int
    """Readings at or before this are settled: the detectors have learnt them for good."""
    detectors: dict[str, det.Detector]
    seen_until_ms: int
    seen: set[int] = field(default_factory=set)  # sample times already read, back to horizon - context


@dataclass(frozen=True)
class SeriesPass:
    """One series in one live pass: its re-read window and what the pipeline made of it."""

    t_ms: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    fresh: npt.NDArray[np.bool_]
    settled: npt.NDArray[np.bool_]
    result: ParameterResult


def series_key(joined: str) -> SeriesKey:
    parts = tuple(joined.split("|"))
    if len(parts) != len(SERIES_TAGS):
        raise ValueError(f"checkpoint series {joined!r} is not {'|'.join(SERIES_TAGS)}")
    return (parts[0], parts[1], parts[2], parts[3], parts[4])


def series_state_dict(series: Mapping[SeriesKey, SeriesState]) -> dict[str, Any]:
    """JSON-able state of every series (restore with :func:`load_series_state`)."""
    return {
        "|".join(key): {
            "horizon_ms": s.horizon_ms,
            "seen_until_ms": s.seen_until_ms,
            "seen": sorted(s.seen),
            "detectors": {name: d.state_dict() for name, d in s.detectors.items()},
        }
        for key, s in series.items()
    }


def load_series_state(state: Mapping[str, Any]) -> dict[SeriesKey, SeriesState]:
    return {
        series_key(joined): SeriesState(
            horizon_ms=int(s["horizon_ms"]),
            detectors={name: det.detector_from_state(d) for name, d in s["detectors"].items()},
            seen_until_ms=int(s["seen_until_ms"]),
            seen={int(t) for t in s["seen"]},
        )
        for joined, s in state.items()
    }


@dataclass(frozen=True)
class Checkpoint:
    since_ms: int
    series: dict[str, Any]  # as series_state_dict returns it


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    body = {"version": CHECKPOINT_VERSION, "since_ms": checkpoint.since_ms, "series": checkpoint.series}
    tmp.write_text(json.dumps(body, separators=(",", ":")), encoding="utf-8")
    tmp.replace(path)


def read_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path``; None when there is none yet."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the analytics checkpoint {path}: {exc}") from None
    if saved.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {saved.get('version')!r}, expected {CHECKPOINT_VERSION}")
    return Checkpoint(since_ms=int(saved["since_ms"]), series=saved["series"])
