"""``pilotwatch dashboards push`` against a loopback HTTP server that records Grafana HTTP API calls.

No Grafana server can be installed here (neither Debian, PyPI nor npm ship one), so this server answers the
endpoints the push uses the way Grafana's HTTP API documents them (404 for an unknown uid, 401 for a bad token)
and records each call. What this does NOT cover: whether Grafana accepts the dashboard JSON (schema
migrations, panel plugins), renders the panels, or can reach InfluxDB through the datasource; the panel
queries themselves are tested against a real InfluxDB in test_dashboards.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from commands.cli import main
from dashboards.build import build_all, folder_uid
from pilotwatch.manifest import Manifest

TOKEN = "glsa_test_token_for_loopback_only"


@dataclass
class Recorder:
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    datasources: dict[str, Any] = field(default_factory=dict)
    folders: dict[str, Any] = field(default_factory=dict)
    dashboards: dict[str, Any] = field(default_factory=dict)
    auth: set[str] = field(default_factory=set)


def make_handler(rec: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body: Any = json.loads(self.rfile.read(length)) if length else {}
            rec.calls.append((method, self.path, body))
            rec.auth.add(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._reply(401, {"message": "invalid API key"})
                return
            path = self.path
            if path.startswith("/api/datasources/uid/"):
                uid = path.rsplit("/", 1)[1]
                if method == "GET":
                    found = rec.datasources.get(uid)
                    self._reply(200, found) if found else self._reply(404, {"message": "Data source not found"})
                else:
                    rec.datasources[uid] = body
                    self._reply(200, {"message": "Datasource updated"})
            elif path == "/api/datasources" and method == "POST":
                rec.datasources[body["uid"]] = body
                self._reply(200, {"message": "Datasource added", "datasource": body})
            elif path.startswith("/api/folders/"):
                uid = path.rsplit("/", 1)[1]
                if method == "GET":
                    found = rec.folders.get(uid)
                    self._reply(200, found) if found else self._reply(404, {"message": "folder not found"})
                else:
                    rec.folders[uid] = {"uid": uid, **body}
                    self._reply(200, rec.folders[uid])
            elif path == "/api/folders" and method == "POST":
                rec.folders[body["uid"]] = body
                self._reply(200, body)
            elif path == "/api/dashboards/db" and method == "POST":
                uid = body["dashboard"]["uid"]
                version = rec.dashboards.get(uid, {}).get("version", 0) + 1
                rec.dashboards[uid] = {"version": version, **body}
                self._reply(200, {"status": "success", "uid": uid, "version": version})
            else:
                self._reply(404, {"message": "Not found"})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PUT(self) -> None:
            self._handle("PUT")

    return Handler


@pytest.fixture
def grafana() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(rec))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", rec
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_push_creates_then_updates(grafana: tuple[str, Recorder], manifest: Manifest) -> None:
    url, rec = grafana
    argv = ["dashboards", "push", "--url", url, "--token", TOKEN, "--influx-url", "http://influxdb:8086",
            "--influx-token", "influx-read-token-123"]  # fmt: skip
    assert main(argv) == 0
    first = [(m, p) for m, p, _ in rec.calls]
    assert first[:4] == [
        ("GET", "/api/datasources/uid/pilotwatch-influxdb"),
        ("POST", "/api/datasources"),
        ("GET", f"/api/folders/{folder_uid(manifest)}"),
        ("POST", "/api/folders"),
    ]
    assert first[4:] == [("POST", "/api/dashboards/db")] * len(build_all(manifest))
    ds = rec.datasources["pilotwatch-influxdb"]
    assert ds["type"] == "influxdb"
    assert ds["url"] == "http://influxdb:8086"
    assert ds["jsonData"] == {"dbName": "pilotwatch", "httpMode": "GET", "httpHeaderName1": "Authorization"}
    assert ds["secureJsonData"] == {"httpHeaderValue1": "Token influx-read-token-123"}
    assert rec.folders[folder_uid(manifest)]["title"] == manifest.programme.name
    for uid, dashboard in build_all(manifest).items():
        sent = rec.dashboards[uid]
        assert sent["folderUid"] == folder_uid(manifest)
        assert sent["overwrite"] is True
        assert sent["dashboard"] == {**dashboard, "id": None}
    assert rec.auth == {f"Bearer {TOKEN}"}

    rec.calls.clear()
    assert main(argv) == 0
    second = [(m, p) for m, p, _ in rec.calls]
    assert ("PUT", "/api/datasources/uid/pilotwatch-influxdb") in second
    assert ("PUT", f"/api/folders/{folder_uid(manifest)}") in second
    assert ("POST", "/api/datasources") not in second
    assert {d["version"] for d in rec.dashboards.values()} == {2}


def test_push_with_a_bad_token_fails_cleanly(grafana: tuple[str, Recorder], capsys: pytest.CaptureFixture[str]) -> None:
    url, rec = grafana
    assert main(["dashboards", "push", "--url", url, "--token", "wrong-token-value"]) == 2
    err = capsys.readouterr().err
    assert f"Grafana at {url} refused the push" in err
    assert rec.dashboards == {}


def test_push_refuses_a_placeholder_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboards", "push", "--url", "http://127.0.0.1:9", "--token", "changeme"]) == 2
    assert "placeholder" in capsys.readouterr().err
