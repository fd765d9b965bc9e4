"""Edge test fixtures: a stack of this module's tests alone (their retained statuses and device sessions stay
off the session stack), and an ack responder on it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from commands.stack import LocalStack
from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest
from pilotwatch.settings import StackConfig
from tests.edge.responder import AckResponder

_ids = itertools.count()


@pytest.fixture(scope="module")
def edge_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(StackConfig.with_free_ports(tmp_path_factory.mktemp("edge-stack")))
    local.up()
    yield local
    local.down()


def start_responder(stack: LocalStack, manifest: Manifest) -> AckResponder:
    n = next(_ids)
    influx = InfluxV1(stack.config.influx_url, f"edge{n}")
    influx.create_database()
    return AckResponder(stack.config.host, stack.config.mqtt_port, influx, manifest, f"edge-responder-{n}").start()


@pytest.fixture
def responder(edge_stack: LocalStack, manifest: Manifest) -> Iterator[AckResponder]:
    responder = start_responder(edge_stack, manifest)
    yield responder
    responder.stop()
    responder.influx.drop_database()
    responder.influx.close()


@pytest.fixture
def buffers(tmp_path: Path) -> Path:
    return tmp_path / "buffers"
