"""``pilotwatch evaluate calibrate`` and ``pilotwatch evaluate report``.

``register(subparsers)`` adds them to the shared parser; bad input raises ``ValueError``, which the shared CLI
prints as a clean error with exit status 2. ``calibrate`` ends with the one line scripts parse (see
:meth:`commands.evaluation_calibrate.Calibration.line`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("evaluate", help="did the pilot work? calibration and the evidence pack")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    cal = actions.add_parser(
        "calibrate", help="coverage and false positives of the 95 % intervals on simulated pilots with a known effect"
    )
    cal.add_argument("--runs", type=_positive_int, required=True, help="pairs with the effect (as many without it)")
    cal.add_argument("--seed", type=int, required=True, help="simulation seed; same runs and seed, same figures")
    cal.add_argument("--workers", type=_positive_int, default=None, help="processes (default: all cores)")
    cal.add_argument("--replicates", type=_positive_int, default=999, help="bootstrap replicates per run (999)")
    cal.add_argument("--with-drift", action="store_true", help="also simulate drift and fouling faults")
    cal.set_defaults(handler=run_calibrate)

    rep = actions.add_parser("report", help="write the evidence pack of one city into a folder")
    rep.add_argument("--city", required=True, help="city id from the manifest, e.g. bangkok")
    rep.add_argument("--out", type=Path, required=True, help="folder for the pack (created; must be empty)")
    rep.add_argument("--include-suspect", action="store_true", help="use QC-suspect readings too (default: good only)")
    rep.add_argument("--replicates", type=_positive_int, default=None, help="bootstrap replicates (default 2000)")
    rep.add_argument("--influx-url", default=None, help="InfluxDB URL (default: settings or the local stack)")
    rep.add_argument("--database", default=None, help="InfluxDB database (default: settings)")
    rep.set_defaults(handler=run_report)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def run_calibrate(args: argparse.Namespace) -> int:
    from commands.evaluation_calibrate import CalibrationSetup, calibrate  # noqa: PLC0415 - heavy imports on use only

    err = Console(stderr=True)
    setup = CalibrationSetup(runs=args.runs, seed=args.seed, replicates=args.replicates, with_drift=args.with_drift)
    err.print(
        f"simulating {args.runs} pairs with a {setup.effect:+.0%} effect on {setup.parameter.value} and {args.runs} "
        f"without, {setup.days_per_period} days per period ({setup.city} sites, seed {args.seed})"
    )

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 20) == 0:
            err.print(f"  {done}/{total} runs", highlight=False)

    result = calibrate(setup, workers=args.workers, progress=progress)
    out = Console(file=sys.stdout, soft_wrap=True, highlight=False)
    out.print(
        f"power {result.power:.3f} (intervals excluding zero under the effect) · runtime {result.seconds:.0f} s",
        markup=False,
    )
    out.print(result.line(), markup=False)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from evaluation.report import write_report_from_args  # noqa: PLC0415

    status: int = write_report_from_args(args)
    return status
