"""Real receivers on loopback for the notifier's tests: an SMTP server with STARTTLS and AUTH (aiosmtpd), an HTTP
webhook receiver that checks the HMAC signature itself and can be told to fail, and an MQTT subscriber.

Each receiver counts what arrives per recipient and per idempotency key, so tests count at the receiving end,
never in the notifier. The webhook receiver checks signatures with its own few lines of ``hmac`` rather than
the notifier's verifier, so a bug in one cannot hide a bug in the other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import ssl
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1/localhost that is its own CA, valid for one day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pilotwatch test SMTP")])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class Received:
    """What one kind of receiver got: raw count, and per recipient the transition ids per idempotency key."""

    raw: int = 0
    conflicts: int = 0
    """Messages that reused an idempotency key for different content: a receiver would drop real news."""
    by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, recipient: str, key: str, transitions: list[int], document: Any) -> None:
        with self.lock:
            self.raw += 1
            known = self.by_key.get(key)
            if known is not None and (known["recipient"], known["transitions"]) != (recipient, transitions):
                self.conflicts += 1
            self.by_key.setdefault(key, {"recipient": recipient, "transitions": transitions, "doc": document, "n": 0})
            self.by_key[key]["n"] += 1

    def transitions_of(self, recipient: str) -> list[int]:
        """Every transition id the recipient got, one entry per distinct message (duplicates show up twice)."""
        with self.lock:
            return sorted(t for v in self.by_key.values() if v["recipient"] == recipient for t in v["transitions"])

    def per_recipient(self) -> dict[str, list[int]]:
        with self.lock:
            out: dict[str, list[int]] = defaultdict(list)
            for v in self.by_key.values():
                out[v["recipient"]] += v["transitions"]
            return {k: sorted(v) for k, v in out.items()}

    def docs(self, recipient: str) -> list[Any]:
        with self.lock:
            return [v["doc"] for v in self.by_key.values() if v["recipient"] == recipient]

    def resent(self) -> int:
        """Messages that arrived more than once (a retry that crossed a crash), dropped by key."""
        with self.lock:
            return sum(v["n"] - 1 for v in self.by_key.values())


class _Mailbox:
    def __init__(self, received: Received) -> None:
        self.received = received

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        message: Message = message_from_bytes(envelope.content if isinstance(envelope.content, bytes) else b"")
        transitions = [int(t) for t in str(message.get("X-Pilotwatch-Transitions", "")).split(",") if t.isdigit()]
        for rcpt in envelope.rcpt_tos:
            self.received.add(rcpt.lower(), str(message["Message-ID"]), transitions, message)
        return "250 OK"


class SmtpServer:
    """aiosmtpd on a loopback port: STARTTLS required before AUTH, AUTH required before mail."""

    USER = "pilotwatch"
    PASSWORD = "smtp-test-password-4f1c"

    def __init__(self, folder: Path, port: int) -> None:
        self.port = port
        self.cert, key = self_signed_cert(folder)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(self.cert, key)
        self.received = Received()
        self.logins: list[str] = []
        self.controller: Controller | None = None

    def _auth(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == self.USER.encode()
            and data.password == (self.PASSWORD.encode())
        )
        if ok:
            self.logins.append(mechanism)
        return AuthResult(success=ok, handled=False)

    def start(self) -> None:
        self.controller = Controller(
            _Mailbox(self.received),
            hostname="127.0.0.1",
            port=self.port,
            tls_context=self.context,
            require_starttls=True,
            auth_required=True,
            authenticator=self._auth,
            server_hostname="127.0.0.1",
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


class WebhookReceiver:
    """Answers POST /hooks/<name>: 401 on a bad signature, else the next planned status (default 200)."""

    def __init__(self, secrets: dict[str, str], delay_s: float = 0.0) -> None:
        self.secrets = secrets
        self.delay_s = delay_s
        self.received = Received()
        self.plan: list[tuple[int, dict[str, str]]] = []
        self.answers: list[int] = []
        self.answer_times: list[float] = []
        self.bad_signatures = 0
        self.arrival_s: dict[int, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                name = self.path.rsplit("/", 1)[-1]
                status, headers = receiver._answer(name, self.headers, body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/hooks/{name}"

    def _answer(self, name: str, headers: Any, body: bytes) -> tuple[int, dict[str, str]]:
        secret = self.secrets.get(name, "")
        ts = headers.get("X-Pilotwatch-Timestamp", "")
        expected = "v1=" + hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        fresh = ts.isdigit() and abs(time.time() - int(ts)) < 300
        if not (secret and fresh and hmac.compare_digest(expected, headers.get("X-Pilotwatch-Signature", ""))):
            with self.lock:
                self.bad_signatures += 1
            return 401, {}
        if self.delay_s:
            time.sleep(self.delay_s)
        with self.lock:
            status, extra = self.plan.pop(0) if self.plan else (200, {})
            self.answers.append(status)
            self.answer_times.append(time.monotonic())
        if status == 200:
            doc = json.loads(body)
            now = time.time()
            for a in doc["alerts"]:
                self.arrival_s.setdefault(int(a["transition_id"]), now)
            self.received.add(name, headers["Idempotency-Key"], [int(a["transition_id"]) for a in doc["alerts"]], doc)
        return status, extra

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MqttListener:
    """Subscribes to ``<prefix>/#`` for each prefix; events count like the other receivers, site states are kept."""

    def __init__(self, port: int, prefixes: list[str]) -> None:
        self.received = Received()
        self.site_states: dict[str, Any] = {}
        self.retained_flags: dict[str, bool] = {}
        self.prefixes = prefixes
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"listener-{time.monotonic_ns()}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("the MQTT listener could not subscribe")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe([(f"{p}/#", 1) for p in self.prefixes])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        prefix = next(p for p in self.prefixes if msg.topic.startswith(p + "/"))
        rest = msg.topic[len(prefix) + 1 :]
        if rest == "events":
            self.received.add(prefix, doc["idempotency_key"], [int(a["transition_id"]) for a in doc["alerts"]], doc)
        else:
            self.site_states[msg.topic] = doc
            self.retained_flags[msg.topic] = bool(msg.retain)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
