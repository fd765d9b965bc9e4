"""``pilotwatch qc`` (QC of a CSV file, :mod:`analytics.csvqc`) and ``pilotwatch analytics run`` (the live
service, :mod:`analytics.service`).

``register(subparsers)`` adds both to the shared ``pilotwatch`` parser; bad input raises ``ValueError``, which
the shared CLI prints as a clean error with exit status 2.

``pilotwatch analytics run`` evaluates the live stream every ``interval_s`` until Ctrl-C / SIGTERM;
``--once`` makes one pass; ``--since ISO [--until ISO]`` evaluates that window (half-open, UTC unless the
times say otherwise) and stops. Settings: ``PILOTWATCH_ANALYTICS_*`` (:class:`analytics.settings.
AnalyticsSettings`); without them, the local stack of ``--home`` (``pilotwatch stack up``) is used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from analytics.csvqc import run_csv
from pilotwatch.common_cli import common_settings, influx_flags, moment

LONG_FILE_BYTES = 5_000_000
"""Files larger than this show a progress bar (on stderr)."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "qc",
        help="QARTOD QC, anomaly detection and fault/event labels for a CSV file",
        description="Run QC and detection on a logger download or an export (one column per parameter). "
        "'pilotwatch qc tune FILE --time-column T --labels {param}_qual --out CONFIG.yaml' instead learns a "
        "configuration from a technician-labelled file (docs/qc.md).",
    )
    p.add_argument("input", type=Path, metavar="INPUT.csv", help="the file, or 'tune' followed by the labelled file")
    p.add_argument("labelled", type=Path, nargs="?", default=None, help=argparse.SUPPRESS)
    p.add_argument("--time-column", required=True, help="name of the column holding sample times")
    p.add_argument(
        "--out", type=Path, required=True, metavar="OUTPUT", help="results CSV (qc) or the config YAML (qc tune)"
    )
    p.add_argument(
        "--labels",
        default=None,
        metavar="TEMPLATE",
        help="qc tune: label column of each parameter, e.g. '{param}_qual' (labelled: non-empty and not 0/false)",
    )
    p.add_argument("--folds", type=int, default=5, help="qc tune: consecutive blocks for cross-validation in time")
    p.add_argument(
        "--rule",
        choices=("pyhydroqc", "point", "event", "balanced"),
        default="pyhydroqc",
        help="qc tune: the F1 to maximise (balanced: mean of the PyHydroQC-counted and the point-wise F1)",
    )
    p.add_argument("--config", type=Path, default=None, help="QC config (YAML or JSON); default: derived from the data")
    p.add_argument("--save-config", type=Path, default=None, help="write the config that was used (YAML)")
    p.add_argument("--quiet", action="store_true", help="no notes and no progress bar")
    p.set_defaults(handler=run)

    a = subparsers.add_parser("analytics", help="the live QC, anomaly and fault/event service on InfluxDB")
    actions = a.add_subparsers(dest="action", required=True, metavar="ACTION")
    live = actions.add_parser(
        "run", help="evaluate the live stream until Ctrl-C / SIGTERM (settings: PILOTWATCH_ANALYTICS_*)"
    )
    live.add_argument("--once", action="store_true", help="one pass over everything up to now, then stop")
    live.add_argument("--since", type=moment, default=None, metavar="ISO", help="evaluate from this time, then stop")
    live.add_argument("--until", type=moment, default=None, metavar="ISO", help="end of --since's window (default now)")
    live.add_argument("--influx-url")
    live.add_argument("--database")
    live.add_argument("--state-dir", type=Path)
    live.add_argument("--json", action="store_true", help="print each pass's report as one JSON line on stdout")
    live.set_defaults(handler=run_service)


def service_settings(args: argparse.Namespace) -> Any:
    """Flags over ``PILOTWATCH_ANALYTICS_*`` over the local stack of ``--home``."""
    from analytics.settings import AnalyticsSettings  # noqa: PLC0415  # pydantic-settings only for this command

    return AnalyticsSettings.for_command(
        common_settings(args),
        influx=influx_flags(args),
        state_dir=getattr(args, "state_dir", None),
    )


