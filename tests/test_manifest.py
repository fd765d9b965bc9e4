"""The pilot manifest: the shipped one is complete, and broken ones fail with errors naming file, path and cause."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pilotwatch.manifest import (
    Manifest,
    ManifestError,
    Parameter,
    SiteKind,
    SiteRole,
    load_manifest,
    parse_manifest,
)

DEFAULT = Path(__file__).resolve().parents[1] / "pilotwatch" / "manifests" / "default.yaml"


@pytest.fixture
def raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT.read_text())
    return copy.deepcopy(data)


def _problems(data: dict[str, Any], tmp_path: Path) -> ManifestError:
    path = tmp_path / "pilot.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert str(path) in str(info.value)
    return info.value


def test_default_manifest_covers_the_six_pilot_cities(manifest: Manifest) -> None:
    assert [c.id for c in manifest.cities] == ["bangkok", "melaka", "semarang", "jakarta", "can-tho", "da-nang"]
    kinds = {c.id: {s.kind for s in c.sites} for c in manifest.cities}
    assert kinds["bangkok"] == {SiteKind.WATER}
    assert kinds["semarang"] == {SiteKind.EFFLUENT}
    assert kinds["can-tho"] == {SiteKind.BIN}
    assert kinds["da-nang"] == {SiteKind.BIN, SiteKind.WATER}
    for city in manifest.cities:
        assert {s.role for s in city.sites} == {SiteRole.INTERVENTION, SiteRole.CONTROL}, city.id


def test_every_limit_cites_its_standard_and_unconfirmed_numbers_stay_marked(manifest: Manifest) -> None:
    assert manifest.limits
    for name, limit_set in manifest.limits.items():
        assert limit_set.citation.startswith("["), name
    # The Bangkok canal class is an assumption in the reference; the manifest must say so.
    assert "assumption" in manifest.limits["th-surface-class4"].parameters[Parameter.DO].note


def test_every_sensor_unit_is_the_canonical_one(manifest: Manifest) -> None:
    for _, _, device in manifest.iter_devices():
        for sensor in device.sensors:
            assert sensor.unit == sensor.param.unit


def test_unknown_key_is_an_error_with_its_path(raw: dict[str, Any], tmp_path: Path) -> None:
    raw["cities"][0]["sites"][0]["devices"][0]["sensors"][1]["valid_rnage"] = [0, 14]
    error = _problems(raw, tmp_path)
    (path, message), *_ = error.problems
    assert path == "cities[0:bangkok].sites[0:bkk-pratunam-pier].devices[0:bkk-pratunam-wq1].sensors[1:ph].valid_rnage"
    assert message.startswith("unknown key")


def test_wrong_unit_names_the_expected_unit(raw: dict[str, Any], tmp_path: Path) -> None:
    device = raw["cities"][1]["sites"][0]["devices"][0]
    device["sensors"] = copy.deepcopy(device["sensors"])  # the YAML anchor shares the list with the control site
    device["sensors"][2]["unit"] = "ppm"
    error = _problems(raw, tmp_path)
    assert error.problems == [
        (
            "cities[1:melaka].sites[0:mlk-kampung-morten].devices[0:mlk-morten-wq1].sensors[2:do]",
            "unit 'ppm' is not the unit of do: use 'mg/L'",
        )
    ]


def test_several_mistakes_are_all_reported(raw: dict[str, Any], tmp_path: Path) -> None:
    site = raw["cities"][2]["sites"][0]
    site["kind"] = "river"
    site["periods"]["baseline"]["end"] = "2026-01-01"  # before its start
    del raw["cities"][3]["sites"][0]["devices"][0]["commissioned"]
    error = _problems(raw, tmp_path)
    by_path = dict(error.problems)
    assert "cities[2:semarang].sites[0:smg-batik-natural].kind" in by_path
    assert "'water', 'effluent' or 'bin'" in by_path["cities[2:semarang].sites[0:smg-batik-natural].kind"]
    assert by_path["cities[2:semarang].sites[0:smg-batik-natural].periods.baseline"] == (
        "end 2026-01-01 must be after start 2026-03-01"
    )
    assert (
        by_path["cities[3:jakarta].sites[0:jkt-kalibaru-shells].devices[0:jkt-kalibaru-bin1].commissioned"]
        == "required key is missing"
    )


def test_cross_references_are_checked(raw: dict[str, Any]) -> None:
    raw["cities"][0]["sites"][0]["limits"] = ["th-surface-class9"]
    with pytest.raises(ManifestError, match="names limit set 'th-surface-class9', which is not under 'limits'"):
        parse_manifest(raw, "x.yaml")


def test_duplicate_device_ids_are_refused(raw: dict[str, Any]) -> None:
    raw["cities"][1]["sites"][1]["devices"][0]["id"] = "bkk-pratunam-wq1"
    with pytest.raises(ManifestError, match="device id 'bkk-pratunam-wq1' appears more than once"):
        parse_manifest(raw, "x.yaml")


def test_bad_timezone_and_version(raw: dict[str, Any]) -> None:
    raw["version"] = 2
    raw["cities"][0]["timezone"] = "Asia/Bangkokk"
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw, "x.yaml")
    messages = dict(info.value.problems)
    assert messages["version"] == "manifest version 2 is not supported; this pilotwatch reads version 1"
    assert messages["cities[0:bangkok].timezone"] == "unknown IANA time zone 'Asia/Bangkokk', e.g. 'Asia/Bangkok'"


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\ncities: [\n  - id: x\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    ((where, message),) = info.value.problems
    assert where.startswith("line ")
    assert message.startswith("not valid YAML")


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read the file"):
        load_manifest(tmp_path / "absent.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ManifestError, match="the manifest must be a mapping, got list"):
        load_manifest(path)


def test_unknown_qc_test_is_an_error_not_a_warning(raw: dict[str, Any]) -> None:
    device = raw["cities"][2]["sites"][0]["devices"][0]
    device["sensors"] = copy.deepcopy(device["sensors"])
    device["sensors"][1]["qc"] = {"qartod": {"gross_range": {"fail_span": [0, 14]}, "spikey": {}}}
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw, "x.yaml")
    assert info.value.problems == [
        (
            "cities[2:semarang].sites[0:smg-batik-natural].devices[0:smg-natural-ef1].sensors[1:ph].qc.qartod.spikey",
            "unknown key (check the spelling; see docs/manifest.md for the allowed keys)",
        )
    ]
