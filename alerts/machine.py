"""The alert state machine of one rule and one series: data plus a pure transition function.

``Machine(timing).transition(state, observation, now) -> (state, events)`` never reads a clock, a file or the
network; the live engine and the backtest feed it the same observations in sample-time order and get the same
alerts. States::

    INACTIVE --trigger--> PENDING --trigger at `for_ms` after--> FIRING --clear held for `clear_for_ms`--> INACTIVE
       ^                     |      the episode began             |  (emits FIRED)                     (emits RESOLVED)
       +------clear----------+  (hold: stays pending)             +--trigger or hold: stays FIRING, clear timer reset

Guarantees the tests hold it to:

- **Hysteresis**: an observation is TRIGGER, HOLD (between the trigger and the clear threshold) or CLEAR. Only
  CLEAR cancels a pending episode or counts towards resolving, so a value oscillating around the limit
  (TRIGGER/HOLD) fires once, after ``for_ms``, and stays firing.
- **Outage-aware**: the timers run on *sample* time and only across continuous evidence. An observation more
  than ``max_gap_ms`` after the previous one restarts the pending and the clear timer from itself: no data is
  not recovery, and a gap can neither fire nor resolve an alert. UNUSABLE observations (QC-gated: FAIL, or a
  fault label) leave the state untouched — they are no evidence either way.
- **Order**: an observation at or before the last one seen (a re-read, a duplicate, a replay already evaluated)
  changes nothing, so replaying a window after a restart is harmless.
- **One alert per episode**: an episode starts at the sample time of the first TRIGGER of its pending phase
  (``episode_ms``); the engine derives the alert id from (rule, series, episode_ms), so re-deciding the same
  data gives the same id.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class Phase(enum.StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


class Condition(enum.StrEnum):
    """What one observation says about a rule's condition."""

    TRIGGER = "trigger"  # the alert condition holds
    HOLD = "hold"  # between the trigger and the clear threshold (hysteresis band): keeps a firing alert
    CLEAR = "clear"  # the clear condition holds
    UNUSABLE = "unusable"  # no evidence (QC-gated): the state does not move


class EventKind(enum.StrEnum):
    FIRED = "fired"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Timing:
    """How long a condition must hold, in sample-time milliseconds."""

    for_ms: int = 0
    """TRIGGER held this long (pending) before the alert fires; 0 fires on the first TRIGGER."""
    clear_for_ms: int = 0
    """CLEAR held this long before a firing alert resolves (keep-firing period); 0 resolves on the first CLEAR."""
    max_gap_ms: int = 3_600_000
    """Observations further apart than this are not continuous evidence: timers restart after the gap."""

    def __post_init__(self) -> None:
        if self.for_ms < 0 or self.clear_for_ms < 0:
            raise ValueError(f"for_ms and clear_for_ms must be >= 0, got {self.for_ms} and {self.clear_for_ms}")
        if self.max_gap_ms <= 0:
            raise ValueError(f"max_gap_ms must be > 0, got {self.max_gap_ms}")


@dataclass(frozen=True, slots=True)
class Observation:
    t_ms: int  # sample time
    condition: Condition
    value: float | None = None


@dataclass(frozen=True, slots=True)
class State:
    phase: Phase = Phase.INACTIVE
    last_ms: int | None = None  # sample time of the last usable observation
    episode_ms: int | None = None  # first TRIGGER of the current pending/firing episode
    clear_since_ms: int | None = None  # first CLEAR of the current run of CLEARs while firing
    fired_ms: int | None = None  # sample time the current alert fired

    def to_dict(self) -> dict[str, object]:
        return {
            "phase": self.phase.value,
            "last_ms": self.last_ms,
            "episode_ms": self.episode_ms,
            "clear_since_ms": self.clear_since_ms,
            "fired_ms": self.fired_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> State:
        def opt(name: str) -> int | None:
            value = data.get(name)
            return None if value is None else int(str(value))

        return cls(
            phase=Phase(str(data["phase"])),
            last_ms=opt("last_ms"),
            episode_ms=opt("episode_ms"),
            clear_since_ms=opt("clear_since_ms"),
            fired_ms=opt("fired_ms"),
        )


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    episode_ms: int  # identifies the alert together with (rule, series)
    t_ms: int  # sample time of the observation that decided it
    decided_ms: int  # the engine's clock when it was decided
    value: float | None = None


@dataclass(frozen=True, slots=True)
class Machine:
    timing: Timing

    def transition(self, state: State, obs: Observation, now: int) -> tuple[State, tuple[Event, ...]]:  # noqa: PLR0911
        """The next state and what happened; pure."""
        if obs.condition is Condition.UNUSABLE:
            return state, ()
        if state.last_ms is not None and obs.t_ms <= state.last_ms:
            return state, ()
        gap = state.last_ms is not None and obs.t_ms - state.last_ms > self.timing.max_gap_ms
        t = obs.t_ms
        state = replace(state, last_ms=t)
        if state.phase is Phase.INACTIVE or state.phase is Phase.PENDING:
            if obs.condition is Condition.HOLD and state.phase is Phase.PENDING and not gap:
                return state, ()  # inside the hysteresis band: neither confirms nor cancels the episode
            if obs.condition is not Condition.TRIGGER:
                return replace(state, phase=Phase.INACTIVE, episode_ms=None), ()
            episode = t if state.phase is Phase.INACTIVE or gap or state.episode_ms is None else state.episode_ms
            if t - episode >= self.timing.for_ms:
                fired = replace(state, phase=Phase.FIRING, episode_ms=episode, clear_since_ms=None, fired_ms=t)
                return fired, (Event(EventKind.FIRED, episode, t, now, obs.value),)
            return replace(state, phase=Phase.PENDING, episode_ms=episode), ()
        # FIRING
        if obs.condition is not Condition.CLEAR:
            return replace(state, clear_since_ms=None), ()
        since = t if state.clear_since_ms is None or gap else state.clear_since_ms
        if t - since >= self.timing.clear_for_ms:
            episode = state.episode_ms if state.episode_ms is not None else t
            resolved = State(phase=Phase.INACTIVE, last_ms=t)
            return resolved, (Event(EventKind.RESOLVED, episode, t, now, obs.value),)
        return replace(state, clear_since_ms=since), ()
