"""The storage schema: field types never depend on the value, undeclared names are refused, and the schema names
every QC test the analytics core runs."""

from __future__ import annotations

import ioos_qc.qartod
import pytest

from analytics import qartod
from pilotwatch.schema import (
    QC_TEST_FIELDS,
    SCHEMA,
    Measurement,
    QartodFlag,
    StoredReading,
    line,
)
from pilotwatch.wire import AckMessage


def test_flags_are_ioos_qartod_flags() -> None:
    assert {f.name: int(f) for f in QartodFlag} == {
        "GOOD": int(ioos_qc.qartod.QartodFlags.GOOD),
        "UNKNOWN": int(ioos_qc.qartod.QartodFlags.UNKNOWN),
        "SUSPECT": int(ioos_qc.qartod.QartodFlags.SUSPECT),
        "FAIL": int(ioos_qc.qartod.QartodFlags.FAIL),
        "MISSING": int(ioos_qc.qartod.QartodFlags.MISSING),
    }


def test_qc_fields_name_every_qartod_test() -> None:
    assert set(QC_TEST_FIELDS) == set(qartod.TESTS)
    assert set(QC_TEST_FIELDS) <= set(SCHEMA[Measurement.QC].fields)


def test_field_type_follows_the_schema_not_the_value() -> None:
    tags = {"city": "bangkok", "site": "s 1", "device": "d", "sensor": "ph", "param": "ph"}
    assert line("reading", tags, {"value": 7, "seq": 3.0, "flag": None}, 5) == (
        r"reading,city=bangkok,device=d,param=ph,sensor=ph,site=s\ 1 value=7.0,seq=3i 5"
    )
    with pytest.raises(ValueError, match="fractional"):
        line("reading", tags, {"seq": 3.5}, 5)
    with pytest.raises(ValueError, match="non-finite"):
        line("reading", tags, {"value": float("nan")}, 5)


def test_undeclared_names_are_refused_with_what_is_declared() -> None:
    with pytest.raises(ValueError, match="has no field 'valu'"):
        line(Measurement.READING, {"city": "x"}, {"valu": 1.0}, 0)
    with pytest.raises(ValueError, match=r"has no tag \['town'\]"):
        line(Measurement.READING, {"town": "x"}, {"value": 1.0}, 0)
    with pytest.raises(ValueError, match="'alerts' is not a valid Measurement"):
        line("alerts", {}, {"value": 1.0}, 0)


def test_stored_reading_line_quotes_and_escapes() -> None:
    r = StoredReading("c", "s,1", "d", "t", "temp", 21.5, 'de"g', 10, 7, QartodFlag.SUSPECT)
    assert (
        r.to_line()
        == r'reading,city=c,device=d,param=temp,sensor=t,site=s\,1 value=21.5,unit="de\"g",seq=7i,flag=3i 10'
    )


@pytest.mark.parametrize(
    ("seq", "covered"), [(-1, True), (4, True), (5, False), (7, True), (9, True), (10, False), (12, True)]
)
def test_ack_covers_through_and_ranges(seq: int, covered: bool) -> None:
    ack = AckMessage(device="d", stored_through=4, ranges=((7, 9), (12, 12)))
    assert ack.covers(seq) is covered
