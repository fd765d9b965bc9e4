"""Property-based fuzz of every decoder on ingest's side, bounded for CI: 20,000 inputs in all, each accepted or
refused with a reason by its decoder and, for readings and status payloads, by the whole intake stage too; none
crashing (issue 15, finding 1: a status with an integer of a few hundred digits used to kill ingest's consumer
thread). The long run is ``make fuzz`` (bench/fuzz_decoders.py, 1,000,000 inputs)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, Phase, given, settings

from pilotwatch.wire import Reason
from tests.reliability.decoder_inputs import (
    IntakeHarness,
    Tally,
    ack_inputs,
    check_decoder,
    readings_inputs,
    status_inputs,
)

CI: dict[str, Any] = {
    "deadline": None,
    "derandomize": True,  # the same inputs on every CI run; the long run draws new ones
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    "phases": [Phase.explicit, Phase.generate, Phase.shrink],
}
READINGS_TALLY = Tally()
STATUS_TALLY = Tally()
ACK_TALLY = Tally()
INTAKE = IntakeHarness()


@settings(max_examples=8_000, **CI)
@given(readings_inputs())
def test_readings_accepted_or_refused_with_a_reason_by_decoder_and_intake(case: tuple[str, bytes]) -> None:
    check_decoder("readings", *case, READINGS_TALLY)
    INTAKE.check(*case)


@settings(max_examples=6_000, **CI)
@given(status_inputs())
def test_status_accepted_or_refused_with_a_reason_by_decoder_and_intake(case: tuple[str, bytes]) -> None:
    check_decoder("status", *case, STATUS_TALLY)
    INTAKE.check(*case)


@settings(max_examples=6_000, **CI)
@given(ack_inputs())
def test_ack_decoder_accepts_or_refuses_with_a_reason(case: tuple[str, bytes]) -> None:
    check_decoder("ack", *case, ACK_TALLY)


def test_the_fuzz_reached_both_outcomes_and_the_hostile_reasons() -> None:
    """The runs above were not vacuous: each decoder accepted some inputs and refused others, for many reasons."""
    for tally, least in ((READINGS_TALLY, 8), (STATUS_TALLY, 6), (ACK_TALLY, 4), (INTAKE.tally, 8)):
        assert tally.total > 0, "run this module whole: the fuzz tests above fill the tallies"
        assert tally.accepted > 0
        assert len(tally.refused or {}) >= least, tally.refused
    assert Reason.NON_FINITE.value in (STATUS_TALLY.refused or {}), "no huge integer reached the status decoder"
    assert Reason.BAD_SEQUENCE.value in (READINGS_TALLY.refused or {})
