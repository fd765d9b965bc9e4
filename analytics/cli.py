"""The ``pilotwatch qc`` subcommand: QC and anomaly detection on a CSV file (see :mod:`analytics.csvqc`).

``register(subparsers)`` adds the subcommand to the shared ``pilotwatch`` parser; bad input raises
``ValueError``, which the shared CLI prints as a clean error with exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from analytics.csvqc import run_csv

LONG_FILE_BYTES = 5_000_000
"""Files larger than this show a progress bar (on stderr)."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "qc",
        help="QARTOD QC, anomaly detection and fault/event labels for a CSV file",
        description="Run QC and detection on a logger download or an export (one column per parameter).",
    )
    p.add_argument("input", type=Path, metavar="INPUT.csv")
    p.add_argument("--time-column", required=True, help="name of the column holding sample times")
    p.add_argument("--out", type=Path, required=True, metavar="OUTPUT.csv", help="where to write the results")
    p.add_argument("--config", type=Path, default=None, help="QC config (YAML or JSON); default: derived from the data")
    p.add_argument("--save-config", type=Path, default=None, help="write the config that was used (YAML)")
    p.add_argument("--quiet", action="store_true", help="no notes and no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    err = Console(stderr=True, soft_wrap=True)
    show_progress = not args.quiet and args.input.is_file() and args.input.stat().st_size > LONG_FILE_BYTES
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not show_progress,
        transient=True,
    ) as bar:
        task = bar.add_task("reading", total=None)

        def progress(name: str, done: int, total: int) -> None:
            bar.update(task, description=f"QC {name}", completed=done, total=total)

        config, notes, out = run_csv(args.input, args.time_column, args.out, args.config, progress)
    if args.save_config is not None:
        args.save_config.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    if not args.quiet:
        for note in notes:
            err.print(f"[dim]note:[/] {note}", highlight=False)
        err.print(f"wrote {len(out)} rows × {len(config.parameters)} parameter(s) to {args.out}", highlight=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m analytics.cli qc ...``), the same as ``pilotwatch qc``."""
    parser = argparse.ArgumentParser(prog="pilotwatch")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ValueError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
