"""A local stack: Mosquitto and InfluxDB 1.x from the distribution's packages, run as user processes.

In: a folder and two ports. Out: running ``mosquitto`` and ``influxd`` bound to loopback only, with their
configuration, data, logs and pid files under that folder, answering before :meth:`LocalStack.up` returns.
The demo command, ``pilotwatch stack up|down|status`` and the test suite all start services through this module,
so the tests exercise exactly what an operator runs. Nothing here touches system-wide services.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from pilotwatch.influx import InfluxV1
from pilotwatch.settings import StackConfig

INSTALL_HINT = {
    "mosquitto": "sudo apt-get install mosquitto   (Debian 12 / Ubuntu / Raspberry Pi OS)",
    "influxd": "sudo apt-get install influxdb    (Debian 12 ships InfluxDB 1.6; Ubuntu: influxdb)",
}
SEARCH_PATH = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")


class StackError(RuntimeError):
    """The stack could not be started or reached; the message says what to do."""


def find_binary(name: str) -> str:
    found = shutil.which(name) or next((str(Path(d) / name) for d in SEARCH_PATH if (Path(d) / name).is_file()), None)
    if found is None:
        raise StackError(f"{name} is not installed. Install it with:\n  {INSTALL_HINT[name]}")
    return found


# Why each Mosquitto setting has the value it has (see docs/operations.md for the full story):
MOSQUITTO_CONF = """\
# Written by pilotwatch stack; edit the template in pilotwatch/stack.py, not this file. docs/operations.md explains
# every setting; deploy/mosquitto/mosquitto.conf must keep the same queue and session values.
listener {port} {host}
# Loopback only (the listener line above), so anonymous is acceptable here; a city deployment uses passwords + ACL.
allow_anonymous true
# Keep sessions and queued QoS 1 messages across a broker restart: ingest's queue must survive a broker crash.
persistence true
persistence_location {data}/
# Write the in-memory state to disk every 30 s: what a broker crash can lose is re-sent by the edge, which keeps
# every reading until ingest acknowledges it end to end, so a short window costs nothing but a re-send.
autosave_interval 30
# What may wait for one client (ingest's persistent session) while it is slow or away. The default (1000) drops
# QoS 1 messages of a slow subscriber after PUBACKing them to the publisher (66 % lost in a test here). Kept below
# 65,535 because Mosquitto 2.0.11 loses about n - 65,535 of n messages queued for one subscriber (16-bit ids).
# Not a delivery promise: past it messages are dropped and the edge re-sends them when no end-to-end ack comes.
max_queued_messages 60000
# The message count above is the bound; a byte bound would drop by size instead, which nobody can reason about.
max_queued_bytes 0
# QoS 1 messages in flight to a client awaiting its PUBACK. For MQTT 5 clients the client's receive maximum
# (ingest asks for PILOTWATCH_INGEST_MAX_UNACKED, default 1000) wins; 1000 applies to MQTT 3.1.1 clients.
max_inflight_messages 1000
# A device message is at most 256 KiB (wire format); anything past 1 MiB is refused at the broker rather than
# held in memory and handed to ingest.
max_packet_size 1048576
# Ingest's session (clean_start false, session expiry 7 days) survives an ingest outage of up to a week; an
# MQTT 3.1.1 client with a persistent session is forgotten after the same time.
persistent_client_expiration 7d
# Errors, warnings and notices only: "Outgoing messages are being dropped" (the queue bound above) is a warning.
log_dest file {log}
log_type error
log_type warning
log_type notice
# A fleet reconnecting after a network outage would flood the log with one line per device.
connection_messages false
# Run as the user who started the stack (root would switch to 'mosquitto', which cannot write our folder).
{user_line}
"""

INFLUXDB_CONF = """\
# Written by pilotwatch stack.
reporting-disabled = true
bind-address = "{host}:{rpc_port}"

[meta]
  dir = "{data}/meta"
  logging-enabled = false

[data]
  dir = "{data}/data"
  wal-dir = "{data}/wal"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  log-queries-after = "0s"

[retention]
  enabled = true

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{host}:{port}"
  auth-enabled = false
  log-enabled = false
  max-body-size = 0

[continuous_queries]
  enabled = false

[logging]
  level = "warn"
