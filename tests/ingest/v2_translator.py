"""A loopback translator for InfluxDB's v2 write API, in front of a real InfluxDB 1.x.

Debian's influxd 1.6 serves only ``/write``; no InfluxDB 2.x/3.x server can be installed from the registries this
project uses. To exercise influxdb-client's real v2 write path (its HTTP request, token header, org/bucket
parameters, precision, error handling), this server accepts ``POST /api/v2/write?org=&bucket=&precision=``,
checks ``Authorization: Token <token>`` and the org like InfluxDB 2.x does (401 on a bad token, 404 on an unknown
org or bucket), maps the bucket to a database of the same name (a DBRP mapping), forwards the body unchanged to the
real ``/write`` and passes the answer back in v2's error shape. ``inject`` queues canned answers (429/503 with
Retry-After) to test retry classification. What it does not cover is listed in docs/ingest.md.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import httpx


class V2Translator:
    def __init__(self, influx_url: str, token: str, org: str, buckets: set[str]) -> None:
        self.influx_url = influx_url.rstrip("/")
        self.token = token
        self.org = org
        self.buckets = set(buckets)
        self.requests = 0
        self.injected: list[tuple[int, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._upstream = httpx.Client(base_url=self.influx_url, timeout=30, trust_env=False)
        translator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _answer(self, status: int, body: dict[str, str] | None, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.startswith(("/ping", "/health")):
                    self._answer(204, None)
                else:
                    self._answer(404, {"code": "not found", "message": "path not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                url = urlparse(self.path)
                with translator._lock:
                    translator.requests += 1
                    canned = translator.injected.pop(0) if translator.injected else None
                if url.path != "/api/v2/write":
                    self._answer(404, {"code": "not found", "message": f"path {url.path} not found"})
                    return
                if canned is not None:
                    self._answer(canned[0], {"code": "unavailable", "message": "injected"}, canned[1])
                    return
                if self.headers.get("Authorization") != f"Token {translator.token}":
                    self._answer(401, {"code": "unauthorized", "message": "unauthorized access"})
                    return
                query = parse_qs(url.query)
                org = query.get("org", [""])[0]
                bucket = query.get("bucket", [""])[0]
                if org != translator.org:
                    self._answer(404, {"code": "not found", "message": f'organization name "{org}" not found'})
                    return
                if bucket not in translator.buckets:
                    self._answer(404, {"code": "not found", "message": f'bucket "{bucket}" not found'})
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    import gzip  # noqa: PLC0415

                    body = gzip.decompress(body)
                precision = query.get("precision", ["ns"])[0]
                upstream = translator._upstream.post(
                    "/write", params={"db": bucket, "precision": precision}, content=body
                )
                if upstream.status_code == 204:
                    self._answer(204, None)
                    return
                try:
                    message = upstream.json().get("error", upstream.text)
                except ValueError:
                    message = upstream.text
                code = "invalid" if upstream.status_code == 400 else "internal error"
                self._answer(upstream.status_code, {"code": code, "message": message})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="v2-translator", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def inject(self, status: int, retry_after: str | None = None) -> None:
        with self._lock:
            self.injected.append((status, {"Retry-After": retry_after} if retry_after else {}))

    def __enter__(self) -> V2Translator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._upstream.close()