def run_service(args: argparse.Namespace) -> int:
    from analytics.service import AnalyticsService, RunReport  # noqa: PLC0415  # numba only for this command
    from pilotwatch.manifest import load_manifest  # noqa: PLC0415

    if args.until is not None and args.since is None:
        raise ValueError("--until needs --since")
    settings = service_settings(args)
    manifest = load_manifest(settings.manifest)
    err = Console(stderr=True, soft_wrap=True)
    out = Console(soft_wrap=True)

    def show(report: RunReport) -> None:
        if args.json:
            out.print_json(json.dumps(report.summary()))
            return
        s = report.summary()
        err.print(
            f"analytics: {s['points_written']} qc points, flags {s['flags']}, anomalies {s['anomalies']}, "
            f"labels {s['labels']}, late {s['late_points']}, too late {s['too_late']}, "
            f"backfilled {s['backfilled']} ({s['backfill_pending_hours']} h pending)",
            highlight=False,
        )
        if s["unconfigured"]:
            err.print(f"[yellow]not in the manifest, not evaluated:[/] {', '.join(s['unconfigured'])}", highlight=False)

    service = AnalyticsService(
        settings,
        manifest,
        on_outage=lambda event: err.print(event.describe("analytics"), highlight=False),
    )
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if args.since is not None:
            until = args.until if args.until is not None else int(dt.datetime.now(dt.UTC).timestamp() * 1000)
            with service:
                report = service.evaluate(args.since, until, stop)
            show(report)
            if report.stopped_early:
                err.print("analytics: stopped before the window was done; run it again to continue", highlight=False)
                return 1
            return 0
        if args.once:
            with service:
                show(service.step(stop))
            return 0
        err.print(
            f"analytics: InfluxDB {settings.influx.url} db {settings.influx.database}, "
            f"every {settings.interval_s:g} s, late window {settings.late_window_s:g} s, "
            f"reconcile every {settings.reconcile_interval_s:g} s over {settings.reconcile_lookback_s:g} s; "
            f"checkpoint {settings.state_file}",
            highlight=False,
        )
        return service.run_forever(stop, on_pass=show)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    if str(args.input) == "tune" and (args.labelled is not None or not args.input.is_file()):
        return run_tune(args)
    if args.labelled is not None:
        raise ValueError(f"unexpected second file {args.labelled}; did you mean 'pilotwatch qc tune FILE'?")
    if args.labels is not None:
        raise ValueError("--labels is for 'pilotwatch qc tune'")
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


def run_tune(args: argparse.Namespace) -> int:
    """``pilotwatch qc tune INPUT.csv --time-column T --labels '{param}_qual' --out CONFIG.yaml``."""
    from analytics.tune import tune_csv  # noqa: PLC0415  # only this command needs the tuner

    if args.labelled is None:
        raise ValueError("qc tune needs the labelled file: pilotwatch qc tune INPUT.csv --labels '{param}_qual' ...")
    if args.labels is None:
        raise ValueError("qc tune needs --labels, the label column of each parameter, e.g. '{param}_qual'")
    if args.config is not None or args.save_config is not None:
        raise ValueError("qc tune writes its config to --out; --config and --save-config are for 'pilotwatch qc'")
    err = Console(stderr=True, soft_wrap=True)
    config, lines = tune_csv(args.labelled, args.time_column, args.labels, folds=args.folds, rule=args.rule)
    header = "".join(f"# {line}\n" for line in [f"pilotwatch qc tune {args.labelled.name} ({args.rule} F1)", *lines])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)
    args.out.write_text(header + body, encoding="utf-8")
    if not args.quiet:
        for line in lines:
            err.print(f"[dim]tune:[/] {line}", highlight=False)
        err.print(f"wrote the tuned config of {len(config.parameters)} parameter(s) to {args.out}", highlight=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m analytics.cli qc ...``), the same as ``pilotwatch qc`` / ``analytics``."""
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
