"""The city deployment, checked without Docker: docker-compose.yml's structure against the repository, and the
Mosquitto configuration, credentials and ACL it mounts run by a real Mosquitto broker."""

from __future__ import annotations

import base64
import getpass
import hashlib
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from analytics.settings import AnalyticsSettings
from api.settings import ApiSettings
from commands.cli import build_parser
from commands.deploy_cli import INGEST_USER, mosquitto_hash, write_mqtt_credentials
from commands.stack import find_binary
from edge.settings import EdgeSettings
from firmware_sim.agents import simulated_agent
from firmware_sim.fleet import SimulatedFleet
from ingest.settings import IngestSettings
from pilotwatch.manifest import Manifest
from pilotwatch.settings import ServiceSettings, free_port
from pilotwatch.wire import ack_topic, decode_readings, readings_topic, status_topic

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
ENV_SAMPLE = REPO / ".env.sample"
VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
SECRET = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def env_sample() -> dict[str, str]:
    values = {}
    for raw in ENV_SAMPLE.read_text().splitlines():
        text = raw.strip()
        if text and not text.startswith("#"):
            name, _, value = text.partition("=")
            values[name.strip()] = value.strip()
    return values


def strings(node: Any) -> Iterator[str]:
    """Every string value (and key) of a parsed YAML document: what compose interpolates; comments are gone."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


def project_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def test_project_services_are_built_here_and_run_real_subcommands(compose: dict[str, Any]) -> None:
    services = project_services(compose)
    assert set(services) == {"ingest", "api", "analytics"}
    parser = build_parser()
    for name, svc in services.items():
        command = svc["command"]
        assert isinstance(command, list), f"{name}: give command as a list, not a shell string"
        assert command[0] == "pilotwatch", f"{name}: command must start with pilotwatch"
        try:
            args = parser.parse_args(command[1:])
        except SystemExit:
            pytest.fail(f"service {name}: `{' '.join(command)}` is not a pilotwatch subcommand")
        assert callable(getattr(args, "handler", None)), f"{name}: {command} has no handler"


def _host_path(source: str) -> str | None:
    """The host side of a bind mount with its compose default applied; None for a required variable."""
    match = VAR.fullmatch(source)
    if match:
        return match.group(3) if match.group(2) in ("-", ":-") else None
    return source


def test_every_mount_exists_in_the_repo(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.rsplit(":", 2)[0] if volume.count(":") >= 2 else volume.split(":")[0]
            host = _host_path(source)
            if host is None:
                continue  # a required path from .env (TLS files): checked by the .env.sample test
            if host.startswith((".", "/")):
                assert (REPO / host).exists(), f"{name} mounts {host}, which is not in the repository"
            else:
                assert host in declared, f"{name} uses volume {host!r}, not declared under volumes:"


def test_dockerfile_copies_what_exists() -> None:
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        if raw.startswith("COPY "):
            for source in raw.split()[1:-1]:
                assert (REPO / source).exists(), f"Dockerfile copies {source}, which is missing"


def test_every_variable_is_documented_and_no_secret_has_a_default(compose: dict[str, Any]) -> None:
    documented = env_sample()
    used = {m.group(1): (m.group(2), m.group(3)) for text in strings(compose) for m in VAR.finditer(text)}
    assert used, "docker-compose.yml uses no variables at all?"
    missing = sorted(set(used) - set(documented))
    assert not missing, f"used in docker-compose.yml but not in .env.sample: {missing}"
    for name, (op, _) in used.items():
        if SECRET.search(name):
            assert op == ":?", f"secret {name} must be required (${{{name}:?...}}), not defaulted"
    for name, value in documented.items():
        assert value == "", f".env.sample ships a value for {name}; it must be empty"
    # Everything that looks like a secret in a service's environment comes from .env, never a literal.
    for svc_name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if SECRET.search(key) and "FILE" not in key:
                assert VAR.fullmatch(str(value)), f"{svc_name}.{key} is a literal secret: {value!r}"


def test_grafana_provisioning_reads_only_variables_compose_sets(compose: dict[str, Any]) -> None:
    env = compose["services"]["grafana"]["environment"]
    provisioning = REPO / "deploy" / "grafana" / "provisioning"
    for path in provisioning.rglob("*.yaml"):
        for name in {n for text in strings(yaml.safe_load(path.read_text())) for n in re.findall(r"\$\{?(\w+)", text)}:
            assert name in env, f"{path.name} reads ${name}, which compose does not give grafana"
    provider = yaml.safe_load((provisioning / "dashboards" / "pilotwatch.yaml").read_text())
    mounted = [v.split(":")[1] for v in compose["services"]["grafana"]["volumes"]]
    assert provider["providers"][0]["options"]["path"] in mounted


# -- the broker configuration, run by a real Mosquitto --------------------------------------------------------


def test_python_hash_matches_mosquitto_passwd_format() -> None:
    salt = bytes(range(12))
    digest = base64.b64encode(hashlib.pbkdf2_hmac("sha512", b"secret", salt, 101)).decode()
    assert mosquitto_hash("secret", salt) == f"$7$101$AAECAwQFBgcICQoL${digest}"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    certs = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(certs / "server.key"), "-out", str(certs / "server.crt"), "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    (certs / "ca.crt").write_bytes((certs / "server.crt").read_bytes())
    return certs


class Broker:
    def __init__(self, root: Path, credentials: Path, certs: Path) -> None:
        self.plain_port = free_port()
        self.tls_port = free_port()
        conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
        replacements = {
            "listener 1883\n": f"listener {self.plain_port} 127.0.0.1\n",
            "listener 8883\n": f"listener {self.tls_port} 127.0.0.1\n",
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
        self.out = (root / "stdout").open("wb")
        self.proc = subprocess.Popen(
            [find_binary("mosquitto"), "-c", str(root / "mosquitto.conf")], stdout=self.out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.tls_port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"mosquitto did not start with the deploy config: {(root / 'stdout').read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.out.close()


class Client:
    """A paho client that records what it receives and what the broker answered."""

    def __init__(self, user: str, password: str, port: int, tls_ca: Path | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.connect_failure: str | None = None
        self.granted: dict[int, list[int]] = {}
        self.got = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-test", protocol=mqtt.MQTTv311)
        self.client.username_pw_set(user, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(10), "no CONNACK"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connect_failure = str(reason) if reason.is_failure else None
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.got:
            self.messages.append((message.topic, message.payload))
            self.got.notify_all()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        with self.got:
            self.granted[mid] = [r.value for r in reasons]
            self.got.notify_all()

    def subscribe(self, topic: str) -> list[int]:
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        with self.got:
            assert self.got.wait_for(lambda: mid in self.granted, 10)
            return self.granted[mid]

    def wait_for(self, payload: bytes) -> None:
        with self.got:
            assert self.got.wait_for(lambda: any(p == payload for _, p in self.messages), 10), self.messages

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(params=["mosquitto_passwd", "python"])
def broker(
    request: pytest.FixtureRequest, tmp_path: Path, tls_files: Path, manifest: Manifest
) -> Iterator[tuple[Broker, dict[str, str]]]:
    credentials = tmp_path / "credentials"
    write_mqtt_credentials(manifest, credentials, use_mosquitto_passwd=request.param == "mosquitto_passwd")
    passwords: dict[str, str] = yaml.safe_load((credentials / "credentials.yaml").read_text())["users"]
    running = Broker(tmp_path, credentials, tls_files)
    yield running, passwords
    running.stop()


def test_acl_confines_each_device_to_its_own_topics(broker: tuple[Broker, dict[str, str]], tls_files: Path) -> None:
    server, passwords = broker
    a, b = "bkk-pratunam-wq1", "mlk-morten-wq1"
    ingest = Client(INGEST_USER, passwords[INGEST_USER], server.plain_port)
    device = Client(a, passwords[a], server.tls_port, tls_ca=tls_files / "ca.crt")
    clients = [ingest, device]
    try:
        assert ingest.connect_failure is None
        assert device.connect_failure is None
        # Ingest subscribes the way it runs: a shared subscription to every device's readings, and status.
        assert ingest.subscribe("$share/ingest/pilotwatch/v1/devices/+/readings") == [1]
        assert ingest.subscribe("pilotwatch/v1/devices/+/status") == [1]
        assert device.subscribe(ack_topic(a)) == [1]
        # Mosquitto 2.0 grants any subscription and applies the read ACL to each message it would deliver.
        device.subscribe(ack_topic(b))
        device.subscribe("pilotwatch/v1/devices/+/readings")

        device.client.publish(readings_topic(a), b"own-1", qos=1).wait_for_publish(5)
        device.client.publish(readings_topic(b), b"forged", qos=1).wait_for_publish(5)
        device.client.publish(status_topic(a), b"online", qos=1, retain=True).wait_for_publish(5)
        device.client.publish(readings_topic(a), b"own-2", qos=1).wait_for_publish(5)
        ingest.wait_for(b"own-2")
        assert (readings_topic(a), b"own-1") in ingest.messages
        assert (status_topic(a), b"online") in ingest.messages
        assert all(payload != b"forged" for _, payload in ingest.messages)

        ingest.client.publish(ack_topic(b), b"ack-for-b", qos=1).wait_for_publish(5)
        ingest.client.publish(ack_topic(a), b"ack-1", qos=1).wait_for_publish(5)
        device.wait_for(b"ack-1")
        assert [p for _, p in device.messages] == [b"ack-1"], "a device reads only its own acks"
        # Ingest may write acks but not readings: a forged reading from ingest reaches nobody.
        ingest.client.publish(readings_topic(a), b"from-ingest", qos=1).wait_for_publish(5)

        assert connack(b, "not-the-password", server.tls_port, tls_files / "ca.crt").is_failure
        other = Client(b, passwords[b], server.tls_port, tls_ca=tls_files / "ca.crt")
        clients.append(other)
        assert other.connect_failure is None
        other.subscribe(readings_topic(a))
        device.client.publish(readings_topic(a), b"own-3", qos=1).wait_for_publish(5)
        ingest.wait_for(b"own-3")
        assert all(payload != b"from-ingest" for _, payload in ingest.messages)
        assert other.messages == [], "a device reads no other device's readings"
    finally:
        for client in clients:
            client.close()


def connack(user: str | None, password: str | None, port: int, tls_ca: Path | None = None) -> Any:
    """The broker's CONNACK reason for one login. Driven by hand, without paho's network thread, because a
    refused client under ``loop_start`` keeps reconnecting and leaves its wake-up socket pair open."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user or 'anon'}-login", protocol=mqtt.MQTTv311)
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


