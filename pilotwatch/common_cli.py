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
