"""``pilotwatch alerts notify run|test|deliveries|deadletter``: run the notifier and look into its database.

``test`` sends one test message to every address of a role in a city and prints each outcome (exit 1 if any
failed); ``deliveries`` and ``deadletter list`` only read the notifier's database, so they work beside a running
notifier. Settings: ``PILOTWATCH_NOTIFY_*`` (docs/alerts.md, "Notifications"); the flags below override the paths.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import threading
from typing import Any

from rich.console import Console
from rich.table import Table

from pilotwatch.common_cli import common_settings, port
from pilotwatch.manifest import Role


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("notify", help="deliver alert transitions: e-mail, webhook, MQTT; escalation")
    parser.add_argument("--alerts-db", default=None, help="the alert engine's database (PILOTWATCH_NOTIFY_ALERTS_DB)")
    parser.add_argument("--state-db", default=None, help="the notifier's database (PILOTWATCH_NOTIFY_STATE_DB)")
    parser.add_argument("--recipients", default=None, help="recipients YAML (PILOTWATCH_NOTIFY_RECIPIENTS_FILE)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    run = actions.add_parser("run", help="deliver until Ctrl-C / SIGTERM")
    run.add_argument("--metrics-port", type=port, default=None)
    run.set_defaults(handler=_run)

    test = actions.add_parser("test", help="send a test message through every channel of a role in a city")
    test.add_argument("--city", required=True)
    test.add_argument("--role", required=True, choices=[r.value for r in Role])
    test.set_defaults(handler=_test)

    deliveries = actions.add_parser("deliveries", help="the deliveries of one alert: channel, recipient, status")
    deliveries.add_argument("alert_id")
    deliveries.add_argument("--json", action="store_true")
    deliveries.set_defaults(handler=_deliveries)

    dead = actions.add_parser("deadletter", help="list dead letters or send one again")
    dead_actions = dead.add_subparsers(dest="dead_action", required=True, metavar="ACTION")
    listing = dead_actions.add_parser("list", help="dead letters with their last error")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_dead_list)
    retry = dead_actions.add_parser("retry", help="queue a dead letter again (after fixing its cause)")
    retry.add_argument("message_id", type=int)
    retry.set_defaults(handler=_dead_retry)


def settings_from_args(args: argparse.Namespace) -> Any:
    from notify.settings import NotifySettings  # noqa: PLC0415

    def flag(name: str) -> Any:
        return getattr(args, name, None)

    return NotifySettings.for_command(
        common_settings(args),
        alerts_db=flag("alerts_db"),
        state_db=flag("state_db"),
        recipients_file=flag("recipients"),
        metrics_port=flag("metrics_port"),
    )


def _run(args: argparse.Namespace) -> int:
    from notify.service import Notifier, serve_metrics  # noqa: PLC0415

    settings = settings_from_args(args)
    notifier = Notifier.from_settings(settings)
    server = serve_metrics(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    Console(stderr=True).print(
        f"notify: outbox {settings.alerts_db} → {', '.join(c.value for c in notifier.channels) or 'no channels'};"
        f" state in {settings.state_db}"
    )
    try:
        notifier.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        notifier.close()
        if server is not None:
            server.shutdown()
            server.server_close()
    return 0


def _test(args: argparse.Namespace) -> int:
    from notify.service import Notifier  # noqa: PLC0415
    from notify.store import Outcome  # noqa: PLC0415

    notifier = Notifier.from_settings(settings_from_args(args))
    try:
        results = notifier.send_test(args.city, Role(args.role))
    finally:
        notifier.close()
    console = Console()
    table = Table("channel", "recipient", "outcome", "error")
    for address, result in results:
        table.add_row(address.channel.value, address.recipient, result.outcome.value, result.error or "-")
    console.print(table)
    return 0 if all(r.outcome is Outcome.SENT for _, r in results) else 1


def _state_conn(args: argparse.Namespace) -> Any:
    from notify.store import NotifyStore  # noqa: PLC0415

    return NotifyStore(settings_from_args(args).state_db)


def _deliveries(args: argparse.Namespace) -> int:
    from notify.store import deliveries_for_alert  # noqa: PLC0415

    store = _state_conn(args)
    try:
        rows = deliveries_for_alert(store.conn, args.alert_id)
    finally:
        store.close()
    if args.json:
        Console().print_json(json.dumps([_as_dict(r) for r in rows]))
        return 0
    table = Table("transition", "reason", "channel", "recipient", "status", "attempts", "last error")
    for r in rows:
        reason = r.reason if r.step == 0 else f"{r.reason} {r.step}"
        table.add_row(
            str(r.transition_id), reason, r.channel, r.recipient, r.status, str(r.attempts), r.last_error or "-"
        )
    Console().print(table)
    return 0


def _as_dict(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__slots__}


def _dead_list(args: argparse.Namespace) -> int:
    store = _state_conn(args)
    try:
        rows = store.conn.execute(
            "SELECT id, channel, recipient, kind, attempts, created_ms, last_error FROM notify_messages"
            " WHERE status = 'dead' ORDER BY id"
        ).fetchall()
    finally:
        store.close()
    if args.json:
        keys = ("id", "channel", "recipient", "kind", "attempts", "created_ms", "last_error")
        Console().print_json(json.dumps([dict(zip(keys, r, strict=True)) for r in rows]))
        return 0
    table = Table("id", "channel", "recipient", "kind", "attempts", "created", "last error")
    for r in rows:
        created = dt.datetime.fromtimestamp(r[5] / 1000, dt.UTC).isoformat(timespec="seconds")
        table.add_row(str(r[0]), r[1], r[2], r[3], str(r[4]), created, r[6])
    Console().print(table)
    return 0


def _dead_retry(args: argparse.Namespace) -> int:
    from notify.service import now_ms  # noqa: PLC0415

    store = _state_conn(args)
    try:
        done = store.requeue_dead(args.message_id, now_ms())
    finally:
        store.close()
    if not done:
        raise ValueError(f"message {args.message_id} is not a dead letter")
    Console().print(f"message {args.message_id} queued again; a running notifier sends it on its next cycle")
    return 0
