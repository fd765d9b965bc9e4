"""The state machine, table-driven: every phase × every condition × (continuous, after a gap, stale), plus the
scenarios people complain about in other alerting tools (flapping, gaps, duplicates)."""

from __future__ import annotations

import itertools

import pytest

from alerts.machine import Condition, EventKind, Machine, Observation, Phase, State, Timing

FOR, CLEAR, GAP = 600, 1200, 3600
M = Machine(Timing(for_ms=FOR, clear_for_ms=CLEAR, max_gap_ms=GAP))
T0 = 10_000

# (state, observation time, condition) -> (phase, episode, clear_since, event)
INACTIVE = State(Phase.INACTIVE, last_ms=T0)
PENDING = State(Phase.PENDING, last_ms=T0, episode_ms=T0 - 300)
PENDING_DUE = State(Phase.PENDING, last_ms=T0, episode_ms=T0 - FOR)
FIRING = State(Phase.FIRING, last_ms=T0, episode_ms=T0 - 5000, fired_ms=T0 - 1000)
CLEARING = State(Phase.FIRING, last_ms=T0, episode_ms=T0 - 5000, clear_since_ms=T0 - 600, fired_ms=T0 - 1000)
CLEARING_DUE = State(Phase.FIRING, last_ms=T0, episode_ms=T0 - 5000, clear_since_ms=T0 - CLEAR, fired_ms=T0 - 1000)

NEXT, AFTER_GAP, STALE = T0 + 300, T0 + GAP + 1, T0

CASES = [
    # state, t, condition, expected phase, expected episode, expected clear_since, expected event
    (INACTIVE, NEXT, Condition.TRIGGER, Phase.PENDING, NEXT, None, None),
    (INACTIVE, NEXT, Condition.HOLD, Phase.INACTIVE, None, None, None),
    (INACTIVE, NEXT, Condition.CLEAR, Phase.INACTIVE, None, None, None),
    (INACTIVE, AFTER_GAP, Condition.TRIGGER, Phase.PENDING, AFTER_GAP, None, None),
    (PENDING, NEXT, Condition.TRIGGER, Phase.FIRING, T0 - 300, None, EventKind.FIRED),  # 600 ms held: fires
    (PENDING, NEXT, Condition.HOLD, Phase.PENDING, T0 - 300, None, None),  # the band neither confirms nor cancels
    (PENDING, AFTER_GAP, Condition.HOLD, Phase.INACTIVE, None, None, None),
    (PENDING, NEXT, Condition.CLEAR, Phase.INACTIVE, None, None, None),
    (PENDING, AFTER_GAP, Condition.TRIGGER, Phase.PENDING, AFTER_GAP, None, None),  # a gap restarts pending
    (PENDING_DUE, NEXT, Condition.TRIGGER, Phase.FIRING, T0 - FOR, None, EventKind.FIRED),
    (FIRING, NEXT, Condition.TRIGGER, Phase.FIRING, T0 - 5000, None, None),
    (FIRING, NEXT, Condition.HOLD, Phase.FIRING, T0 - 5000, None, None),  # hysteresis band keeps firing
    (FIRING, NEXT, Condition.CLEAR, Phase.FIRING, T0 - 5000, NEXT, None),  # keep-firing period starts
    (FIRING, AFTER_GAP, Condition.CLEAR, Phase.FIRING, T0 - 5000, AFTER_GAP, None),
    (CLEARING, NEXT, Condition.CLEAR, Phase.FIRING, T0 - 5000, T0 - 600, None),  # 900 of 1200 held
    (CLEARING, NEXT, Condition.HOLD, Phase.FIRING, T0 - 5000, None, None),  # back in the band: timer reset
    (CLEARING, NEXT, Condition.TRIGGER, Phase.FIRING, T0 - 5000, None, None),
    (CLEARING, AFTER_GAP, Condition.CLEAR, Phase.FIRING, T0 - 5000, AFTER_GAP, None),  # no resolve across a gap
    (CLEARING_DUE, NEXT, Condition.CLEAR, Phase.INACTIVE, None, None, EventKind.RESOLVED),
    (CLEARING_DUE, AFTER_GAP, Condition.CLEAR, Phase.FIRING, T0 - 5000, AFTER_GAP, None),
]


@pytest.mark.parametrize(("state", "t", "condition", "phase", "episode", "clear_since", "event"), CASES)
def test_transition_table(
    state: State,
    t: int,
    condition: Condition,
    phase: Phase,
    episode: int | None,
    clear_since: int | None,
    event: EventKind | None,
) -> None:
    new, events = M.transition(state, Observation(t, condition, 1.0), now=99)
    assert new.phase is phase
    assert new.episode_ms == episode
    assert new.clear_since_ms == clear_since
    assert new.last_ms == t
    assert [e.kind for e in events] == ([event] if event else [])
    for e in events:
        assert e.t_ms == t
        assert e.decided_ms == 99
        assert e.episode_ms == (state.episode_ms if state.episode_ms is not None else t)


