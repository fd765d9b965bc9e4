"""The city deployment, checked without Docker: docker-compose.yml's structure against the repository, and the
Mosquitto configuration, credentials and ACL it mounts run by a real Mosquitto broker."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from alerts.settings import AlertSettings
from analytics.settings import AnalyticsSettings
from api.settings import ApiSettings
from commands.cli import build_parser
from commands.deploy_cli import DYNSEC_FILE, INGEST_USER, dynsec_password, write_mqtt_credentials
from edge.settings import EdgeSettings
from firmware_sim.agents import simulated_agent
from firmware_sim.fleet import SimulatedFleet
from ingest.settings import IngestSettings
from notify.settings import NotifySettings
from pilotwatch.manifest import Manifest
from pilotwatch.settings import ServiceSettings
from pilotwatch.wire import ack_topic, decode_readings, device_client_id, readings_topic, status_topic
from tests.deploy_broker import Client, DeployBroker, connack, make_tls_files

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
    assert set(services) == {"ingest", "api", "analytics", "alerts", "notify"}
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


def test_password_hash_is_pbkdf2_sha512_as_the_plugin_reads_it() -> None:
    salt = bytes(range(12))
    digest = base64.b64encode(hashlib.pbkdf2_hmac("sha512", b"secret", salt, 101)).decode()
    assert dynsec_password("secret", salt) == {"password": digest, "salt": "AAECAwQFBgcICQoL", "iterations": 101}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tls_files(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def broker(tmp_path: Path, tls_files: Path, manifest: Manifest) -> Iterator[tuple[DeployBroker, dict[str, str]]]:
    credentials = tmp_path / "credentials"
    write_mqtt_credentials(manifest, credentials)
    passwords: dict[str, str] = yaml.safe_load((credentials / "credentials.yaml").read_text())["users"]
    running = DeployBroker(tmp_path, credentials, tls_files)
    yield running, passwords
    running.stop()


def test_acl_confines_each_device_to_its_own_topics(
    broker: tuple[DeployBroker, dict[str, str]], tls_files: Path
) -> None:
    server, passwords = broker
    a, b = "bkk-pratunam-wq1", "mlk-morten-wq1"
    ingest = Client(INGEST_USER, passwords[INGEST_USER], server.plain_port, client_id="pilotwatch-ingest-1")
    device = Client(a, passwords[a], server.tls_port, client_id=device_client_id(a), tls_ca=tls_files / "ca.crt")
    clients = [ingest, device]
    try:
        assert ingest.connect_failure is None
        assert device.connect_failure is None
        # Ingest subscribes the way it runs: a shared subscription to every device's readings, and status.
        assert ingest.subscribe("$share/ingest/pilotwatch/v1/devices/+/readings") == [1]
        assert ingest.subscribe("pilotwatch/v1/devices/+/status") == [1]
        assert device.subscribe(ack_topic(a)) == [1]
        # The dynamic-security plugin checks subscriptions: anything but its own acks is refused.
        assert device.subscribe(ack_topic(b)) == [128]
        assert device.subscribe("pilotwatch/v1/devices/+/readings") == [128]

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
        other = Client(b, passwords[b], server.tls_port, client_id=device_client_id(b), tls_ca=tls_files / "ca.crt")
        clients.append(other)
        assert other.connect_failure is None
        assert other.subscribe(readings_topic(a)) == [128]
        device.client.publish(readings_topic(a), b"own-3", qos=1).wait_for_publish(5)
        ingest.wait_for(b"own-3")
        assert all(payload != b"from-ingest" for _, payload in ingest.messages)
        assert other.messages == [], "a device reads no other device's readings"
    finally:
        for client in clients:
            client.close()


def test_anonymous_clients_are_refused(broker: tuple[DeployBroker, dict[str, str]], tls_files: Path) -> None:
    server, passwords = broker
    assert connack(None, None, server.plain_port).is_failure
    assert connack(None, None, server.tls_port, tls_files / "ca.crt").is_failure
    # The same login path accepts a real device, so the refusals above are the broker's, not the helper's.
    login = connack(
        "dng-quay-bin1",
        passwords["dng-quay-bin1"],
        server.tls_port,
        tls_files / "ca.crt",
        client_id=device_client_id("dng-quay-bin1"),
    )
    assert not login.is_failure


def test_credentials_are_kept_across_runs_and_follow_the_manifest(tmp_path: Path, manifest: Manifest) -> None:
    out = tmp_path / "creds"
    first = write_mqtt_credentials(manifest, out)
    assert INGEST_USER in first["created"]
    before = yaml.safe_load((out / "credentials.yaml").read_text())["users"]
    assert (out / "credentials.yaml").stat().st_mode & 0o777 == 0o600
    second = write_mqtt_credentials(manifest, out)
    assert second["created"] == []
    assert yaml.safe_load((out / "credentials.yaml").read_text())["users"] == before
    config = json.loads((out / DYNSEC_FILE).read_text())
    clients = {c["username"]: c for c in config["clients"]}
    roles = {r["rolename"]: r for r in config["roles"]}
    assert set(clients) == set(before)
    for _, _, device in manifest.iter_devices():
        assert clients[device.id]["clientid"] == device_client_id(device.id)
        (role,) = clients[device.id]["roles"]
        granted = {(acl["acltype"], acl["topic"]) for acl in roles[role["rolename"]]["acls"]}
        assert ("publishClientSend", readings_topic(device.id)) in granted
        assert all(device.id in topic for _, topic in granted), "a device's rules name only its own topics"
    # A stale ACL-file setup from an earlier version is removed, not left beside the real rules.
    (out / "acl").write_text("user x\n")
    assert write_mqtt_credentials(manifest, out)["removed_files"] == ["acl"]


def test_the_edge_agent_publishes_over_tls_with_its_own_credentials(
    broker: tuple[DeployBroker, dict[str, str]], tls_files: Path, manifest: Manifest, tmp_path: Path
) -> None:
    """The real agent, configured as on a Pi (TLS, per-device password), against the deployment's broker."""
    server, passwords = broker
    device = "bkk-pratunam-wq1"
    ingest = Client(INGEST_USER, passwords[INGEST_USER], server.plain_port, client_id="pilotwatch-ingest-1")
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


def stand_in(variable: str) -> str:
    return "https://pilotwatch.city.example.org" if variable.endswith("_URL") else "a1b2c3d4e5f6a7b8"


@pytest.mark.parametrize(
    ("service", "settings_class"),
    [
        ("ingest", IngestSettings),
        ("api", ApiSettings),
        ("analytics", AnalyticsSettings),
        ("alerts", AlertSettings),
        ("notify", NotifySettings),
    ],
)
def test_every_service_variable_names_a_real_setting(
    compose: dict[str, Any], service: str, settings_class: type[ServiceSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt variable in compose would be ignored silently at run time; here it fails."""
    prefix = f"PILOTWATCH_{service.upper()}_"
    given: dict[tuple[str, ...], str] = {}
    for name, raw in compose["services"][service]["environment"].items():
        # ${VAR:?message} is required from .env: any real-looking value (an address for a URL); ${VAR:-default}:
        # its default.
        value = VAR.sub(lambda m: m.group(3) if m.group(2) == ":-" else stand_in(m.group(1)), str(raw))
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