"""


class LocalStack:
    """Start, stop and query the one-machine stack whose state lives under ``config.root``."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.root = config.root
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- paths ---------------------------------------------------------------------------------------------
    def _path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def state_file(self) -> Path:
        return self._path("stack.json")

    # -- lifecycle -----------------------------------------------------------------------------------------
    def up(self, timeout_s: float = 30.0) -> None:
        """Start both services (or reuse running ones of this folder) and wait until both answer."""
        mosquitto = find_binary("mosquitto")
        influxd = find_binary("influxd")
        for sub in ("mosquitto", "influxdb", "logs", "run"):
            self._path(sub).mkdir(parents=True, exist_ok=True)
        self.config.save()
        # Reuse a service of this folder only if it answers on the configured port; a leftover from an earlier
        # run with other ports (or a hung one) is replaced.
        if self._alive("mosquitto") and not self._mqtt_answers():
            self.stop_service("mosquitto")
        if not self._alive("mosquitto"):
            self._start_mosquitto(mosquitto)
        if self._alive("influxd") and not self._influx_answers():
            self.stop_service("influxd")
        if not self._alive("influxd"):
            self._start_influxd(influxd)
        deadline = time.monotonic() + timeout_s
        try:
            self._wait_mqtt(deadline)
            self._wait_influx(deadline)
        except StackError:
            self.down()
            raise
        with InfluxV1(self.config.influx_url, self.config.database) as client:
            client.create_database()

    def down(self, timeout_s: float = 15.0) -> list[str]:
        """Stop what runs from this folder; return the names of the services that were stopped."""
        stopped = []
        for name in ("mosquitto", "influxd"):
            pid = self._pid(name)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                self._pid_file(name).unlink(missing_ok=True)
                continue
            deadline = time.monotonic() + timeout_s
            while self._pid_running(pid) and time.monotonic() < deadline:
                proc = self._procs.get(name)
                if proc is not None:
                    proc.poll()
                time.sleep(0.05)
            if self._pid_running(pid):
                os.kill(pid, signal.SIGKILL)
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.wait(timeout=5)
            self._pid_file(name).unlink(missing_ok=True)
            stopped.append(name)
        return stopped

    def stop_service(self, name: str) -> None:
        """Stop one service hard, as a crash or an outage would (used by failure tests)."""
        pid = self._pid(name)
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        proc = self._procs.pop(name, None)
        if proc is not None:
            proc.wait(timeout=10)
        self._pid_file(name).unlink(missing_ok=True)

    def start_service(self, name: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        if name == "mosquitto":
            self._start_mosquitto(find_binary("mosquitto"))
            self._wait_mqtt(deadline)
        elif name == "influxd":
            self._start_influxd(find_binary("influxd"))
            self._wait_influx(deadline)
        else:
            raise ValueError(f"unknown service {name!r}; expected 'mosquitto' or 'influxd'")

    def status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        checks = {
            "mosquitto": (self.config.mqtt_port, self._mqtt_answers),
            "influxd": (self.config.influx_port, self._influx_answers),
        }
        for name, (port, answers) in checks.items():
            pid = self._pid(name)
            out[name] = {
                "pid": pid,
                "running": pid is not None and self._pid_running(pid),
                "port": port,
                "answers": answers(),
            }
        return out

    # -- internals -----------------------------------------------------------------------------------------
    def _pid_file(self, name: str) -> Path:
        return self._path("run", f"{name}.pid")

    def _pid(self, name: str) -> int | None:
        try:
            return int(self._pid_file(name).read_text().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _pid_running(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"

    def _alive(self, name: str) -> bool:
        pid = self._pid(name)
        return pid is not None and self._pid_running(pid)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self._path("logs", f"{name}.out").open("ab")
        # A new session: the services outlive `pilotwatch stack up` and ignore the terminal's Ctrl-C.
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        self._procs[name] = proc
        self._pid_file(name).write_text(str(proc.pid))

    def _start_mosquitto(self, binary: str) -> None:
        data = self._path("mosquitto")
        # Mosquitto started as root drops to user 'mosquitto', which cannot write our folder; stay who we are.
        user = getpass.getuser()
        conf = MOSQUITTO_CONF.format(
            port=self.config.mqtt_port,
            host=self.config.host,
            data=data,
            log=self._path("logs", "mosquitto.log"),
            user_line=f"user {user}",
        )
        conf_path = self._path("mosquitto", "mosquitto.conf")
        conf_path.write_text(conf)
        self._spawn("mosquitto", [binary, "-c", str(conf_path)])

    def _start_influxd(self, binary: str) -> None:
        data = self._path("influxdb")
        conf = INFLUXDB_CONF.format(
            host=self.config.host,
            port=self.config.influx_port,
            rpc_port=self.config.influx_rpc_port,
            data=data,
        )
        conf_path = self._path("influxdb", "influxdb.conf")
        conf_path.write_text(conf)
        self._spawn("influxd", [binary, "-config", str(conf_path)])

    def _mqtt_answers(self) -> bool:
        # A CONNECT with a CONNACK back is the only proof the broker serves MQTT, not just that a port is open.
        connect = bytes.fromhex("100f00044d5154540402003c0003") + b"pw?"
        try:
            with socket.create_connection((self.config.host, self.config.mqtt_port), timeout=1.0) as sock:
                sock.sendall(connect)
                return sock.recv(4)[:1] == b"\x20"
        except OSError:
            return False

    def _influx_answers(self) -> bool:
        try:
            return httpx.get(f"{self.config.influx_url}/ping", timeout=1.0).status_code == 204
        except httpx.HTTPError:
            return False

    def _wait(self, name: str, answers: object, deadline: float) -> None:
        assert callable(answers)
        while time.monotonic() < deadline:
            if answers():
                return
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.1)
        log = self._path("logs", f"{name}.out")
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise StackError(f"{name} did not answer on {self.config.host}; its output:\n{tail}")

    def _wait_mqtt(self, deadline: float) -> None:
        self._wait("mosquitto", self._mqtt_answers, deadline)

    def _wait_influx(self, deadline: float) -> None:
        self._wait("influxd", self._influx_answers, deadline)


def load_stack(root: Path) -> LocalStack:
    """The stack recorded in ``root/stack.json`` by an earlier ``up``."""
    return LocalStack(StackConfig.load(root))
