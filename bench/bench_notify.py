"""Notifications per second to a loopback webhook receiver, and the latency from an alert transition stored in
the engine's outbox to its notification received, beside a plain signed POST loop to the same receiver (the
anchor: what the receiver and httpx do without an outbox) measured in the same run.

Burst: ``--burst`` FIRED transitions appended in commits of 100, one notification each (grouping off, one alert
per message so every notification is a request), the clock running from the first commit to the last
notification received. Steady: ``--rate`` transitions/s for ``--seconds``; each transition's time from its commit
to the receiver's arrival gives p50/p99 (the notifier polls the outbox every ``poll_interval_s``, 0.2 s by
default, which bounds the p99 from below). Every notification is checked to arrive exactly once.

    .venv/bin/python bench/bench_notify.py [--burst 3000] [--rate 50] [--seconds 20] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from notify.recipients import parse_recipients
from notify.service import Notifier
from notify.settings import NotifySettings
from pilotwatch.alerting import Severity, Transition, TransitionKind, append_transition, create_transitions_table
from pilotwatch.manifest import AlertKind, parse_manifest
from pilotwatch.signing import webhook_signature

SECRET = "bench-webhook-signing-secret-0001"


class Receiver:
    """Checks each signature and notes the arrival time of each transition id and each idempotency key."""

    def __init__(self) -> None:
        self.arrivals: dict[int, float] = {}
        self.keys: dict[str, int] = {}
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ts = self.headers.get("X-Pilotwatch-Timestamp", "")
                mac = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
                ok = hmac.compare_digest("v1=" + mac, self.headers.get("X-Pilotwatch-Signature", ""))
                now = time.time()
                if ok:
                    doc = json.loads(body)
                    with receiver.lock:
                        receiver.requests += 1
                        key = self.headers.get("Idempotency-Key", "")
                        receiver.keys[key] = receiver.keys.get(key, 0) + 1
                        for alert in doc.get("alerts", []):
                            receiver.arrivals.setdefault(int(alert["transition_id"]), now)
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def anchor_rate(receiver: Receiver, n: int) -> float:
    """Signed POSTs of a one-alert document in a loop with 8 threads, as the notifier sends: no outbox."""
    body = json.dumps({"alerts": []}).encode()
    per_thread = n // 8

    def loop() -> None:
        with httpx.Client() as client:
            for _ in range(per_thread):
                ts = int(time.time())
                client.post(
                    receiver.url,
                    content=body,
                    headers={
                        "X-Pilotwatch-Timestamp": str(ts),
                        "X-Pilotwatch-Signature": webhook_signature(SECRET, ts, body),
                    },
                )

    threads = [threading.Thread(target=loop) for _ in range(8)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return per_thread * 8 / (time.perf_counter() - start)


def fired(i: int) -> Transition:
    return Transition(
        alert_id=f"bench-{i}",
        transition=TransitionKind.FIRED,
        kind=AlertKind.POLLUTION,
        city="bangkok",
        site="bkk-pratunam-pier",
        severity=Severity.CRITICAL,
        t_ms=int(time.time() * 1000),
        body={"parameter": "do", "value": 1.1, "limit": "min 2.0 mg/L", "citation": "bench"},
    )


class Engine:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        create_transitions_table(self.conn)
        self.stored: dict[int, float] = {}
        self.n = 0

    def emit(self, count: int) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        ids = [append_transition(self.conn, fired(self.n + i)) for i in range(count)]
        self.conn.execute("COMMIT")
        now = time.time()
        self.n += count
        self.stored.update(dict.fromkeys(ids, now))


def wait_for(receiver: Receiver, ids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with receiver.lock:
            if all(i in receiver.arrivals for i in ids):
                return
        time.sleep(0.01)
    raise SystemExit(f"not every notification arrived within {timeout_s} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="burst 1000, 8 s steady")
    args = parser.parse_args()
    if args.quick:
        args.burst, args.seconds = 1000, 8.0
    os.environ["PW_BENCH_HOOK_SECRET"] = SECRET
    receiver = Receiver()
    raw: Any = copy.deepcopy(
        yaml.safe_load(resources.files("pilotwatch").joinpath("manifests/default.yaml").read_text())
    )
    raw["alerts"] = [{"city": "*", "alert": "pollution", "roles": ["city_staff"], "channels": ["webhook"]}]
    manifest = parse_manifest(raw, "bench manifest")
    recipients = parse_recipients(
        {
            "version": 1,
            "recipients": [
                {
                    "city": "bangkok",
                    "role": "city_staff",
                    "webhooks": [{"name": "bench", "url": receiver.url, "secret_env": "PW_BENCH_HOOK_SECRET"}],
                }
            ],
        },
        "bench recipients",
        manifest,
    )
    anchor = anchor_rate(receiver, 2000 if args.quick else 4000)
    with receiver.lock:
        receiver.arrivals.clear()
        receiver.keys.clear()
        receiver.requests = 0
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmp:
        engine = Engine(Path(tmp) / "alerts.db")
        settings = NotifySettings(
            alerts_db=Path(tmp) / "alerts.db",
            state_db=Path(tmp) / "notify.db",
            group_window_s=0.0,
            max_alerts_per_message=1,
            max_per_recipient_per_hour=10**9,
        )
        notifier = Notifier(settings, manifest, recipients)
        stop = threading.Event()
        worker = threading.Thread(target=notifier.run, args=(stop,))
        worker.start()
        try:
            start = time.perf_counter()
            for _ in range(args.burst // 100):
                engine.emit(100)
            wait_for(receiver, list(engine.stored), 600)
            burst_s = time.perf_counter() - start
            burst_ids = set(engine.stored)
            steady: list[int] = []
            t_next = time.perf_counter()
            end = t_next + args.seconds
            while t_next < end:
                engine.emit(1)
                steady.append(engine.n)
                t_next += 1 / args.rate
                time.sleep(max(0.0, t_next - time.perf_counter()))
            steady_ids = [i for i in engine.stored if i not in burst_ids]
            wait_for(receiver, steady_ids, 120)
        finally:
            stop.set()
            worker.join()
            notifier.close()
        latencies = sorted((receiver.arrivals[i] - engine.stored[i]) * 1000 for i in steady_ids)
        duplicates = sum(n - 1 for n in receiver.keys.values())
    receiver.close()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print(f"anchor: signed POST loop, 8 threads, no outbox       {anchor:10,.0f} requests/s")
    print(
        f"notifier burst: {args.burst} transitions → webhook       {args.burst / burst_s:10,.0f} notifications/s"
        f"  ({burst_s:.2f} s, ratio to anchor {args.burst / burst_s / anchor:.2f})"
    )
    print(
        f"steady {args.rate:g}/s for {args.seconds:g} s: stored → received  p50 {statistics.median(latencies):.0f} ms"
        f"  p99 {p99:.0f} ms  max {latencies[-1]:.0f} ms  (n={len(latencies)})"
    )
    print(f"received {len(receiver.arrivals)} of {engine.n} notifications; re-sent with the same key: {duplicates}")
    return 0 if len(receiver.arrivals) == engine.n and duplicates == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
