"""Settings every service shares: the order of the sources, the connection sub-models, refused names."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from analytics.settings import AnalyticsSettings
from ingest.settings import IngestSettings
from pilotwatch.settings import CommonSettings, InfluxApi, StackConfig


@pytest.fixture
def home(tmp_path: Path) -> CommonSettings:
    root = tmp_path / "home" / "stack"
    root.mkdir(parents=True)
    StackConfig(root=root, mqtt_port=11883, influx_port=18086, database="stackdb").save()
    return CommonSettings(home=tmp_path / "home")


def test_flags_beat_the_environment_which_beats_the_local_stack(
    home: CommonSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = IngestSettings.for_command(home, influx={"url": None, "database": None}, mqtt={"port": None})
    assert (s.influx.url, s.influx.database, s.mqtt.port) == ("http://127.0.0.1:18086", "stackdb", 11883)
    assert s.state_dir == home.home / "ingest"

    monkeypatch.setenv("PILOTWATCH_INGEST_INFLUX__DATABASE", "envdb")
    monkeypatch.setenv("PILOTWATCH_INGEST_MQTT__PORT", "21883")
    s = IngestSettings.for_command(home)
    # the environment wins field by field: the stack still gives the url
    assert (s.influx.url, s.influx.database, s.mqtt.port) == ("http://127.0.0.1:18086", "envdb", 21883)

    s = IngestSettings.for_command(home, influx={"database": "flagdb"}, state_dir=home.home / "x")
    assert (s.influx.database, s.mqtt.port, s.state_dir) == ("flagdb", 21883, home.home / "x")


def test_without_a_local_stack_the_defaults_apply(tmp_path: Path) -> None:
    s = AnalyticsSettings.for_command(CommonSettings(home=tmp_path))
    assert (s.influx.url, s.influx.database, s.state_dir) == (
        "http://127.0.0.1:8086",
        "pilotwatch",
        tmp_path / "analytics",
    )


def test_a_misspelt_or_renamed_variable_is_refused_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOTWATCH_ANALYTICS_INFLUX_URL", "http://influxdb:8086")  # the flat name of earlier versions
    with pytest.raises(ValidationError, match=r"unknown setting.*PILOTWATCH_ANALYTICS_INFLUX_URL.*INFLUX__URL"):
        AnalyticsSettings()


def test_the_influx_sub_model_refuses_what_cannot_work() -> None:
    with pytest.raises(ValidationError, match="influx api v2 needs token, org, bucket"):
        IngestSettings(influx={"api": InfluxApi.V2})
    with pytest.raises(ValidationError, match=r"token .* or username/password .*, not both"):
        AnalyticsSettings(influx={"token": "a1b2c3d4e5f6", "username": "u"})
    with pytest.raises(ValidationError, match="influx password is a placeholder"):
        AnalyticsSettings(influx={"username": "u", "password": "changeme"})