ALL_STATES = [INACTIVE, PENDING, PENDING_DUE, FIRING, CLEARING, CLEARING_DUE]


@pytest.mark.parametrize(("state", "condition"), list(itertools.product(ALL_STATES, list(Condition))))
def test_stale_or_unusable_observations_change_nothing(state: State, condition: Condition) -> None:
    """An observation at or before the last one (a re-read, a replay already evaluated) and an UNUSABLE one
    (QC-gated) leave every state exactly as it was."""
    assert M.transition(state, Observation(STALE, condition), now=1) == (state, ())
    assert M.transition(state, Observation(STALE - 1, condition), now=1) == (state, ())
    assert M.transition(state, Observation(NEXT, Condition.UNUSABLE), now=1) == (state, ())


def test_every_state_and_condition_is_covered_by_the_table() -> None:
    covered = {(s.phase, s.clear_since_ms is not None, c) for s, _, c, *_ in CASES}
    for state in ALL_STATES:
        for condition in (Condition.TRIGGER, Condition.HOLD, Condition.CLEAR):
            assert (state.phase, state.clear_since_ms is not None, condition) in covered


def run(machine: Machine, conditions: list[tuple[int, Condition]]) -> list[tuple[EventKind, int]]:
    state, out = State(), []
    for t, c in conditions:
        state, events = machine.transition(state, Observation(t, c), now=t)
        out += [(e.kind, e.episode_ms) for e in events]
    return out


def test_oscillating_around_a_limit_fires_once() -> None:
    """TRIGGER and HOLD alternating (a value crossing the limit but never into the clear band) is one alert."""
    m = Machine(Timing(for_ms=900_000, clear_for_ms=1800_000, max_gap_ms=3600_000))
    seq = [(i * 300_000, Condition.TRIGGER if i % 2 else Condition.HOLD) for i in range(1, 100)]
    assert run(m, seq) == [(EventKind.FIRED, 300_000)]


def test_flapping_into_the_clear_band_is_held_by_the_keep_firing_period() -> None:
    m = Machine(Timing(for_ms=0, clear_for_ms=1800_000, max_gap_ms=3600_000))
    seq = [(i * 300_000, Condition.TRIGGER if i % 3 else Condition.CLEAR) for i in range(1, 60)]
    assert run(m, seq) == [(EventKind.FIRED, 300_000)]
    # then clear for good: resolves once the clear condition held for 30 min
    tail = seq + [(60 * 300_000 + i * 300_000, Condition.CLEAR) for i in range(8)]
    assert run(m, tail) == [(EventKind.FIRED, 300_000), (EventKind.RESOLVED, 300_000)]


def test_a_gap_neither_resolves_nor_re_raises() -> None:
    """Firing, then one hour with no data, then the condition still holds: still the same one alert. Firing, then
    a gap, then clear readings: resolves only after the clear condition held for the full period *after* the gap."""
    m = Machine(Timing(for_ms=600_000, clear_for_ms=1800_000, max_gap_ms=1200_000))
    firing = [(i * 300_000, Condition.TRIGGER) for i in range(1, 6)]
    after_gap = [(5 * 300_000 + 3_600_000 + i * 300_000, Condition.TRIGGER) for i in range(1, 6)]
    assert run(m, firing + after_gap) == [(EventKind.FIRED, 300_000)]
    restart = 5 * 300_000 + 3_600_000
    clearing = [(restart + i * 300_000, Condition.CLEAR) for i in range(1, 7)]  # 25 min of clear: not yet
    assert run(m, firing + clearing) == [(EventKind.FIRED, 300_000)]
    clearing = [(restart + i * 300_000, Condition.CLEAR) for i in range(1, 8)]  # 30 min after the gap
    assert run(m, firing + clearing) == [(EventKind.FIRED, 300_000), (EventKind.RESOLVED, 300_000)]


def test_replaying_the_same_observations_decides_nothing_new() -> None:
    m = Machine(Timing(for_ms=600_000, clear_for_ms=1800_000, max_gap_ms=1200_000))
    seq = [(i * 300_000, Condition.TRIGGER) for i in range(1, 10)]
    state, first = State(), []
    for t, c in seq:
        state, events = m.transition(state, Observation(t, c), now=t)
        first += events
    assert [e.kind for e in first] == [EventKind.FIRED]
    for t, c in seq:
        again, events = m.transition(state, Observation(t, c), now=t)
        assert (again, events) == (state, ())


def test_state_round_trips_through_json() -> None:
    for state in ALL_STATES:
        assert State.from_dict(state.to_dict()) == state


def test_timing_refuses_negative_durations() -> None:
    with pytest.raises(ValueError, match="for_ms and clear_for_ms must be >= 0"):
        Timing(for_ms=-1)
    with pytest.raises(ValueError, match="max_gap_ms must be > 0"):
        Timing(max_gap_ms=0)
