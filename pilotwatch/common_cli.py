"""Helpers every command module uses to turn global flags into settings, so each flag is parsed in one place."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from pilotwatch.settings import CommonSettings


def common_settings(args: argparse.Namespace) -> CommonSettings:
    overrides: dict[str, Path] = {}
    if getattr(args, "home", None):
        overrides["home"] = Path(args.home)
    if getattr(args, "manifest", None):
        overrides["manifest"] = Path(args.manifest)
    return CommonSettings(**overrides)


def influx_flags(args: argparse.Namespace) -> dict[str, str | None]:
    """``--influx-url`` and ``--database`` as the ``influx`` sub-model's values (None where not given)."""
    return {"url": getattr(args, "influx_url", None), "database": getattr(args, "database", None)}


def port(text: str) -> int:
    """argparse type for a TCP port, with an error that says what is allowed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a whole number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535, got {value}")
    return value


def moment(text: str) -> int:
    """argparse type: an ISO 8601 time (UTC when no offset is given) → epoch ms."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time like 2026-05-01T00:00Z, got {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)
