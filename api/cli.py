"""``pilotwatch api serve`` and ``pilotwatch api keys add|list|remove``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from api.keys import ApiKeyCreate, KeyStore, KeyStoreError
from api.settings import ApiSettings
from pilotwatch.common_cli import common_settings, port
from pilotwatch.manifest import Manifest, Role, load_manifest


def _role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"role must be one of {', '.join(r.value for r in Role)}, got {text!r}"
        ) from None


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("api", help="serve the HTTP API and manage its keys")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    serve = actions.add_parser("serve", help="serve the API with uvicorn (settings from PILOTWATCH_API_*)")
    serve.add_argument("--host", default=None, help="bind address (default PILOTWATCH_API_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=port, default=None, help="port (default PILOTWATCH_API_PORT or 8000)")
    serve.set_defaults(handler=_serve)

    keys = actions.add_parser("keys", help="add, list or remove API keys")
    key_actions = keys.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    add = key_actions.add_parser("add", help="make a key and print it once")
    add.add_argument("--name", required=True, help="who or what holds the key, e.g. bkk-operator-somchai")
    add.add_argument("--role", required=True, type=_role, help=", ".join(r.value for r in Role))
    add.add_argument("--city", action="append", default=[], help="city id the key may read ('*' = all); repeatable")
    add.add_argument("--site", action="append", default=[], help="site id the key may read; repeatable")
    add.add_argument("--keys-file", type=Path, default=None, help="default PILOTWATCH_API_KEYS_FILE")
    add.set_defaults(handler=_keys_add)
    listing = key_actions.add_parser("list", help="list keys (names, roles, scopes; never the keys)")
    listing.add_argument("--keys-file", type=Path, default=None, help="default PILOTWATCH_API_KEYS_FILE")
    listing.set_defaults(handler=_keys_list)
    remove = key_actions.add_parser("remove", help="revoke a key by name")
    remove.add_argument("--name", required=True)
    remove.add_argument("--keys-file", type=Path, default=None, help="default PILOTWATCH_API_KEYS_FILE")
    remove.set_defaults(handler=_keys_remove)


def _settings(args: argparse.Namespace) -> ApiSettings:
    """Flags over ``PILOTWATCH_API_*`` over ``--home`` (its keys file, its local stack's InfluxDB)."""
    return ApiSettings.for_command(
        common_settings(args),
        **{name: getattr(args, name, None) for name in ("host", "port", "keys_file")},
    )


def _manifest(args: argparse.Namespace, settings: ApiSettings) -> Manifest:
    if getattr(args, "manifest", None) or settings.manifest is None:
        return common_settings(args).load_manifest()
    return load_manifest(settings.manifest)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415  (only this command needs the server)

    from api.app import create_app  # noqa: PLC0415

    settings = _settings(args)
    app = create_app(settings, manifest=_manifest(args, settings))
    if not settings.keys_file.exists():
        Console(stderr=True).print(
            f"[yellow]warning:[/] no keys file at {settings.keys_file}; every request but /health gets 401 "
            "until `pilotwatch api keys add` makes one"
        )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


def _keys_add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = KeyStore(settings.keys_file)
    try:
        create = ApiKeyCreate(name=args.name, role=args.role, cities=tuple(args.city), sites=tuple(args.site))
        record, key = store.add(create, _manifest(args, settings))
    except KeyStoreError as exc:
        raise ValueError(str(exc)) from None
    console = Console()
    console.print(
        f"key {record.name!r} ({record.role.value}; cities {list(record.cities)}, sites {list(record.sites)}) "
        f"added to {settings.keys_file}. It is shown only now:",
        highlight=False,
    )
    # The key alone on its own line, unstyled, so it can be copied or piped.
    console.print(key, markup=False, highlight=False, soft_wrap=True)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        records = KeyStore(settings.keys_file).records()
    except KeyStoreError as exc:
        raise ValueError(str(exc)) from None
    table = Table(title=f"API keys in {settings.keys_file}")
    for column in ("name", "role", "cities", "sites", "created"):
        table.add_column(column)
    for r in records:
        table.add_row(r.name, r.role.value, ", ".join(r.cities) or "-", ", ".join(r.sites) or "-", str(r.created))
    Console().print(table)
    return 0


def _keys_remove(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        KeyStore(settings.keys_file).remove(args.name)
    except KeyStoreError as exc:
        raise ValueError(str(exc)) from None
    Console().print(f"key {args.name!r} removed from {settings.keys_file}")
    return 0
