"""Fixtures shared by all tests: a real Mosquitto + InfluxDB stack on free loopback ports in a temp folder.

The stack is started through :mod:`pilotwatch.stack`, the same code as ``pilotwatch stack up``. One stack serves
the whole session; each test that writes gets a database of its own so tests never see each other's points.
Tests that stop or kill a service use ``private_stack`` instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest, load_manifest
from pilotwatch.stack import LocalStack, StackConfig

SHARED = Path(__file__).resolve().parents[2] / "shared"
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
