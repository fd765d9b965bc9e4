"""Helpers every command module uses to turn global flags into settings, so each flag is parsed in one place."""

from __future__ import annotations

import argparse
from pathlib import Path

from pilotwatch.settings import CommonSettings


def common_settings(args: argparse.Namespace) -> CommonSettings:
    overrides: dict[str, Path] = {}
    if getattr(args, "home", None):
        overrides["home"] = Path(args.home)
    if getattr(args, "manifest", None):
        overrides["manifest"] = Path(args.manifest)
    return CommonSettings(**overrides)


def port(text: str) -> int:
    """argparse type for a TCP port, with an error that says what is allowed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a whole number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535, got {value}")
    return value
