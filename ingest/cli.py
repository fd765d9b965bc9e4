"""``pilotwatch ingest run|status|ledger|deadletter``: run ingest and look into its state folder.

Everything but ``run`` reads files only (status, ledger, dead-letter database), so it works with ingest stopped
and never competes with a running one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pilotwatch.common_cli import common_settings
from pilotwatch.wire import Reason

STALE_AFTER_S = 10.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("ingest", help="MQTT → validation → InfluxDB; dead letters and the gap ledger")
    parser.add_argument("--state-dir", default=None, help="ingest's state folder (default <home>/ingest)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    run = actions.add_parser("run", help="run ingest until Ctrl-C / SIGTERM (settings: PILOTWATCH_INGEST_*)")
    run.add_argument("--mqtt-host")
    run.add_argument("--mqtt-port", type=int)
    run.add_argument("--influx-url")
    run.add_argument("--database")
    run.add_argument("--client-id")
    run.add_argument("--share-group")
    run.add_argument("--metrics-port", type=int)
    run.set_defaults(handler=_run)

    status = actions.add_parser("status", help="counters and health of each worker")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_status)

    ledger = actions.add_parser("ledger", help="per device: stored, missing, recovered, buffered on the device")
    ledger.add_argument("--json", action="store_true")
    ledger.set_defaults(handler=_ledger)

    dead = actions.add_parser("deadletter", help="list, show, count or replay dead letters")
    dead_actions = dead.add_subparsers(dest="dead_action", required=True, metavar="ACTION")
    listing = dead_actions.add_parser("list", help="dead letters, oldest first")
    listing.add_argument("--reason", choices=[r.value for r in Reason])
    listing.add_argument("--device")
    listing.add_argument("--pending", action="store_true", help="only those not replayed yet")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_dead_list)
    show = dead_actions.add_parser("show", help="one dead letter with its raw payload")
    show.add_argument("id", type=int)
    show.set_defaults(handler=_dead_show)
    count = dead_actions.add_parser("count", help="how many, by reason")
    count.add_argument("--json", action="store_true")
    count.set_defaults(handler=_dead_count)
    replay = dead_actions.add_parser("replay", help="validate again and write what passes now")
    replay.add_argument("--id", type=int, action="append", dest="ids")
    replay.add_argument("--reason", choices=[r.value for r in Reason])
    replay.set_defaults(handler=_dead_replay)


def state_dir(args: argparse.Namespace) -> Path:
    """``--state-dir``, else ``PILOTWATCH_INGEST_STATE_DIR``, else ``<home>/ingest``."""
    return Path(_settings(args).state_dir)


def _settings(args: argparse.Namespace) -> Any:
    """Flags over ``PILOTWATCH_INGEST_*`` over the local stack of ``--home`` (what `pilotwatch stack up` started)."""
    from ingest.settings import IngestSettings  # noqa: PLC0415

    def flag(name: str) -> Any:
        return getattr(args, name, None)

    return IngestSettings.for_command(
        common_settings(args),
        state_dir=flag("state_dir"),
        mqtt={"host": flag("mqtt_host"), "port": flag("mqtt_port")},
        influx={"url": flag("influx_url"), "database": flag("database")},
        client_id=flag("client_id"),
        share_group=flag("share_group"),
        metrics_port=flag("metrics_port"),
    )


def _run(args: argparse.Namespace) -> int:
    from ingest.service import IngestService  # noqa: PLC0415

    settings = _settings(args)
    console = Console(stderr=True)
    service = IngestService(settings)
    console.print(
        f"ingest {settings.client_id}: MQTT {settings.mqtt.host}:{settings.mqtt.port} ({settings.subscription}) → "
        f"InfluxDB {settings.influx.api.value} {settings.influx.url}; state in {settings.state_dir}"
    )
    code = service.run_forever()
    if service.stats.fatal:
        console.print(f"[bold red]ingest stopped:[/] {service.stats.fatal}")
    return code


def read_status(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.glob("status-*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def _age(ms: int | None) -> str:
    if not ms:
        return "-"
    return f"{max(0.0, time.time() - ms / 1000):.0f} s ago"


def health_summary(folder: Path) -> str:
    """One line for `pilotwatch stack status`: is ingest running, connected, receiving, writing."""
    workers = read_status(folder)
    if not workers:
        return f"ingest: no status in {folder} (not started; `pilotwatch ingest run`)"
    now_ms = time.time() * 1000
    parts = []
    for w in workers:
        fresh = w.get("running") and now_ms - w.get("saved_ms", 0) < STALE_AFTER_S * 1000
        if w.get("fatal"):
            state = f"FATAL: {w['fatal'][:80]}"
        elif w.get("running") and _stale(w, now_ms):
            state = f"STALE: no progress since {_age(int((w.get('last_progress_at') or 0) * 1000))}"
        elif not fresh:
            state = f"not running (last status {_age(w.get('saved_ms'))})"
        elif not w.get("connected"):
            state = "running, NOT connected to MQTT"
        elif w.get("silent"):
            state = "connected but receiving nothing"
        else:
            state = "running"
        parts.append(
            f"{w.get('worker')}: {state}; {w.get('messages', 0)} msgs, {w.get('readings_written', 0)} written, "
            f"{w.get('rejected_total', 0)} rejected, {w.get('spool_pending_batches', 0)} spooled batches, "
            f"lag {w.get('lag_s', 0)} s"
        )
    return "ingest: " + " | ".join(parts)


def _status(args: argparse.Namespace) -> int:
    folder = state_dir(args)
    workers = read_status(folder)
    console = Console()
    if args.json:
        console.print_json(json.dumps(workers))
    else:
        console.print(health_summary(folder), highlight=False)
    now_ms = time.time() * 1000
    healthy = bool(workers) and all(
        w.get("running")
        and not w.get("fatal")
        and not _stale(w, now_ms)
        and now_ms - w.get("saved_ms", 0) < STALE_AFTER_S * 1000
        for w in workers
    )
    return 0 if healthy else 1


def _stale(worker: dict[str, Any], now_ms: float) -> bool:
    """The health check: a thread of the worker has made no progress for its ``stale_after_s``."""
    if worker.get("stale"):
        return True
    last = worker.get("last_progress_at")
    limit = worker.get("stale_after_s")
    return last is not None and limit is not None and now_ms / 1000 - float(last) > float(limit)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ledger(args: argparse.Namespace) -> int:
    from ingest.ledger import read_ledger  # noqa: PLC0415

    folder = state_dir(args)
    rows = read_ledger(folder)
    console = Console()
    if args.json:
        console.print_json(json.dumps([r.to_dict() for r in rows]))
        return 0
    table = Table(title=f"gap ledger ({folder})")
    for column in (
        "device",
        "stored",
        "through",
        "missing",
        "recovered",
        "dups",
        "dead",
        "buffered",
        "oldest unsent",
        "last seen",
        "gaps",
    ):
        table.add_column(column)
    for r in rows:
        gaps = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in r.gaps[:5]) or "-"
        table.add_row(
            r.device,
            str(r.stored),
            str(r.stored_through),
            str(r.missing),
            str(r.recovered),
            str(r.duplicates),
            str(r.dead_lettered),
            "-" if r.buffered_on_device is None else str(r.buffered_on_device),
            _when(r.oldest_unsent_ms),
            _when(r.last_seen_ms),
            gaps,
        )
    console.print(table)
    return 0


def _store(args: argparse.Namespace) -> Any:
    from ingest.deadletter import DeadLetterStore  # noqa: PLC0415

    path = state_dir(args) / "deadletter.sqlite"
    if not path.exists():
        raise ValueError(f"no dead-letter store at {path}; is --state-dir right?")
    return DeadLetterStore(path)


def _dead_list(args: argparse.Namespace) -> int:
    if args.limit <= 0:
        raise ValueError(f"--limit must be positive, got {args.limit}")
    with _store(args) as store:
        letters = store.list(reason=args.reason, device=args.device, pending_only=args.pending, limit=args.limit)
    console = Console()
    if args.json:
        console.print_json(json.dumps([d.summary() for d in letters]))
        return 0
    table = Table(title="dead letters")
    for column in ("id", "received", "kind", "device", "seq", "reason", "detail", "replayed"):
        table.add_column(column)
    for d in letters:
        table.add_row(
            str(d.id),
            _when(d.received_ms),
            d.kind,
            d.device or "-",
            "-" if d.seq is None else str(d.seq),
            d.reason,
            d.detail[:80],
            _when(d.replayed_ms),
        )
    console.print(table)
    return 0


def _dead_show(args: argparse.Namespace) -> int:
    with _store(args) as store:
        letter = store.get(args.id)
    console = Console()
    console.print_json(json.dumps(letter.summary()))
    console.print("payload:", highlight=False)
    console.print(letter.payload.decode(errors="backslashreplace")[:20_000], highlight=False, markup=False)
    return 0


def _dead_count(args: argparse.Namespace) -> int:
    with _store(args) as store:
        counts = store.counts_by_reason()
        pending = store.count(pending_only=True)
        drops = store.drops()
    console = Console()
    if args.json:
        body: dict[str, Any] = {"by_reason": counts, "total": sum(counts.values()), "pending": pending}
        if drops:  # only once the store's bounds have dropped or cut something
            body["dropped"] = {cause: {"entries": n, "bytes": size} for cause, (n, size) in drops.items()}
        console.print_json(json.dumps(body))
        return 0
    for reason, n in counts.items():
        console.print(f"{reason:24} {n}", highlight=False)
    console.print(f"{'total':24} {sum(counts.values())} ({pending} not replayed)", highlight=False)
    for cause, (n, size) in drops.items():
        console.print(f"{'dropped: ' + cause:24} {n} entries, {size} bytes", highlight=False)
    return 0


def _dead_replay(args: argparse.Namespace) -> int:
    from ingest.validate import Validator  # noqa: PLC0415

    settings = _settings(args)
    manifest = common_settings(args).load_manifest() if settings.manifest is None else None
    if manifest is None:
        from pilotwatch.manifest import load_manifest  # noqa: PLC0415

        manifest = load_manifest(settings.manifest)
    validator = Validator(manifest, max_future_s=settings.max_future_s, clock_jump_s=settings.clock_jump_s)
    writer = settings.make_writer()
    try:
        with _store(args) as store:
            report = store.replay(validator, writer, ids=args.ids, reason=args.reason)
    finally:
        writer.close()
    Console().print(
        f"replayed {report.replayed} ({report.lines_written} lines written), still invalid {report.still_invalid}, "
        f"write failed {report.write_failed}",
        highlight=False,
    )
    return 0 if report.write_failed == 0 else 1