def test_anonymous_clients_are_refused(broker: tuple[Broker, dict[str, str]], tls_files: Path) -> None:
    server, passwords = broker
    assert connack(None, None, server.plain_port).is_failure
    assert connack(None, None, server.tls_port, tls_files / "ca.crt").is_failure
    # The same login path accepts a real device, so the refusals above are the broker's, not the helper's.
    assert not connack("dng-quay-bin1", passwords["dng-quay-bin1"], server.tls_port, tls_files / "ca.crt").is_failure


def test_credentials_are_kept_across_runs_and_follow_the_manifest(tmp_path: Path, manifest: Manifest) -> None:
    out = tmp_path / "creds"
    first = write_mqtt_credentials(manifest, out, use_mosquitto_passwd=False)
    assert INGEST_USER in first["created"]
    before = yaml.safe_load((out / "credentials.yaml").read_text())["users"]
    assert (out / "credentials.yaml").stat().st_mode & 0o777 == 0o600
    second = write_mqtt_credentials(manifest, out, use_mosquitto_passwd=False)
    assert second["created"] == []
    assert yaml.safe_load((out / "credentials.yaml").read_text())["users"] == before
    acl = (out / "acl").read_text()
    for _, _, device in manifest.iter_devices():
        assert f"user {device.id}\ntopic write {readings_topic(device.id)}\n" in acl
    assert "pattern" not in acl


