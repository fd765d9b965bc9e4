"""Fixtures shared by all tests: a real Mosquitto + InfluxDB stack on free loopback ports in a temp folder.

The stack is started through :mod:`commands.stack`, the same code as ``pilotwatch stack up``. One stack serves
the whole session; each test that writes gets a database of its own so tests never see each other's points.
Tests that stop or kill a service use ``private_stack`` instead.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from commands.stack import LocalStack
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest, load_manifest, parse_manifest
from pilotwatch.settings import StackConfig

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_MANIFEST = Path(__file__).resolve().parents[1] / "pilotwatch" / "manifests" / "default.yaml"
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(StackConfig.with_free_ports(tmp_path_factory.mktemp("stack")))
    local.up()
    yield local
    local.down()


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[LocalStack]:
    """A stack of this test alone, for tests that stop, kill or restart a service."""
    local = LocalStack(StackConfig.with_free_ports(tmp_path / "stack"))
    local.up()
    yield local
    local.down()


@pytest.fixture
def influx(stack: LocalStack, request: pytest.FixtureRequest) -> Iterator[InfluxV1]:
    """A fresh, empty database on the session stack, dropped after the test."""
    name = f"t{next(_db_counter)}_{request.node.name[:40]}".replace("[", "_").replace("]", "_").replace("-", "_")
    client = InfluxV1(stack.config.influx_url, name)
    client.create_database()
    yield client
    client.drop_database()
    client.close()


@pytest.fixture(scope="session")
def manifest() -> Manifest:
    return load_manifest()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the shared folder is missing at {SHARED}; CI places it beside the clone")
    return SHARED


@pytest.fixture(scope="session")
def fault_free_manifest() -> Manifest:
    """The default manifest with random sensor faults off, so every sampled value is a reading ingest accepts."""
    raw: dict[str, Any] = copy.deepcopy(yaml.safe_load(DEFAULT_MANIFEST.read_text()))
    for city in raw["cities"]:
        for site in city["sites"]:
            site["simulation"] = {**site.get("simulation", {}), "fault_rate_per_week": 0.0}
    return parse_manifest(raw, "default.yaml without random faults")
