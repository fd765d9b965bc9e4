"""``pilotwatch deploy mqtt-credentials --out DIR``: Mosquitto credentials and access rules for a city deployment.

In: the pilot manifest. Out, in DIR:

- ``credentials.yaml`` (mode 0600): the plain password of every device and service user. Kept across runs: a
  device keeps its password, a new device gets a new one, a device gone from the manifest loses its entry.
  Hand each device its own password; never commit this file.
- ``dynamic-security.json``: the configuration of Mosquitto's dynamic-security plugin, which
  ``deploy/mosquitto/mosquitto.conf`` loads: each user's PBKDF2-SHA512 password hash and its role.

The rules (everything not listed is refused; ``tests/reliability/test_broker_acl.py`` proves each on a real
broker running this output):

- a device may publish only ``pilotwatch/v1/devices/<its id>/readings`` and ``.../status``, subscribe only to
  its own ``.../ack`` and receive nothing else. Its credentials are bound to its one client id
  (:func:`pilotwatch.wire.device_client_id`), so it cannot take over ingest's or another device's session.
- ingest may subscribe to every device's readings and status, directly or through a shared subscription
  (``$share/<group>/...``), and publish every ack.

Why the plugin and not a password file with an ACL file: Mosquitto 2.0's ACL file never checks subscriptions.
A device could join ingest's shared subscription; the broker then hands it a share of every device's readings,
refuses to deliver them by the read rule, and so discards them. The plugin checks each subscription.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from pilotwatch.common_cli import common_settings
from pilotwatch.manifest import Manifest
from pilotwatch.wire import (
    READINGS_SUBSCRIPTION,
    STATUS_SUBSCRIPTION,
    TOPIC_ROOT,
    Channel,
    ack_topic,
    device_client_id,
    readings_topic,
    status_topic,
)

INGEST_USER = "pilotwatch-ingest"
INGEST_ROLE = "ingest"
DYNSEC_FILE = "dynamic-security.json"
PBKDF2_ITERATIONS = 101  # what Mosquitto 2.0's dynamic-security plugin writes; it reads the count per client
SALT_BYTES = 12
STALE_FILES = ("passwd", "acl")
"""Files earlier versions wrote here; the broker no longer reads them, so they are removed rather than left to
mislead whoever reads the folder."""


def dynsec_password(password: str, salt: bytes | None = None) -> dict[str, Any]:
    """A client's password as the dynamic-security plugin stores it: PBKDF2-HMAC-SHA512, base64 salt and hash."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": PBKDF2_ITERATIONS,
    }


def _acl(kind: str, topic: str) -> dict[str, Any]:
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}


def device_role(device_id: str) -> str:
    return f"device-{device_id}"


def dynsec_config(manifest: Manifest, passwords: dict[str, str]) -> dict[str, Any]:
    """The plugin's whole configuration: default deny for everything, one role per device, one for ingest."""
    devices = f"{TOPIC_ROOT}/devices/+"
    ack_all = f"{devices}/{Channel.ACK.value}"
    ingest_reads = (READINGS_SUBSCRIPTION, STATUS_SUBSCRIPTION)
    roles: list[dict[str, Any]] = [
        {
            "rolename": INGEST_ROLE,
            "textdescription": "ingest: reads every device's readings and status, writes every ack",
            "acls": [
                *(_acl("subscribePattern", topic) for topic in ingest_reads),
                # Workers of one share group split the readings; any group name ingest is configured with.
                *(_acl("subscribePattern", f"$share/+/{topic}") for topic in ingest_reads),
                *(_acl("publishClientReceive", topic) for topic in ingest_reads),
                _acl("publishClientSend", ack_all),
            ],
        }
    ]
    clients: list[dict[str, Any]] = []
    if INGEST_USER in passwords:
        clients.append(
            {
                "username": INGEST_USER,
                "textname": "pilotwatch ingest (any client id: several workers may share the subscription)",
                "roles": [{"rolename": INGEST_ROLE}],
                **dynsec_password(passwords[INGEST_USER]),
            }
        )
    for city, site, device in manifest.iter_devices():
        role = device_role(device.id)
        roles.append(
            {
                "rolename": role,
                "textdescription": f"{city.id} / {site.id}",
                "acls": [
                    _acl("publishClientSend", readings_topic(device.id)),
                    _acl("publishClientSend", status_topic(device.id)),
                    _acl("subscribeLiteral", ack_topic(device.id)),
                    _acl("publishClientReceive", ack_topic(device.id)),
                ],
            }
        )
        clients.append(
            {
                "username": device.id,
                "clientid": device_client_id(device.id),
                "roles": [{"rolename": role}],
                **dynsec_password(passwords[device.id]),
            }
        )
    return {
        # Everything a role does not grant is refused, subscriptions included.
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


def _load_existing(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    users = data.get("users", {}) if isinstance(data, dict) else {}
    if not isinstance(users, dict) or not all(isinstance(v, str) for v in users.values()):
        raise ValueError(f"{path}: expected 'users: {{name: password}}'; move it away to start afresh")
    return {str(k): v for k, v in users.items()}


def _write_private(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    tmp.chmod(mode)  # os.open's mode is filtered by the umask; the file must end with exactly this one
    tmp.replace(path)


def write_mqtt_credentials(manifest: Manifest, out: Path) -> dict[str, Any]:
    """Write credentials.yaml and dynamic-security.json into ``out``; return what was done (for the summary)."""
    out.mkdir(parents=True, exist_ok=True)
    cred_path = out / "credentials.yaml"
    existing = _load_existing(cred_path)
    wanted = [INGEST_USER] + [d.id for _, _, d in manifest.iter_devices()]
    users = {name: existing.get(name) or secrets.token_urlsafe(24) for name in wanted}
    created = [n for n in wanted if n not in existing]
    dropped = sorted(set(existing) - set(wanted))
    header = "# Plain MQTT passwords from `pilotwatch deploy mqtt-credentials`. Secret: never commit or share.\n"
    _write_private(cred_path, header + yaml.safe_dump({"users": users}, sort_keys=False), 0o600)
    # Hashes, not passwords: readable by the broker's own user inside its container.
    _write_private(out / DYNSEC_FILE, json.dumps(dynsec_config(manifest, users), indent=2) + "\n", 0o644)
    removed = []
    for name in STALE_FILES:
        if (out / name).exists():
            (out / name).unlink()
            removed.append(name)
    return {"users": len(users), "created": created, "dropped": dropped, "removed_files": removed}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("deploy", help="files a city deployment needs (docker-compose.yml)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    creds = actions.add_parser("mqtt-credentials", help="Mosquitto users and access rules from the manifest")
    creds.add_argument(
        "--out", type=Path, default=Path("deploy/mosquitto/credentials"), help="folder (default %(default)s)"
    )
    creds.set_defaults(handler=_mqtt_credentials)


def _mqtt_credentials(args: argparse.Namespace) -> int:
    manifest = common_settings(args).load_manifest()
    done = write_mqtt_credentials(manifest, args.out)
    console = Console()
    console.print(
        f"{args.out}: {DYNSEC_FILE} for {done['users']} users; "
        f"plain passwords in {args.out / 'credentials.yaml'} (keep it secret)"
    )
    if done["created"]:
        console.print(f"new passwords: {', '.join(done['created'])}")
    if done["removed_files"]:
        console.print(f"removed files the broker no longer reads: {', '.join(done['removed_files'])}")
    if done["dropped"]:
        console.print(f"removed (not in the manifest any more): {', '.join(done['dropped'])}")
    return 0