def test_the_edge_agent_publishes_over_tls_with_its_own_credentials(
    broker: tuple[Broker, dict[str, str]], tls_files: Path, manifest: Manifest, tmp_path: Path
) -> None:
    """The real agent, configured as on a Pi (TLS, per-device password), against the deployment's broker."""
    server, passwords = broker
    device = "bkk-pratunam-wq1"
    ingest = Client(INGEST_USER, passwords[INGEST_USER], server.plain_port)
    settings = EdgeSettings(
        device=device,
        mqtt_port=server.tls_port,
        password=SecretStr(passwords[device]),
        tls_ca=tls_files / "ca.crt",
        buffer_dir=tmp_path / "edge",
        linger_s=0.0,
        status_interval_s=0.2,
    )
    day = 86_400_000
    start = int(time.time() * 1000) // day * day - 2 * day
    agent = simulated_agent(settings, SimulatedFleet(manifest, 3).device(device), start)
    try:
        assert ingest.subscribe("$share/ingest/pilotwatch/v1/devices/+/readings") == [1]
        assert ingest.subscribe(status_topic(device)) == [1]
        agent.start()
        agent.sample(until_ms=start + 3_600_000)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(t == readings_topic(device) for t, _ in ingest.messages):
            agent.pump()
            time.sleep(0.05)
        readings = [decode_readings(t, p) for t, p in list(ingest.messages) if t == readings_topic(device)]
        assert readings, "no readings arrived over TLS"
        assert all(r.message.device == device and not r.rejected for r in readings)
        assert any(t == status_topic(device) for t, _ in ingest.messages), "no retained status arrived"
    finally:
        agent.stop()
        agent.sampler.close()
        agent.buffer.close()
        ingest.close()
    # With the wrong password the same agent is refused by the broker, not silently accepted.
    assert connack(device, "wrong-password", server.tls_port, tls_files / "ca.crt").is_failure


@pytest.mark.parametrize(
    ("service", "settings_class"),
    [("ingest", IngestSettings), ("api", ApiSettings), ("analytics", AnalyticsSettings)],
)
def test_every_service_variable_names_a_real_setting(
    compose: dict[str, Any], service: str, settings_class: type[ServiceSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt variable in compose would be ignored silently at run time; here it fails."""
    prefix = f"PILOTWATCH_{service.upper()}_"
    given: dict[tuple[str, ...], str] = {}
    for name, raw in compose["services"][service]["environment"].items():
        # ${VAR:?message} is a secret from .env: any real-looking value; ${VAR:-default}: its default.
        value = VAR.sub(lambda m: m.group(3) if m.group(2) == ":-" else "a1b2c3d4e5f6a7b8", str(raw))
        if name.startswith(prefix):
            given[tuple(name[len(prefix) :].lower().split("__"))] = value
        monkeypatch.setenv(name, value)
    settings = settings_class()
    assert given, f"compose gives {service} no {prefix}* variable"
    for path, value in given.items():
        node: Any = settings
        for part in path:
            assert hasattr(node, part), f"{prefix}{'__'.join(path).upper()} names no setting of {service}"
            node = getattr(node, part)
        shown = node.get_secret_value() if isinstance(node, SecretStr) else node
        assert str(shown) == value, f"{prefix}{'__'.join(path).upper()}: {shown!r} != {value!r}"
