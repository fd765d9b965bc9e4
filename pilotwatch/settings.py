"""Settings shared by every pilotwatch command: where the local stack lives and which manifest is in force.

Each service (edge, ingest, api, analytics) has its own settings class with its own env prefix; this one holds
only what all of them share. Values come from the environment (``PILOTWATCH_*``) and command-line flags, and are
built when a command starts, never at import.
"""

from __future__ import annotations

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
