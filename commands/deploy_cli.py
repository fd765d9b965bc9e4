"""``pilotwatch deploy mqtt-credentials --out DIR``: Mosquitto credentials and ACL for a city deployment.

In: the pilot manifest. Out, in DIR:

- ``credentials.yaml`` (mode 0600): the plain password of every device and service user. Kept across runs: a
  device keeps its password, a new device gets a new one, a device gone from the manifest loses its entry.
  Hand each device its own password; never commit this file.
- ``passwd``: Mosquitto's password file, PBKDF2-SHA512 hashes (``$7$``), made by ``mosquitto_passwd -U`` when
  it is installed, else by the same algorithm here (both are tested against a real broker).
- ``acl``: each device may publish only to ``pilotwatch/v1/devices/<its id>/readings`` and ``.../status`` and
  read only its own ``.../ack``; ingest may read every device's readings and status and write every ack.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from pilotwatch.common_cli import common_settings
from pilotwatch.manifest import Manifest
from pilotwatch.wire import TOPIC_ROOT, Channel, ack_topic, readings_topic, status_topic

INGEST_USER = "pilotwatch-ingest"
PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes; the broker reads the count from each line
SALT_BYTES = 12


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """A Mosquitto 2.0 ``$7$`` password hash: PBKDF2-HMAC-SHA512, base64 salt and digest."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def acl_text(manifest: Manifest, service_users: dict[str, str]) -> str:
    lines = [
        "# Mosquitto ACL written by `pilotwatch deploy mqtt-credentials` from the pilot manifest; do not edit.",
        "# No topic rule outside a `user` block: anonymous clients (refused anyway) get nothing.",
        "",
    ]
    if INGEST_USER in service_users:
        devices = f"{TOPIC_ROOT}/devices/+"
        lines += [
            f"user {INGEST_USER}",
            f"topic read {devices}/{Channel.READINGS.value}",
            f"topic read {devices}/{Channel.STATUS.value}",
            f"topic write {devices}/{Channel.ACK.value}",
            "",
        ]
    for city, site, device in manifest.iter_devices():
        lines += [
            f"# {city.id} / {site.id}",
            f"user {device.id}",
            f"topic write {readings_topic(device.id)}",
            f"topic write {status_topic(device.id)}",
            f"topic read {ack_topic(device.id)}",
            "",
        ]
    return "\n".join(lines)


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


def hash_with_mosquitto_passwd(binary: str, users: dict[str, str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "passwd"
        plain.write_text("".join(f"{u}:{p}\n" for u, p in users.items()), encoding="utf-8")
        result = subprocess.run([binary, "-U", str(plain)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ValueError(f"{binary} -U failed: {result.stderr.strip() or result.stdout.strip()}")
        return plain.read_text(encoding="utf-8")


def write_mqtt_credentials(manifest: Manifest, out: Path, *, use_mosquitto_passwd: bool = True) -> dict[str, Any]:
    """Write credentials.yaml, passwd and acl into ``out``; return what was done (for the command's summary)."""
    out.mkdir(parents=True, exist_ok=True)
    cred_path = out / "credentials.yaml"
    existing = _load_existing(cred_path)
    wanted = [INGEST_USER] + [d.id for _, _, d in manifest.iter_devices()]
    users = {name: existing.get(name) or secrets.token_urlsafe(24) for name in wanted}
    created = [n for n in wanted if n not in existing]
    dropped = sorted(set(existing) - set(wanted))
    header = "# Plain MQTT passwords from `pilotwatch deploy mqtt-credentials`. Secret: never commit or share.\n"
    _write_private(cred_path, header + yaml.safe_dump({"users": users}, sort_keys=False), 0o600)
    binary = shutil.which("mosquitto_passwd") if use_mosquitto_passwd else None
    if binary is not None:
        passwd = hash_with_mosquitto_passwd(binary, users)
    else:
        passwd = "".join(f"{u}:{mosquitto_hash(p)}\n" for u, p in users.items())
    # Hashes, not passwords: readable by the broker's own user inside its container.
    _write_private(out / "passwd", passwd, 0o644)
    _write_private(out / "acl", acl_text(manifest, users), 0o644)
    return {"users": len(users), "created": created, "dropped": dropped, "hasher": binary or "pilotwatch (PBKDF2)"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("deploy", help="files a city deployment needs (docker-compose.yml)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    creds = actions.add_parser("mqtt-credentials", help="Mosquitto password file and ACL from the manifest")
    creds.add_argument(
        "--out", type=Path, default=Path("deploy/mosquitto/credentials"), help="folder (default %(default)s)"
    )
    creds.add_argument(
        "--no-mosquitto-passwd",
        action="store_true",
        help="hash in Python even when mosquitto_passwd is installed",
    )
    creds.set_defaults(handler=_mqtt_credentials)


def _mqtt_credentials(args: argparse.Namespace) -> int:
    manifest = common_settings(args).load_manifest()
    done = write_mqtt_credentials(manifest, args.out, use_mosquitto_passwd=not args.no_mosquitto_passwd)
    console = Console()
    console.print(
        f"{args.out}: passwd and acl for {done['users']} users (hashed by {done['hasher']}); "
        f"plain passwords in {args.out / 'credentials.yaml'} (keep it secret)"
    )
    if done["created"]:
        console.print(f"new passwords: {', '.join(done['created'])}")
    if done["dropped"]:
        console.print(f"removed (not in the manifest any more): {', '.join(done['dropped'])}")
    return 0
