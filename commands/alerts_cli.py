"""``pilotwatch alerts run`` (the live engine) and ``pilotwatch alerts backtest`` (rules over history or a
simulated fleet, nothing sent).

``backtest --simulate --days D --seed S`` ends with one line a script can check::

    backtest: events N caught M (recall R) · false alerts F (per week W) · alerts on sensor faults K · median delay D s
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import threading
from pathlib import Path
from typing import Any

from rich.console import Console

from notify.cli import register as register_notify
from pilotwatch.common_cli import common_settings, influx_flags, moment


def register(subparsers: Any) -> None:
    a = subparsers.add_parser("alerts", help="the alert engine and its notifier: run, backtest, notify")
    actions = a.add_subparsers(dest="action", required=True, metavar="ACTION")
    live = actions.add_parser("run", help="decide and store alerts until Ctrl-C / SIGTERM (PILOTWATCH_ALERTS_*)")
    live.add_argument("--once", action="store_true", help="one pass, then stop")
    live.add_argument("--influx-url")
    live.add_argument("--database")
    live.add_argument("--state-dir", type=Path)
    live.add_argument("--json", action="store_true", help="each pass's report as one JSON line on stdout")
    live.set_defaults(handler=run_service)

    b = actions.add_parser("backtest", help="replay the rules over history or a simulated fleet; sends nothing")
    b.add_argument("--simulate", action="store_true", help="the manifest's simulated fleet with its ground truth")
    b.add_argument("--days", type=float, default=14.0, help="simulated days (with --simulate)")
    b.add_argument("--seed", type=int, default=11, help="simulation seed (with --simulate)")
    b.add_argument("--start", type=moment, default=None, metavar="ISO", help="start (default: first baseline day)")
    b.add_argument("--since", type=moment, default=None, metavar="ISO", help="history: from this time")
    b.add_argument("--until", type=moment, default=None, metavar="ISO", help="history: to this time (default now)")
    b.add_argument("--influx-url")
    b.add_argument("--database")
    b.set_defaults(handler=run_backtest)

    # The notifier's commands hang under `alerts`: `pilotwatch alerts notify run|test|deliveries|deadletter`.
    register_notify(actions)


def service_settings(args: argparse.Namespace) -> Any:
    """Flags over ``PILOTWATCH_ALERTS_*`` over the local stack of ``--home``."""
    from alerts.settings import AlertSettings  # noqa: PLC0415

    return AlertSettings.for_command(
        common_settings(args),
        influx=influx_flags(args),
        state_dir=getattr(args, "state_dir", None),
    )


def run_service(args: argparse.Namespace) -> int:
    from alerts.engine import PassReport  # noqa: PLC0415
    from alerts.service import AlertService  # noqa: PLC0415
    from pilotwatch.manifest import load_manifest  # noqa: PLC0415

    settings = service_settings(args)
    manifest = load_manifest(settings.manifest)
    err = Console(stderr=True, soft_wrap=True)
    out = Console(soft_wrap=True)

    def show(report: PassReport) -> None:
        summary = {
            "points": report.points,
            "fired": len(report.fired),
            "resolved": len(report.resolved),
            "duplicates": report.duplicates,
            "suppressed_by_qc": report.suppressed,
            "silenced": report.silenced,
        }
        if args.json:
            out.print_json(json.dumps(summary))
        else:
            err.print(f"alerts: {summary}", highlight=False)

    service = AlertService(
        settings,
        manifest,
        on_outage=lambda event: err.print(event.describe("alerts"), highlight=False),
    )
    if args.once:
        with service:
            show(service.step())
        return 0
    err.print(f"alerts: InfluxDB {settings.influx.url} db {settings.influx.database}; store {settings.store_path}")
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        return service.run_forever(stop, on_pass=show)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_backtest(args: argparse.Namespace) -> int:
    from alerts.backtest import backtest_history  # noqa: PLC0415  # numba only here
    from commands.alert_backtest import backtest_simulated  # noqa: PLC0415
    from pilotwatch.manifest import load_manifest  # noqa: PLC0415

    common = common_settings(args)
    manifest = load_manifest(common.manifest)
    err = Console(stderr=True, soft_wrap=True)
    if args.simulate == (args.since is not None):
        raise ValueError("give either --simulate (a simulated fleet) or --since (stored history), not both or neither")
    if args.simulate:
        score = backtest_simulated(
            manifest, args.days, args.seed, start_ms=args.start, progress=lambda s: err.print(s, highlight=False)
        )
    else:
        settings = service_settings(args)
        until = args.until if args.until is not None else int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        with settings.influx.client() as client:
            score = backtest_history(manifest, client, args.since, until)
    for text in score.table():
        print(text)  # noqa: T201  # the report is the command's output
    print(f"readings kept from limit and pollution rules by the QC gate: {score.suppressed:,}")  # noqa: T201
    if score.has_truth:
        print(f"pollution alerts on rain (an environmental event, not pollution): {score.rain_alerts}")  # noqa: T201
        print(  # noqa: T201
            f"pollution events caught by a pollution alert alone: {score.caught_by_pollution} of {score.events}; "
            "an event counts as caught when its site's pollution alert fires during it or a limit alert fires "
            "because of it"
        )
        print(score.final_line())  # noqa: T201
    return 0
