"""The local stack starts real services, answers, survives a restart of one service and stops cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from commands.stack import LocalStack, StackError, find_binary, load_stack
from pilotwatch.influx import InfluxV1
from pilotwatch.schema import StoredReading
from pilotwatch.settings import StackConfig


def test_session_stack_answers(stack: LocalStack) -> None:
    status = stack.status()
    assert status["mosquitto"]["answers"] is True
    assert status["influxd"]["answers"] is True


def test_write_and_read_back_through_v1_api(influx: InfluxV1) -> None:
    reading = StoredReading(
        "bangkok", "bkk-pratunam-pier", "bkk-pratunam-wq1", "do", "do", 4.0, "mg/L", 1_790_000_000_000, 7
    )
    assert influx.write_lines([reading.to_line()]).status_code == 204
    # The same point written again overwrites: identity is (measurement, tags, time).
    assert influx.write_lines([reading.to_line()]).status_code == 204
    rows = influx.query("SELECT value, unit, seq FROM reading")
    assert rows == [
        {
            "time": 1_790_000_000_000,
            "value": 4.0,
            "unit": "mg/L",
            "seq": 7,
        }
    ]
    # A float that happens to be whole is still stored as float: the field type never flips.
    assert "value=4.0" in reading.to_line()


def test_restart_of_one_service_keeps_data(private_stack: LocalStack) -> None:
    line = StoredReading("c", "s", "d-1", "ph", "ph", 7.1, "pH", 1_790_000_000_000, 1).to_line()
    with InfluxV1(private_stack.config.influx_url, private_stack.config.database) as client:
        assert client.write_lines([line]).status_code == 204
        private_stack.stop_service("influxd")
        assert private_stack.status()["influxd"]["answers"] is False
        private_stack.start_service("influxd")
        assert client.count() == 1


def test_up_again_reuses_running_services_and_down_stops_them(tmp_path: Path) -> None:
    config = StackConfig.with_free_ports(tmp_path)
    first = LocalStack(config)
    first.up()
    pids = {name: info["pid"] for name, info in first.status().items()}
    again = load_stack(tmp_path)
    again.up()
    assert {name: info["pid"] for name, info in again.status().items()} == pids
    # The processes are children of `first`, which reaps them; `again` sees them gone through the pid files.
    assert sorted(first.down()) == ["influxd", "mosquitto"]
    assert all(not info["running"] for info in again.status().values())


def test_missing_binary_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("commands.stack.SEARCH_PATH", ())
    with pytest.raises(StackError, match="apt-get install mosquitto"):
        find_binary("mosquitto")
