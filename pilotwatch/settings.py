"""Settings shared by every pilotwatch command: where the local stack lives and which manifest is in force.

Each service (edge, ingest, api, analytics) has its own settings class with its own env prefix; this one holds
only what all of them share. Values come from the environment (``PILOTWATCH_*``) and command-line flags, and are
built when a command starts, never at import.
"""

from __future__ import annotations

import json
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from pilotwatch.manifest import Manifest, load_manifest


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PILOTWATCH_", extra="forbid")

    home: Path = Path(".pilotwatch")
    """Folder of the local stack: service data, logs, pid files, edge buffers."""
    manifest: Path | None = None
    """Pilot manifest; empty means the default manifest shipped with pilotwatch."""

    def load_manifest(self) -> Manifest:
        return load_manifest(self.manifest)

    @property
    def stack_root(self) -> Path:
        return self.home / "stack"


STACK_STATE_FILE = "stack.json"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it, so tests never collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class StackConfig:
    """Where the one-machine stack listens and keeps its data (``commands.stack`` runs it)."""

    root: Path
    mqtt_port: int = 1883
    influx_port: int = 8086
    influx_rpc_port: int = 8088
    database: str = "pilotwatch"
    host: str = "127.0.0.1"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.host}:{self.mqtt_port}"

    @property
    def influx_url(self) -> str:
        return f"http://{self.host}:{self.influx_port}"

    @property
    def state_file(self) -> Path:
        return self.root / STACK_STATE_FILE

    def save(self) -> None:
        self.state_file.write_text(json.dumps({k: str(v) for k, v in asdict(self).items()}))

    @classmethod
    def load(cls, root: Path) -> StackConfig:
        """The stack recorded in ``root/stack.json`` by ``pilotwatch stack up``."""
        state = json.loads((root / STACK_STATE_FILE).read_text())
        return cls(
            root=root,
            mqtt_port=int(state["mqtt_port"]),
            influx_port=int(state["influx_port"]),
            influx_rpc_port=int(state["influx_rpc_port"]),
            database=state["database"],
            host=state["host"],
        )

    @classmethod
    def with_free_ports(cls, root: Path, database: str = "pilotwatch") -> StackConfig:
        return cls(
            root=root,
            mqtt_port=free_port(),
            influx_port=free_port(),
            influx_rpc_port=free_port(),
            database=database,
        )
