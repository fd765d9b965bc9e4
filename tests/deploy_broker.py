"""A real Mosquitto running the city deployment's broker configuration, for tests.

``deploy/mosquitto/mosquitto.conf`` is used as shipped, with only what must differ outside the container
rewritten: the ports (free loopback ports), the folders (a temp folder), the dynamic-security plugin's path (the
host's, from Debian's ``mosquitto`` package) and the log (a file). The users and rules are whatever
``pilotwatch deploy mqtt-credentials`` generated, and TLS uses a throw-away certificate made here.
"""

from __future__ import annotations

import getpass
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from commands.stack import find_binary
from pilotwatch.settings import free_port

REPO = Path(__file__).resolve().parents[1]
DEPLOY_CONF = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
CONTAINER_PLUGIN = "/usr/lib/mosquitto_dynamic_security.so"
HOST_PLUGIN_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib")


def host_dynsec_plugin() -> str:
    for folder in HOST_PLUGIN_DIRS:
        candidate = Path(folder) / "mosquitto_dynamic_security.so"
        if candidate.exists():
            return str(candidate)
    pytest.fail("mosquitto_dynamic_security.so not found; Debian's mosquitto package ships it (scripts/bootstrap.sh)")


def make_tls_files(certs: Path) -> Path:
    """A self-signed certificate for 127.0.0.1, doubling as its own CA."""
    certs.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(certs / "server.key"), "-out", str(certs / "server.crt"), "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    (certs / "ca.crt").write_bytes((certs / "server.crt").read_bytes())
    return certs


class DeployBroker:
    """Mosquitto with the deploy configuration; ``restart`` keeps its persistence folder (and so its queues)."""

    def __init__(self, root: Path, credentials: Path, certs: Path) -> None:
        self.root = root
        self.plain_port = free_port()
        self.tls_port = free_port()
        self.ca = certs / "ca.crt"
        conf = DEPLOY_CONF.read_text()
        replacements = {
            "listener 1883\n": f"listener {self.plain_port} 127.0.0.1\n",
            "listener 8883\n": f"listener {self.tls_port} 127.0.0.1\n",
            CONTAINER_PLUGIN: host_dynsec_plugin(),
            "/mosquitto/credentials/": f"{credentials}/",
            "/mosquitto/certs/": f"{certs}/",
            "/mosquitto/data/": f"{root}/",
            "log_dest stdout": f"log_dest file {root}/mosquitto.log",
        }
        for old, new in replacements.items():
            assert old in conf, f"deploy/mosquitto/mosquitto.conf no longer has {old!r}"
            conf = conf.replace(old, new)
        (root / "mosquitto.conf").write_text(conf + f"user {getpass.getuser()}\n")
        self.log = root / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with (self.root / "stdout").open("ab") as out:
            self.proc = subprocess.Popen(
                [find_binary("mosquitto"), "-c", str(self.root / "mosquitto.conf")], stdout=out, stderr=out
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.tls_port), timeout=0.2).close()
                socket.create_connection(("127.0.0.1", self.plain_port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"mosquitto did not start with the deploy config: {(self.root / 'stdout').read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class Client:
    """A paho client that records what it receives, what the broker granted and why it was disconnected."""

    def __init__(
        self,
        user: str,
        password: str,
        port: int,
        *,
        client_id: str,
        tls_ca: Path | None = None,
        protocol: MQTTProtocolVersion = mqtt.MQTTv311,
        clean_session: bool = True,
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.connect_failure: str | None = None
        self.disconnects: list[str] = []
        self.granted: dict[int, list[int]] = {}
        self.got = threading.Condition()
        # MQTT 5 has no clean_session flag (its clean start is given at connect); 3.1.1 takes it here.
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            clean_session=None if protocol == mqtt.MQTTv5 else clean_session,
        )
        self.client.username_pw_set(user, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(10), "no CONNACK"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connect_failure = str(reason) if reason.is_failure else None
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self.got:
            self.disconnects.append(str(reason))
            self.got.notify_all()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.got:
            self.messages.append((message.topic, message.payload))
            self.got.notify_all()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        with self.got:
            self.granted[mid] = [r.value for r in reasons]
            self.got.notify_all()

    def subscribe(self, topic: str) -> list[int]:
        """The broker's answer: ``[1]`` granted at QoS 1, ``[128]`` (3.1.1) or ``[135]`` (MQTT 5) refused."""
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        with self.got:
            assert self.got.wait_for(lambda: mid in self.granted, 10), f"no SUBACK for {topic}"
            return self.granted[mid]

    def wait_for(self, payload: bytes) -> None:
        with self.got:
            assert self.got.wait_for(lambda: any(p == payload for _, p in self.messages), 10), self.messages

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connack(
    user: str | None, password: str | None, port: int, tls_ca: Path | None = None, *, client_id: str | None = None
) -> Any:
    """The broker's CONNACK reason for one login. Driven by hand, without paho's network thread, because a
    refused client under ``loop_start`` keeps reconnecting and leaves its wake-up socket pair open."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id or f"{user or 'anon'}-login", protocol=mqtt.MQTTv311
    )
    if user is not None:
        client.username_pw_set(user, password)
    if tls_ca is not None:
        client.tls_set(ca_certs=str(tls_ca))
    result: list[Any] = []

    def on_connect(c: Any, u: Any, f: Any, reason: Any, p: Any) -> None:
        result.append(reason)

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    deadline = time.monotonic() + 10
    while not result and time.monotonic() < deadline:
        client.loop(0.05)
    client.disconnect()
    sock = client.socket()
    if sock is not None:
        sock.close()
    assert result, "no CONNACK"
    return result[0]
